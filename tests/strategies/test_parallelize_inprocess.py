"""Which modules the sharding plan (`parallelize`) shards, and how, in one process over a fake world.

The fake backend answers every collective at once without moving data, so one process can stand for rank 0
of a world of any size: the units, placements, local shard shapes and dtypes it sets up are those rank 0
of a real run gets (the values that collectives would fill are not checked here; the multi-process tests
in tests/distributed do that). Everything runs in-process, so mutation testing can trace it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from lightning.pytorch import LightningModule
from plan_helpers import (
    Attach,
    dtypes_in_forward,
    fake_world,
    gan,
    gpt,
    is_compiled,
    local_shapes,
    norms,
    resnet,
    units,
)
from torch import nn
from torch.distributed.tensor import DTensor, Shard

from bigtrain.errors import UserError
from bigtrain.strategies.ddp import DDP, Single
from bigtrain.strategies.fsdp import FSDP
from bigtrain.strategies.parallelize import parallelize
from bigtrain.strategies.sync_norm import SyncedBatchNorm


@pytest.fixture
def attach() -> Iterator[Attach]:
    """attach(strategy, world): a module attached as rank 0 of a fake world of `world` ranks."""
    yield from fake_world()


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


def test_a_strategy_of_lightning_s_own_gets_the_plain_network(attach):
    from lightning.pytorch.strategies import DDPStrategy

    net = parallelize(attach(DDPStrategy(), 2), resnet)  # no bigtrain options: Lightning's flags decide
    assert not any(isinstance(m, SyncedBatchNorm) or is_compiled(m) for m in net.modules())
    assert units(net) == set()
