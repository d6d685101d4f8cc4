"""The sharding plan's options in one process (rank 0 of a fake world, see test_parallelize_inprocess.py):
compile, activation checkpointing, resharding, mixed precision, and where and how a network is initialised."""

from __future__ import annotations

import importlib
from collections.abc import Iterator

import pytest
import torch
from plan_helpers import Attach, Stack, dtypes_in_forward, fake_world, gan, gpt, is_compiled, recording
from torch import nn
from torch.distributed.tensor import DTensor

from bigtrain.strategies.ddp import DDP, Single
from bigtrain.strategies.fsdp import FSDP
from bigtrain.strategies.parallelize import parallelize

# The module, not the function the package exports under the same name.
plan = importlib.import_module("bigtrain.strategies.parallelize")


@pytest.fixture
def attach() -> Iterator[Attach]:
    """attach(strategy, world): a module attached as rank 0 of a fake world of `world` ranks."""
    yield from fake_world()


@pytest.mark.parametrize("strategy", [FSDP, DDP, Single], ids=["fsdp", "ddp", "single"])
def test_compile_compiles_each_block_in_place(attach, strategy):
    keys = set(gpt().state_dict())
    net = parallelize(attach(strategy(compile=True), 2 if strategy is not Single else 1), gpt)
    assert all(is_compiled(b) for b in net.blocks()) and not is_compiled(net)
    assert set(net.state_dict()) == keys  # checkpoints keep their names


def test_no_compile_unless_asked(attach):
    net = parallelize(attach(DDP(), 2), gpt)
    assert not any(is_compiled(m) for m in net.modules())


def test_activation_checkpointing_recomputes_each_block_and_keeps_the_keys(attach):
    torch.manual_seed(0)
    plain = gan()
    torch.manual_seed(0)
    net = parallelize(attach(FSDP(activation_checkpointing=True), 1), gan)
    assert set(net.state_dict()) == set(plain.state_dict())
    # A checkpointed block's own hooks run once; the layers inside it run again when backward recomputes.
    inner = [m for b in net.generator.blocks() for m in b.modules() if m is not b]
    calls: list[str] = []
    for layer in inner:
        layer.register_forward_hook(lambda m, *_: calls.append(type(m).__name__))
    z = torch.randn(4, net.cfg.latent_dim)  # needs no gradient: the first block's weights still get theirs
    image = net(z)
    torch.testing.assert_close(image, plain(z), rtol=0, atol=0)
    image.sum().backward()
    assert len(inner) == 4 and len(calls) == 2 * len(inner)  # forward, then again in backward
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.generator.parameters())


def test_without_activation_checkpointing_blocks_run_once(attach):
    net = parallelize(attach(FSDP(), 1), gan)
    inner = [m for b in net.generator.blocks() for m in b.modules() if m is not b]
    calls: list[str] = []
    for layer in inner:
        layer.register_forward_hook(lambda m, *_: calls.append(type(m).__name__))
    net(torch.randn(4, net.cfg.latent_dim)).sum().backward()
    assert len(calls) == len(inner) == 4


@pytest.mark.parametrize("reshard", [True, False])
def test_reshard_after_forward_decides_what_a_block_keeps_gathered(attach, reshard):
    net = parallelize(attach(FSDP(reshard_after_forward=reshard, mixed_precision="bf16"), 2), gpt)
    block = net.get_submodule("h.0")
    seen = dtypes_in_forward(block.attn.q)
    net(torch.randint(0, 11, (2, 16)))
    assert seen == {"weight": torch.bfloat16}
    weight = block.attn.q.weight
    if reshard:
        assert isinstance(weight, DTensor) and tuple(weight.to_local().shape) == (32, 64)
    else:
        assert not isinstance(weight, DTensor) and tuple(weight.shape) == (64, 64)


def test_fp32_computes_in_fp32(attach):
    net = parallelize(attach(FSDP(), 2), gpt)
    seen = dtypes_in_forward(net.get_submodule("h.1.attn.q"))
    net(torch.randint(0, 11, (2, 16)))
    assert seen == {"weight": torch.float32}


def test_meta_init_builds_on_meta_and_each_rank_initialises_its_own_shards(attach):
    built: list[str] = []
    net = parallelize(attach(FSDP(meta_init=True), 2), recording(gan, built))
    assert built == ["meta"]
    assert not any(t.is_meta for t in (*net.parameters(), *net.buffers()))
    local = {n: p.to_local() for n, p in net.named_parameters()}
    # The family's own initialisation (DCGAN's): conv weights ~ N(0, 0.02), BatchNorm scales ~ N(1, 0.02).
    conv = local["generator.project.conv.weight"]
    assert conv.numel() == 2048 and 0.015 < conv.std().item() < 0.025 and abs(conv.mean().item()) < 0.005
    scale = local["generator.project.norm.weight"]
    assert (scale - 1).abs().max() < 0.1 and scale.std() > 0  # drawn, not reset to 1
    assert torch.equal(local["generator.project.norm.bias"], torch.zeros(8))
    norm = net.get_submodule("generator.project.norm")
    assert torch.equal(norm.running_var, torch.ones(16)) and torch.equal(norm.running_mean, torch.zeros(16))


def test_a_network_without_init_weights_resets_each_layer_after_meta_init(attach):
    built: list[str] = []
    net = parallelize(attach(FSDP(meta_init=True), 2), recording(Stack, built))
    assert built == ["meta"]
    for block in net.blocks():
        linear, norm = block[0].weight.to_local(), block[1]
        assert linear.abs().max() <= 8**-0.5 and linear.abs().min() > 0  # nn.Linear's uniform bound
        assert torch.equal(norm.weight.to_local(), torch.ones(4))  # reset_parameters(): 1, not drawn
        assert torch.equal(norm.running_var, torch.ones(8))


def test_small_networks_are_initialised_in_full_as_one_process_would(attach):
    torch.manual_seed(0)
    reference = dict(gpt().named_parameters())
    torch.manual_seed(0)
    built: list[str] = []
    net = parallelize(attach(FSDP(), 4), recording(gpt, built))  # meta_init: null
    assert built == ["meta", "cpu"]  # measured on meta, then built for real
    for name, p in net.named_parameters():
        shard = p.to_local()
        torch.testing.assert_close(shard, reference[name][: shard.shape[0]], rtol=0, atol=0)


class Wide(nn.Module):
    """One block: a bias-free Linear from `n` inputs to one output (`n` parameters)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.fc = nn.Linear(n, 1, bias=False)

    def blocks(self) -> list[nn.Module]:
        """The one Linear."""
        return [self.fc]


@pytest.mark.parametrize(("n", "expected"), [(1024, ["meta"]), (1023, ["meta", "cpu"])])
def test_meta_init_null_shards_initialisation_from_the_byte_threshold_on(attach, monkeypatch, n, expected):
    monkeypatch.setattr(plan, "META_INIT_MIN_BYTES", 4096)  # 1024 fp32 parameters, instead of 1 GiB
    built: list[str] = []
    parallelize(attach(FSDP(), 2), recording(lambda: Wide(n), built))
    assert built == expected


@pytest.mark.parametrize(
    ("meta_init", "world", "layout"), [(False, 2, (2, 1)), (True, 1, (1, 1)), (True, 2, (1, 2))]
)
def test_meta_init_only_where_more_than_one_rank_shares_the_network(attach, meta_init, world, layout):
    built: list[str] = []
    strategy = FSDP(data_parallel_size=layout[0], tensor_parallel_size=layout[1], meta_init=meta_init)
    parallelize(attach(strategy, world), recording(gpt, built))
    assert built == (["meta"] if layout != (1, 1) and meta_init else ["cpu"])


def test_cpu_offload_materialises_the_shards_in_cpu_memory(attach):
    net = parallelize(attach(FSDP(cpu_offload=True, meta_init=True), 2), gan)
    conv = net.get_parameter("generator.project.conv.weight").to_local()
    assert conv.device.type == "cpu" and 0.015 < conv.std().item() < 0.025


def test_a_checkpointed_block_takes_its_input_by_keyword_too(attach):
    torch.manual_seed(0)
    plain = gpt().h[0]
    torch.manual_seed(0)
    net = parallelize(attach(FSDP(activation_checkpointing=True), 1), gpt)
    x = torch.randn(2, 16, 64)
    torch.testing.assert_close(net.h[0](x=x), plain(x), rtol=0, atol=0)


class Constant(Stack):
    """A network whose own `init_weights()` sets every parameter to 0.5 (not what reset_parameters does)."""

    @torch.no_grad()
    def init_weights(self) -> None:
        """Every parameter 0.5."""
        for p in self.parameters():
            p.fill_(0.5)


def test_meta_init_uses_the_network_s_own_init_weights(attach):
    net = parallelize(attach(FSDP(meta_init=True), 2), Constant)
    assert all(torch.equal(p.to_local(), torch.full_like(p.to_local(), 0.5)) for p in net.parameters())
