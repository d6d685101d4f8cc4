"""The strategy setting: names and options, mesh checks, BatchNorm sync, per-sample noise, micro-batches.

Most tests here run in-process in milliseconds; the CLI tests start `bigtrain fit` (the ones that launch
ranks carry the `distributed` marker).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from bigtrain.data.base import BigtrainDataModule, EpochSampler
from bigtrain.errors import UserError
from bigtrain.models.cnn.model import Norm
from bigtrain.strategies import (
    DDP,
    FSDP,
    Single,
    expand_strategy_argv,
    global_randn,
    rank_rows,
    resolve_strategy,
)
from bigtrain.strategies.fsdp import mesh_sizes
from bigtrain.strategies.parallelize import parallelize
from bigtrain.strategies.resolve import device_layout
from bigtrain.strategies.sync_norm import SyncedBatchNorm, sync_batchnorm

CPU = {"accelerator": "cpu", "devices": 1}


NAMES = [("single", Single), ("ddp", DDP), ("fsdp", FSDP), ("FSDP", FSDP), ("bigtrain.strategies.FSDP", FSDP)]


@pytest.mark.parametrize(("value", "cls"), NAMES)
def test_short_names_become_bigtrain_strategies(value, cls):
    strategy = resolve_strategy(value, dict(CPU))
    assert type(strategy) is cls


def test_fsdp_defaults_are_pure_data_parallel_fp32():
    s = FSDP()
    assert (s.data_parallel_size, s.tensor_parallel_size) == (None, 1)
    assert (s.mixed_precision, s.reduce_dtype) == ("fp32", "fp32")
    assert s.timeout_s < 30 * 60 and not s.cpu_offload and s.reshard_after_forward and s.sync_batchnorm
    assert s.mixed_precision_policy().param_dtype is None


def test_fsdp_options_map_to_fsdp2_policies():
    s = FSDP(mixed_precision="bf16", cpu_offload=True)
    s.parallel_devices = [torch.device("cpu")]
    policy = s.mixed_precision_policy()
    assert (policy.param_dtype, policy.reduce_dtype) == (torch.bfloat16, torch.float32)
    norm = s.batchnorm_policy()
    assert (norm.param_dtype, norm.reduce_dtype, norm.cast_forward_inputs) == (
        torch.float32,
        torch.float32,
        False,
    )
    assert FSDP().batchnorm_policy() is None  # fp32 parameters: BatchNorm needs no unit of its own
    assert s.offload_policy().pin_memory is False  # no accelerator: pinning would fail


def test_auto_is_single_on_one_device_and_ddp_without_a_model():
    assert isinstance(resolve_strategy("auto", dict(CPU)), Single)
    config = {"accelerator": "cpu", "devices": "auto"}
    assert isinstance(resolve_strategy("single", config), Single) and config["devices"] == 1
    assert isinstance(resolve_strategy("auto", {"accelerator": "cpu", "devices": 2}), DDP)


def test_auto_asks_the_planner_for_a_bigtrain_model():
    from bigtrain.data import TextDataModule
    from bigtrain.models.transformer import GPTModule

    data = TextDataModule(batch_size=8, block_size=16)
    strategy = resolve_strategy("auto", {"accelerator": "cpu", "devices": 2}, GPTModule(), data)
    assert isinstance(strategy, (DDP, FSDP))  # a tiny GPT fits anywhere: the planner's cheapest layout


BIG_GPT = {"preset": "tiny", "n_layer": 24, "n_embd": 4096, "n_head": 32}
"""4.8B parameters: fp32 weights, gradients and AdamW state (16 bytes each, 77 GB) exceed the 72 GB a layout
may use of the planner's default 80 GB device, so DDP cannot fit and FSDP over 8 ranks must be chosen."""


@pytest.mark.parametrize(
    ("batch", "checkpointing"),
    [(64, False), (128, True)],  # 128 x 1024 tokens per step: FSDP fits only with activation checkpointing
)
def test_auto_takes_fsdp_where_ddp_cannot_fit(batch, checkpointing):
    from bigtrain.data import TextDataModule
    from bigtrain.models.transformer import GPTModule

    with torch.device("meta"):
        model = GPTModule(net=BIG_GPT)
    data = TextDataModule(batch_size=batch, block_size=1024)
    strategy = resolve_strategy("auto", {"accelerator": "cpu", "devices": 8}, model, data)
    assert type(strategy) is FSDP
    assert strategy.tensor_parallel_size == 1  # never tensor parallel (the user's explicit choice)
    assert strategy.activation_checkpointing is checkpointing


def test_auto_takes_ddp_for_a_model_that_fits():
    from bigtrain.data import TextDataModule
    from bigtrain.models.transformer import GPTModule

    strategy = resolve_strategy(
        "auto", {"accelerator": "cpu", "devices": 2}, GPTModule(), TextDataModule(batch_size=8)
    )
    assert type(strategy) is DDP  # the cheapest layout that fits comes first


def test_auto_never_picks_tensor_parallelism():
    """64 ranks for a global batch of 32: the planner's FSDP x TP2 fitted by pairing ranks; auto must not
    choose tensor parallelism (the user's explicit setting), and the batch then cannot split."""
    from bigtrain.data import TextDataModule
    from bigtrain.models.transformer import GPTModule
    from bigtrain.strategies.resolve import auto_strategy

    name, options = auto_strategy(
        {"accelerator": "cpu", "devices": 64}, GPTModule(), TextDataModule(batch_size=32)
    )
    assert options.get("tensor_parallel_size", 1) == 1, (name, options)


def test_lightning_fsdp1_names_are_refused_and_trainer_sync_batchnorm_is_taken_over():
    with pytest.raises(UserError, match="FSDP1"):
        resolve_strategy("fsdp_cpu_offload", dict(CPU))
    from lightning.pytorch.strategies import ModelParallelStrategy

    with pytest.raises(UserError, match="use 'fsdp'"):
        resolve_strategy(ModelParallelStrategy(), dict(CPU))
    config = {**CPU, "sync_batchnorm": True}
    strategy = resolve_strategy(DDP(sync_batchnorm=False), config)
    assert strategy.sync_batchnorm and config["sync_batchnorm"] is False


def test_argv_short_names_are_rewritten_so_options_can_follow():
    argv = ["--trainer.strategy", "fsdp", "--trainer.strategy.mixed_precision", "bf16", "--x", "fsdp"]
    assert expand_strategy_argv(argv)[:2] == ["--trainer.strategy", "bigtrain.strategies.FSDP"]
    assert expand_strategy_argv(argv)[2:] == argv[2:]
    assert expand_strategy_argv(["--trainer.strategy=ddp"]) == ["--trainer.strategy=bigtrain.strategies.DDP"]
    assert expand_strategy_argv(["--trainer.strategy", "auto"]) == ["--trainer.strategy", "auto"]


def test_mesh_sizes_default_to_all_ranks_and_refuse_what_does_not_divide():
    assert mesh_sizes(None, 1, 4) == (4, 1)
    assert mesh_sizes(None, 2, 4) == (2, 2)
    with pytest.raises(UserError, match="data_parallel_size 2 x tensor_parallel_size 1"):
        mesh_sizes(2, 1, 3)
    with pytest.raises(UserError, match="tensor_parallel_size 2 does not divide the 3 ranks"):
        mesh_sizes(None, 2, 3)


def test_bad_option_values_are_user_errors():
    with pytest.raises(UserError, match="mixed_precision"):
        FSDP(mixed_precision="fp8")
    with pytest.raises(UserError, match="timeout_s"):
        DDP(timeout_s=0)
    with pytest.raises(UserError, match="data_parallel_size"):
        FSDP(data_parallel_size=0)


def test_device_layout_counts_like_lightning():
    assert device_layout({"accelerator": "cpu", "devices": 3, "num_nodes": 2}) == (2, 3)
    assert device_layout({"accelerator": "cpu", "devices": "auto"}) == (1, 1)


def test_synced_batchnorm_keeps_the_family_class_and_state_dict():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), Norm(4, zero=True), nn.BatchNorm1d(3))
    keys = list(net.state_dict())
    assert sync_batchnorm(net) == 2
    assert isinstance(net[1], Norm) and isinstance(net[1], SyncedBatchNorm) and net[1].zero
    assert list(net.state_dict()) == keys
    net[1].reset_parameters()  # the family's own initialisation survives (zero scale)
    assert torch.all(net[1].weight == 0)
    x = torch.randn(8, 4, 5, 5)
    plain = nn.BatchNorm2d(4)
    plain.load_state_dict(net[1].state_dict())
    torch.testing.assert_close(net[1](x), plain(x))  # one process: plain BatchNorm


def _synced_grads(rank: int, port: int, out: dict) -> None:
    """One rank's share of a BatchNorm forward/backward over 8 samples, gradients summed over 2 ranks."""
    import os
    import warnings

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    x, w = torch.randn(8, 3, 4, 4), torch.randn(8, 3, 4, 4)
    net = nn.BatchNorm2d(3)
    sync_batchnorm(net)
    mine = slice(4 * rank, 4 * rank + 4)
    xs = x[mine].clone().requires_grad_()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (net(xs) * w[mine]).sum().backward()
    grad = net.weight.grad.clone()
    dist.all_reduce(grad)
    out[rank] = (xs.grad, grad, [str(c.message) for c in caught])
    dist.destroy_process_group()


@pytest.mark.distributed
def test_synced_batchnorm_gradients_match_one_process_without_warnings():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("fork")
    out = ctx.Manager().dict()
    procs = [ctx.Process(target=_synced_grads, args=(r, port, out)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    torch.manual_seed(0)
    x, w = torch.randn(8, 3, 4, 4).requires_grad_(), torch.randn(8, 3, 4, 4)
    ref = nn.BatchNorm2d(3)
    (ref(x) * w).sum().backward()
    for rank in range(2):
        x_grad, weight_grad, warned = out[rank]
        assert warned == []  # no deprecated collective
        torch.testing.assert_close(x_grad, x.grad[4 * rank : 4 * rank + 4])
        torch.testing.assert_close(weight_grad, ref.weight.grad)


def _fake_trainer(world: int, rank: int) -> SimpleNamespace:
    strategy = SimpleNamespace(distributed_sampler_kwargs={"num_replicas": world, "rank": rank})
    return SimpleNamespace(strategy=strategy, world_size=world, global_rank=rank)


def test_ranks_together_load_exactly_the_single_process_batches():
    data = list(range(40))
    one = list(DataLoader(data, batch_size=8, sampler=EpochSampler(data, num_replicas=1, rank=0, seed=3)))
    per_rank = [
        list(DataLoader(data, batch_size=4, sampler=EpochSampler(data, num_replicas=2, rank=r, seed=3)))
        for r in (0, 1)
    ]
    for b, batch in enumerate(one):
        for r in (0, 1):
            assert per_rank[r][b].tolist() == batch[r::2].tolist()  # rank r holds rows r::N


def test_global_noise_gives_each_rank_its_rows_of_the_single_process_draw():
    one = global_randn(8, 3, seed=5, step=7, trainer=None)
    parts = [global_randn(4, 3, seed=5, step=7, trainer=_fake_trainer(2, r)) for r in (0, 1)]
    for r in (0, 1):
        torch.testing.assert_close(parts[r], one[r::2], rtol=0, atol=0)
    assert not torch.equal(one, global_randn(8, 3, seed=5, step=8, trainer=None))
    assert torch.equal(rank_rows(torch.arange(6), _fake_trainer(3, 1)), torch.tensor([1, 4]))


class _Data(BigtrainDataModule):
    pass


def _attached(data: BigtrainDataModule, world: int, automatic: bool = True) -> BigtrainDataModule:
    module = SimpleNamespace(automatic_optimization=automatic)
    trainer = SimpleNamespace(
        strategy=SimpleNamespace(), world_size=world, global_rank=0, lightning_module=module,
        accumulate_grad_batches=1,
    )  # fmt: skip
    data.trainer = trainer
    return data


def test_micro_batches_accumulate_to_the_per_device_batch():
    data = _attached(_Data(batch_size=32, num_workers=0, seed=0, micro_batch_size=4), world=2)
    loader = data.loader(list(range(64)), train=True)
    assert loader.batch_size == 4 and data.trainer.accumulate_grad_batches == 4


def test_micro_batch_that_does_not_divide_is_a_user_error():
    data = _attached(_Data(batch_size=32, num_workers=0, seed=0, micro_batch_size=3), world=2)
    with pytest.raises(UserError, match="micro_batch_size 3 does not divide the per-device batch 16"):
        data.loader(list(range(64)), train=True)
    manual = _attached(_Data(batch_size=32, num_workers=0, seed=0, micro_batch_size=4), 2, automatic=False)
    with pytest.raises(UserError, match="manual"):
        manual.loader(list(range(64)), train=True)


def test_manual_optimization_takes_a_micro_batch_only_when_nothing_accumulates():
    """2 micro-batches a step is already accumulation, which manual optimization cannot do; 1 is not."""
    whole = _attached(_Data(batch_size=32, num_workers=0, seed=0, micro_batch_size=16), 2, automatic=False)
    assert whole.loader(list(range(64)), train=True).batch_size == 16
    halves = _attached(_Data(batch_size=32, num_workers=0, seed=0, micro_batch_size=8), 2, automatic=False)
    with pytest.raises(UserError) as caught:
        halves.loader(list(range(64)), train=True)
    assert str(caught.value) == (
        "data.micro_batch_size needs gradient accumulation, which SimpleNamespace (manual optimization) "
        "cannot do; leave it unset"
    )


def test_parallelize_without_a_trainer_builds_plainly_and_is_idempotent():
    calls = []

    def build() -> nn.Module:
        calls.append(1)
        return nn.Linear(2, 2)

    module = SimpleNamespace(_trainer=None)
    net = parallelize(module, build)
    assert isinstance(net, nn.Linear) and calls == [1]
    assert parallelize(module, net) is net
