"""The sharding plan (`parallelize`) in one process: bigtrain's strategies over torch's fake process group.

The fake backend answers every collective at once without moving data, so one process can stand for rank 0
of a world of any size: the units, placements, local shard shapes and dtypes it sets up are those rank 0
of a real run gets (the values that collectives would fill are not checked here; the multi-process tests
in tests/distributed do that). Everything runs in-process, so mutation testing can trace it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch
import torch.distributed as dist
from lightning.pytorch import LightningModule, Trainer
from torch import nn
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor, Shard
from torch.testing._internal.distributed.fake_pg import FakeStore

import bigtrain.strategies.parallelize as plan
from bigtrain.errors import UserError
from bigtrain.models.config import resolve
from bigtrain.models.gan import GAN, GANConfig
from bigtrain.models.gan import PRESETS as GAN_PRESETS
from bigtrain.models.transformer import GPT, GPTConfig
from bigtrain.models.transformer import PRESETS as GPT_PRESETS
from bigtrain.strategies.ddp import DDP, Single
from bigtrain.strategies.fsdp import FSDP
from bigtrain.strategies.parallelize import parallelize
from bigtrain.strategies.sync_norm import SyncedBatchNorm

Attach = Callable[..., LightningModule]


@pytest.fixture
def attach() -> Iterator[Attach]:
    """attach(strategy, world): a module on a Trainer whose strategy is set up as rank 0 of `world`."""

    def make(strategy: object, world: int) -> LightningModule:
        dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=world)
        trainer = Trainer(
            strategy=strategy, accelerator="cpu", devices=world, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False,
        )  # fmt: skip
        module = LightningModule()
        module.trainer = trainer
        if isinstance(strategy, FSDP):
            strategy.connect(module)
            strategy.setup_environment()  # the device mesh, over the fake group initialised above
        return module

    yield make
    if dist.is_initialized():
        dist.destroy_process_group()


def gpt() -> GPT:
    """The tiny GPT: 2 blocks, 2 heads, width 64, 11 tokens, 16 positions."""
    return GPT(resolve(GPTConfig(preset="tiny", block_size=16, vocab_size=11), GPT_PRESETS))


def gan() -> GAN:
    """The tiny DCGAN on 16x16 one-channel images: generator and discriminator with blocks of their own."""
    return GAN(resolve(GANConfig(image_size=16, channels=1), GAN_PRESETS))


class Stack(nn.Module):
    """A network with blocks but no `init_weights()`: two Linear + BatchNorm blocks."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        pairs = (nn.Sequential(nn.Linear(width, width), nn.BatchNorm1d(width)) for _ in "ab")
        self.layers = nn.ModuleList(pairs)

    def blocks(self) -> list[nn.Module]:
        """Each Linear + BatchNorm pair."""
        return list(self.layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, width) -> (B, width)."""
        for layer in self.layers:
            x = layer(x)
        return x


def units(net: nn.Module) -> set[str]:
    """Names of the modules that became FSDP units ('' is the root)."""
    return {name for name, m in net.named_modules() if isinstance(m, FSDPModule)}


def local_shapes(net: nn.Module) -> dict[str, tuple[int, ...]]:
    """Each parameter's shape on this rank."""
    params = net.named_parameters()
    return {n: tuple(p.to_local().shape if isinstance(p, DTensor) else p.shape) for n, p in params}


def is_compiled(module: nn.Module) -> bool:
    """Whether `module.compile()` compiled this module in place (torch has no public way to ask)."""
    return getattr(module, "_compiled_call_impl", None) is not None


def recording(factory: Callable[[], nn.Module], devices: list[str]) -> Callable[[], nn.Module]:
    """The factory, noting the default device of each call (meta when built for sharded initialisation)."""

    def build() -> nn.Module:
        devices.append(torch.empty(()).device.type)
        return factory()

    return build


def test_fsdp_shards_each_block_and_the_root_over_the_data_parallel_ranks(attach):
    net = parallelize(attach(FSDP(), 4), gpt)
    assert units(net) == {"", "h.0", "h.1"}  # no unit for the embeddings or the ModuleList
    shapes = local_shapes(net)
    assert shapes["wte.weight"] == (3, 64) and shapes["wpe.weight"] == (4, 64)  # ceil(11 / 4), 16 / 4
    assert shapes["h.1.mlp.fc.weight"] == (64, 64) and shapes["h.0.ln_1.weight"] == (16,)
    assert all(isinstance(p, DTensor) and p.placements == (Shard(0),) for p in net.parameters())


def test_tensor_parallel_splits_every_block_and_fsdp_shards_over_data_parallel_only(attach):
    net = parallelize(attach(FSDP(data_parallel_size=2, tensor_parallel_size=2), 4), gpt)
    assert units(net) == {"", "h.0", "h.1"}
    shapes = local_shapes(net)
    for i in range(2):  # column-parallel layers split their outputs, row-parallel ones their inputs
        for name in ("attn.q", "attn.k", "attn.v"):
            assert shapes[f"h.{i}.{name}.weight"] == (16, 64)  # 64 rows / tp 2 / dp 2
            assert net.get_parameter(f"h.{i}.{name}.weight").device_mesh.mesh_dim_names == (
                "data_parallel", "tensor_parallel",
            )  # fmt: skip
        assert shapes[f"h.{i}.mlp.fc.weight"] == (64, 64) and shapes[f"h.{i}.mlp.proj.weight"] == (32, 128)
        assert shapes[f"h.{i}.attn.proj.weight"] == (32, 32) and shapes[f"h.{i}.ln_1.weight"] == (32,)
    assert shapes["wte.weight"] == (6, 64)  # replicated across tensor parallel, split over dp 2 only
    assert net.get_parameter("wte.weight").device_mesh.mesh_dim_names == ("data_parallel",)


def test_tensor_parallel_alone_still_wraps_the_network(attach):
    net = parallelize(attach(FSDP(data_parallel_size=1, tensor_parallel_size=2), 2), gpt)
    assert units(net) == {"", "h.0", "h.1"}
    assert local_shapes(net)["h.0.attn.q.weight"] == (32, 64) and local_shapes(net)["wte.weight"] == (11, 64)


def test_sub_networks_with_blocks_of_their_own_become_units(attach):
    net = parallelize(attach(FSDP(), 2), gan)
    blocks = {"generator.project", "generator.stages.0", "generator.to_image", "discriminator.stages.0",
              "discriminator.stages.1", "discriminator.head"}  # fmt: skip
    assert units(net) == {"", "generator", "discriminator", *blocks}


def resnet() -> nn.Module:
    """The tiny ResNet on one-channel images (BatchNorm in its stem, blocks and shortcuts)."""
    from bigtrain.models.cnn import PRESETS, ResNet, ResNetConfig

    return ResNet(resolve(ResNetConfig(in_channels=1, num_classes=10), PRESETS))


def norms(net: nn.Module) -> dict[str, nn.Module]:
    """The BatchNorm layers by name."""
    return {n: m for n, m in net.named_modules() if isinstance(m, nn.BatchNorm2d)}


def dtypes_in_forward(module: nn.Module) -> dict[str, torch.dtype]:
    """Filled by the module's next forward: the dtype of each of its parameters while it computes."""
    seen: dict[str, torch.dtype] = {}
    module.register_forward_pre_hook(lambda m, _: seen.update({n: p.dtype for n, p in m.named_parameters()}))
    return seen


def test_cast_parameters_leave_each_batchnorm_its_own_fp32_unit(attach):
    module = attach(FSDP(mixed_precision="bf16", reshard_after_forward=False), 2)
    net = parallelize(module, resnet)
    found = norms(net)
    blocks = {f"stages.{s}.0" for s in range(3)}
    assert len(found) == 9 and units(net) == {"", *blocks, *found}
    block = net.get_submodule("stages.1.0")
    seen = dtypes_in_forward(block)
    net(torch.randn(4, 1, 16, 16))
    assert seen["conv1.weight"] == torch.bfloat16 and seen["bn1.weight"] == torch.float32
    # The BatchNorm units take the strategy's other options too: these stay gathered after forward.
    assert not isinstance(block.bn1.weight, DTensor) and tuple(block.bn1.weight.shape) == (32,)


def test_fp32_parameters_put_batchnorm_in_its_block(attach):
    net = parallelize(attach(FSDP(), 2), resnet)
    assert units(net) == {"", "stages.0.0", "stages.1.0", "stages.2.0"}
    seen = dtypes_in_forward(net.get_submodule("stages.1.0"))
    net(torch.randn(4, 1, 16, 16))
    assert set(seen.values()) == {torch.float32} and len(seen) == 9  # with its shortcut conv + BatchNorm


def test_batchnorm_syncs_over_the_data_parallel_group(attach):
    module = attach(FSDP(), 2)
    net = parallelize(module, resnet)
    group = module.trainer.strategy.device_mesh["data_parallel"].get_group()
    assert group is not None
    assert all(isinstance(m, SyncedBatchNorm) and m.sync_group is group for m in norms(net).values())


@pytest.mark.parametrize("sync", [True, False])
def test_ddp_syncs_batchnorm_only_when_asked(attach, sync):
    net = parallelize(attach(DDP(sync_batchnorm=sync), 2), resnet)
    assert all(isinstance(m, SyncedBatchNorm) == sync for m in norms(net).values())
    assert units(net) == set() and not any(isinstance(p, DTensor) for p in net.parameters())


@pytest.mark.parametrize("strategy", [FSDP, DDP], ids=["fsdp", "ddp"])
def test_one_data_parallel_rank_shards_and_syncs_nothing(attach, strategy):
    net = parallelize(attach(strategy(), 1), resnet)
    assert units(net) == set() and not any(isinstance(p, DTensor) for p in net.parameters())
    assert not any(isinstance(m, SyncedBatchNorm) for m in norms(net).values())


def test_a_family_without_a_tensor_parallel_plan_is_refused_in_one_line(attach):
    with pytest.raises(UserError) as refused:
        parallelize(attach(FSDP(data_parallel_size=1, tensor_parallel_size=2), 2), resnet)
    assert str(refused.value) == (
        "trainer.strategy.tensor_parallel_size 2: ResNet has no tensor-parallel plan (only the transformer "
        "family has one); use tensor_parallel_size 1"
    )


def test_a_network_without_blocks_is_refused(attach):
    with pytest.raises(TypeError) as refused:
        parallelize(attach(FSDP(), 2), lambda: nn.Sequential(nn.Linear(2, 2)))
    assert str(refused.value) == "Sequential has no blocks(): the family's sharding plan is missing"


def test_a_second_call_returns_the_prepared_network_unchanged(attach):
    module = attach(FSDP(), 2)
    net = parallelize(module, gpt)
    before = {n: p for n, p in net.named_parameters()}
    assert parallelize(module, net) is net
    assert {n: p for n, p in net.named_parameters()} == before and units(net) == {"", "h.0", "h.1"}


def test_without_a_trainer_the_given_strategy_applies():
    # parallelize(module, net, strategy) on a module that no Trainer holds: that strategy's plan, and
    # one data-parallel rank (no trainer says otherwise), so BatchNorm stays local.
    strategy = DDP(compile=True)
    net = parallelize(LightningModule(), resnet, strategy)
    assert all(is_compiled(b) for b in net.blocks())
    assert not any(isinstance(m, SyncedBatchNorm) for m in norms(net).values())


def test_the_given_strategy_wins_over_the_trainers(attach):
    module = attach(DDP(), 2)
    net = parallelize(module, gpt, Single(compile=True))
    assert all(is_compiled(b) for b in net.blocks())


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


def test_a_strategy_of_lightning_s_own_gets_the_plain_network(attach):
    from lightning.pytorch.strategies import DDPStrategy

    net = parallelize(attach(DDPStrategy(), 2), resnet)  # no bigtrain options: Lightning's flags decide
    assert not any(isinstance(m, SyncedBatchNorm) or is_compiled(m) for m in net.modules())
    assert units(net) == set()


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
