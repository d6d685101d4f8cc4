"""The one data-parallel arithmetic helper: rank counts, the global-batch split, and its error texts."""

from __future__ import annotations

import re
import subprocess
import sys
from types import SimpleNamespace

import pytest

from bigtrain.errors import UserError
from bigtrain.strategies.batch import (
    BatchSplit,
    DataParallel,
    data_parallel,
    split_batch,
    split_ranks,
    trainer_data_parallel,
)

SUBMIT_CFG = {"trainer": {"strategy": "auto"}, "data": {"init_args": {"batch_size": 64}}}


def _raises(text: str):
    """pytest.raises for a UserError whose whole message is `text`."""
    return pytest.raises(UserError, match=f"^{re.escape(text)}$")


def test_ranks_default_to_all_data_parallel_and_divide_by_tensor_parallel():
    assert split_ranks(8) == DataParallel(8)
    assert split_ranks(16, 4, nodes=2) == DataParallel(4, 4, 2, 8)
    assert split_ranks(16, 4, 4, nodes=2).world == 16


def test_rank_errors_name_the_counts_and_what_would_fit():
    with _raises(
        "trainer.strategy.tensor_parallel_size 4 does not divide the 6 ranks (1 node(s) x 6 device(s)); "
        "use a divisor of 6 such as 3 or 6"
    ):
        split_ranks(6, 4, nodes=1)
    with _raises(
        "trainer.strategy.data_parallel_size 2 x tensor_parallel_size 1 must equal the 3 ranks "
        "(trainer.num_nodes x trainer.devices); leave data_parallel_size unset to use 3"
    ):
        split_ranks(3, 1, 2)
    with _raises("trainer.strategy.tensor_parallel_size must be >= 1, got 0"):
        split_ranks(4, 0)
    with _raises("trainer.strategy.data_parallel_size must be >= 1 or unset, got 0"):
        split_ranks(4, 1, 0)


def test_the_global_batch_splits_into_per_device_and_micro_batches():
    assert split_batch(64, 4) == BatchSplit(64, 16, 16)
    assert split_batch(64, 4, 16) == BatchSplit(64, 16, 16)
    split = split_batch(64, DataParallel(2, 2), 4)
    assert (split.per_device, split.loader_batch, split.accumulation) == (32, 4, 8)


def test_the_smallest_valid_counts_are_accepted():
    assert split_ranks(2, 2, 1) == DataParallel(1, 2)  # data_parallel_size 1: tensor parallel only
    assert split_batch(1, 1) == BatchSplit(1, 1, 1)
    assert split_batch(4, 1, 1) == BatchSplit(4, 4, 1)
    assert split_batch(8, 2, 2) == BatchSplit(8, 4, 2)


def test_a_divisor_hint_can_be_1():
    with _raises(
        "trainer.strategy.tensor_parallel_size 2 does not divide the 3 ranks (trainer.num_nodes x "
        "trainer.devices); use a divisor of 3 such as 1 or 3"
    ):
        split_ranks(3, 2)


def test_batch_errors_say_how_the_data_parallel_count_came_about():
    with _raises(
        "data.batch_size 64 (the global batch) does not divide across 3 data-parallel ranks "
        "(3 node(s) x 1 device(s)); use a multiple of 3 such as 63 or 66, or other counts"
    ):
        split_batch(64, split_ranks(3, nodes=3))
    with _raises(
        "data.batch_size 64 (the global batch) does not divide across 24 data-parallel ranks "
        "(6 node(s) x 8 device(s) = 48 ranks / tensor_parallel_size 2); use a multiple of 24 such as 48 or "
        "72, or other counts"
    ):
        split_batch(64, split_ranks(48, 2, nodes=6))
    with _raises(
        "data.batch_size 2 (the global batch) does not divide across 3 data-parallel ranks; use a multiple "
        "of 3 such as 3, or other counts"
    ):
        split_batch(2, 3)
    with _raises(
        "data.micro_batch_size 3 does not divide the per-device batch 16 (data.batch_size 64 / 4 "
        "data-parallel ranks (1 node(s) x 4 device(s))); use a divisor of 16 such as 2 or 4, or leave it "
        "unset"
    ):
        split_batch(64, split_ranks(4, nodes=1), 3)
    with _raises(
        "data.micro_batch_size 32 does not divide the per-device batch 16 (data.batch_size 64 / 4 "
        "data-parallel ranks); use a divisor of 16 such as 16, or leave it unset"
    ):
        split_batch(64, 4, 32)
    with _raises("data.micro_batch_size must be >= 1 or null, got 0"):
        split_batch(64, 4, 0)
    with _raises("data.batch_size must be >= 1, got 0"):
        split_batch(0, 4)


class _Mesh:
    """A device mesh's data_parallel dimension of `size`, at `rank`."""

    mesh_dim_names = ("data_parallel", "tensor_parallel")

    def __init__(self, size: int, rank: int) -> None:
        self.dim = SimpleNamespace(size=lambda: size, get_local_rank=lambda: rank, get_group=lambda: "g")

    def __getitem__(self, name: str):
        return {"data_parallel": self.dim}[name]  # a real mesh knows only its own dimension names


class _MeshStrategyBeforeSetup:
    """Lightning's ModelParallelStrategy before setup: no mesh yet, and its sampler settings raise."""

    _device_mesh = None

    @property
    def distributed_sampler_kwargs(self):
        raise RuntimeError("Accessing the device mesh before processes have initialized is not allowed.")


def _trainer(strategy, world=4, rank=3, nodes=None, devices=None):
    return SimpleNamespace(
        strategy=strategy, world_size=world, global_rank=rank, num_nodes=nodes, num_devices=devices
    )


def test_dp_size_and_rank_from_the_mesh_then_the_sampler_then_the_world():
    from bigtrain.strategies.mesh import data_parallel_group

    assert data_parallel(None) == (1, 0)
    meshed = _trainer(SimpleNamespace(_device_mesh=_Mesh(2, 1)))
    assert data_parallel(meshed) == (2, 1) and data_parallel_group(meshed) == "g"
    sampler = SimpleNamespace(distributed_sampler_kwargs={"num_replicas": 4, "rank": 2})
    assert data_parallel(_trainer(sampler)) == (4, 2)
    assert data_parallel(_trainer(SimpleNamespace())) == (4, 3)
    assert data_parallel(_trainer(_MeshStrategyBeforeSetup())) == (4, 3)
    assert data_parallel_group(_trainer(SimpleNamespace())) is None


def test_a_trainer_describes_its_data_parallel_ranks_when_it_can():
    assert trainer_data_parallel(_trainer(None, nodes=2, devices=4), 4) == DataParallel(4, 2, 2, 4)
    assert trainer_data_parallel(_trainer(None), 4) == DataParallel(4)
    assert trainer_data_parallel(None, 1) == DataParallel(1)
    # Half known (a stand-in trainer without device counts): nothing to describe, and no arithmetic on None.
    assert trainer_data_parallel(_trainer(None, nodes=2), 4) == DataParallel(4)
    described = trainer_data_parallel(_trainer(None, nodes=2, devices=4), 2)
    assert str(described) == (
        "2 data-parallel ranks (2 node(s) x 4 device(s) = 8 ranks / tensor_parallel_size 4)"
    )
    assert str(DataParallel(4, nodes=2)) == "4 data-parallel ranks"


def test_every_call_site_says_the_same_thing():
    """Submit, the CLI before launch, the DataModule on a rank and the planner share one text."""
    from bigtrain.cluster.layout import Layout, check_divisible
    from bigtrain.data.base import BigtrainDataModule
    from bigtrain.lightning_cli import _check_global_batch

    messages = []
    with pytest.raises(UserError) as err:
        check_divisible(SUBMIT_CFG, Layout(nodes=1, devices_per_node=3, accelerator="cpu"))
    messages.append(str(err.value))
    data = BigtrainDataModule(batch_size=64, num_workers=0, seed=0)
    trainer = SimpleNamespace(strategy=SimpleNamespace(), num_nodes=1, num_devices=3, world_size=3)
    with pytest.raises(UserError) as err:
        _check_global_batch(trainer, data)
    messages.append(str(err.value))
    data.trainer = SimpleNamespace(**vars(trainer), global_rank=0)
    with pytest.raises(UserError) as err:
        _ = data.per_device_batch_size
    messages.append(str(err.value))
    assert messages[0] == messages[1] == messages[2]
    assert messages[0].startswith("data.batch_size 64 (the global batch) does not divide across 3 data")


def test_the_stricter_copy_wins():
    """Submit refused data_parallel_size 0 only in the job (FSDP did); the CLI checked no micro-batch before
    launch (the DataModule did, on every rank); the planner let a micro-batch that does not divide fit."""
    from bigtrain.cluster.layout import Layout, check_divisible
    from bigtrain.data.base import BigtrainDataModule
    from bigtrain.lightning_cli import _check_global_batch
    from bigtrain.plan.memory import ParallelLayout, _per_device_batch

    four = Layout(nodes=1, devices_per_node=4, accelerator="cpu")
    for option in ("data_parallel_size", "tensor_parallel_size"):
        cfg = {**SUBMIT_CFG, "trainer": {"strategy": {"class_path": "FSDP", "init_args": {option: 0}}}}
        with pytest.raises(UserError, match=f"trainer.strategy.{option} must be >= 1"):
            check_divisible(cfg, four)
    data = BigtrainDataModule(batch_size=64, num_workers=0, seed=0, micro_batch_size=3)
    trainer = SimpleNamespace(strategy=SimpleNamespace(), num_nodes=1, num_devices=4)
    with pytest.raises(UserError, match="micro_batch_size 3 does not divide the per-device batch 16"):
        _check_global_batch(trainer, data)
    facts = SimpleNamespace(global_batch=64, micro_batch=3)
    batch, note = _per_device_batch(facts, ParallelLayout("ddp", "ddp", 4, 4))
    assert batch == 3 and note.startswith("data.micro_batch_size 3 does not divide the per-device batch 16")
    divides = SimpleNamespace(global_batch=64, micro_batch=4)
    assert _per_device_batch(divides, ParallelLayout("ddp", "ddp", 4, 4)) == (4, "")


def test_the_helper_and_the_cluster_code_import_without_torch_or_lightning():
    code = (
        "import sys, bigtrain.strategies.batch, bigtrain.cluster.layout, bigtrain.cluster.environment; "
        "print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_public_strategy_name_is_still_there():
    import bigtrain.strategies as strategies

    for name in strategies.__all__:
        assert getattr(strategies, name) is not None
    assert strategies.data_parallel is data_parallel
    with pytest.raises(AttributeError):
        _ = strategies.no_such_name
