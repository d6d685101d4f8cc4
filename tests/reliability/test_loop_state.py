"""Resumable loaders, sampler values, DataModule loader settings and the fit loop's epoch-end state."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from bigtrain.callbacks.resume_state import ResumeState
from bigtrain.data.base import (
    EpochSampler,
    ResumableDataLoader,
    sample_generator,
    split_index,
)
from bigtrain.errors import UserError
from tests.reliability.test_resume import Values, _Rows


def test_sampler_values_carry_the_epoch_and_every_index_once():
    sampler = EpochSampler(Values(10), num_replicas=1, rank=0, shuffle=True, seed=3)
    sampler.set_epoch(2)
    pairs = [split_index(v, 10) for v in sampler]
    assert {epoch for epoch, _ in pairs} == {2} and sorted(i for _, i in pairs) == list(range(10))


def test_train_and_validation_loaders_as_the_datamodule_builds_them():
    """Train: resumable, seeded shuffle, last partial batch dropped; validation: plain, in order, whole."""
    data = _Rows(batch_size=8, num_workers=0, seed=3)
    data.trainer = SimpleNamespace(
        strategy=SimpleNamespace(root_device=torch.device("cpu")), world_size=1, global_rank=0
    )
    train, val = data.loader(Values(20), train=True), data.loader(Values(20), train=False)
    assert type(train) is ResumableDataLoader and type(val) is torch.utils.data.DataLoader
    assert train.state_dict() == {"epoch": 0, "batches": 0}  # before any pass
    assert (train.sampler.shuffle, train.sampler.drop_last, train.drop_last) == (True, True, True)
    assert (val.sampler.shuffle, val.sampler.drop_last, val.drop_last) == (False, False, False)
    assert train.sampler.seed == 3 and not train.persistent_workers
    assert [b.tolist() for b in val] == [list(range(8)), list(range(8, 16)), list(range(16, 20))]
    workers = _Rows(batch_size=8, num_workers=1, seed=3)
    workers.trainer = data.trainer
    assert workers.loader(Values(20), train=True).persistent_workers


def test_datamodule_settings_are_checked_in_one_line():
    for kwargs, message in [
        ({"batch_size": 0}, "data.batch_size must be >= 1, got 0"),
        ({"num_workers": -1}, "data.num_workers must be >= 0, got -1"),
        ({"micro_batch_size": 0}, "data.micro_batch_size must be >= 1 or null, got 0"),
    ]:
        with pytest.raises(UserError) as caught:
            _Rows(**{"batch_size": 8, "num_workers": 0, "seed": 0, **kwargs})
        assert str(caught.value) == message
    smallest = _Rows(batch_size=1, num_workers=0, seed=0, micro_batch_size=1)
    assert (smallest.batch_size, smallest.micro_batch_size) == (1, 1)


def test_data_sizes_sets_the_data_up_for_fit():
    stages = []

    class Sized(_Rows):
        def setup(self, stage: str) -> None:  # noqa: D102
            stages.append(stage)

    assert Sized(batch_size=8, num_workers=0, seed=0).data_sizes() == {} and stages == ["fit"]


def test_a_resumable_loader_over_a_plain_sampler_counts_from_epoch_0():
    loader = ResumableDataLoader(Values(4), batch_size=2)
    assert [b.tolist() for b in loader] == [[0, 1], [2, 3]]
    assert loader.state_dict() == {"epoch": 0, "batches": 2}


def test_sample_generators_differ_for_every_sample_even_for_large_seeds():
    for seed in (0, 2**62):
        draws = {
            float(torch.rand(1, generator=sample_generator(seed, e, i))) for e in range(3) for i in range(300)
        }
        assert len(draws) == 900, seed


def _loop_state(started: int, processed: int, completed: int, last_batch: bool) -> dict:
    def progress() -> dict:
        return {"started": started, "processed": processed, "completed": completed}

    counts = {"ready": 4, "started": 4, "processed": 4, "completed": 4}
    return {
        "loops": {
            "fit_loop": {
                "epoch_progress": {"total": progress(), "current": progress()},
                "epoch_loop.batch_progress": {"current": dict(counts), "is_last_batch": last_batch},
                "epoch_loop.scheduler_progress": {"current": {"ready": 4, "completed": 4}},
                "epoch_loop.automatic_optimization.optim_progress": {
                    "optimizer": {"step": {"current": {"ready": 4, "completed": 4}}}
                },
            }
        }
    }


def test_settle_epoch_end_counts_a_finished_epoch_and_reopens_a_cut_one():
    """What `settle_epoch_end` does to a checkpoint saved by epoch-end hooks, case by case."""
    from bigtrain.callbacks.resume_state import settle_epoch_end

    finished = _loop_state(2, 2, 1, last_batch=True)
    settle_epoch_end(finished)
    fit = finished["loops"]["fit_loop"]
    for part in ("total", "current"):
        assert fit["epoch_progress"][part] == {"started": 2, "processed": 2, "completed": 2}
    assert fit["epoch_loop.batch_progress"] == {
        "current": dict.fromkeys(("ready", "started", "processed", "completed"), 0),
        "is_last_batch": False,
    }
    assert fit["epoch_loop.scheduler_progress"]["current"] == {"ready": 0, "completed": 0}
    optim = fit["epoch_loop.automatic_optimization.optim_progress"]["optimizer"]["step"]["current"]
    assert optim == {"ready": 0, "completed": 0}

    cut = _loop_state(2, 2, 1, last_batch=False)
    settle_epoch_end(cut)
    for part in ("total", "current"):
        assert cut["loops"]["fit_loop"]["epoch_progress"][part] == {
            "started": 2,
            "processed": 1,
            "completed": 1,
        }
    assert cut["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["completed"] == 4

    for untouched in (_loop_state(2, 1, 1, last_batch=True), _loop_state(2, 2, 2, last_batch=True), {}):
        before = repr(untouched)
        settle_epoch_end(untouched)
        assert repr(untouched) == before


def test_settle_epoch_end_takes_a_loop_state_with_only_the_epoch_counts():
    """Counters a checkpoint lacks are left alone; a missing `is_last_batch` counts as the last batch."""
    from bigtrain.callbacks.resume_state import settle_epoch_end

    progress = {"started": 2, "processed": 2, "completed": 1}
    optim = {"optimizer": {"step": {}}}  # an optimizer progress without its `current` counters
    fit = {
        "epoch_progress": {"total": dict(progress), "current": dict(progress)},
        "epoch_loop.automatic_optimization.optim_progress": optim,
    }
    settle_epoch_end({"loops": {"fit_loop": fit}})
    assert fit["epoch_progress"]["total"] == {"started": 2, "processed": 2, "completed": 2}
    assert optim == {"optimizer": {"step": {}}} and "epoch_loop.batch_progress" not in fit


def test_resume_state_before_setup_saves_nothing():
    assert ResumeState().state_dict() == {}


OPTIM = "epoch_loop.automatic_optimization.optim_progress"


@pytest.mark.parametrize(
    "missing",
    [
        (OPTIM,),
        (OPTIM, "optimizer"),
        ("epoch_loop.scheduler_progress",),
        ("epoch_loop.batch_progress", "current"),
    ],
    ids=lambda path: "/".join(path),
)
def test_settle_epoch_end_settles_a_finished_epoch_whatever_counters_are_missing(missing):
    """A loop state without one of the per-epoch counters (another Lightning version's layout) is settled
    like a full one: the epoch counted as completed, every counter it does have back at zero."""
    from bigtrain.callbacks.resume_state import settle_epoch_end

    checkpoint = _loop_state(2, 2, 1, last_batch=True)
    fit = checkpoint["loops"]["fit_loop"]
    parent = fit
    for key in missing[:-1]:
        parent = parent[key]
    del parent[missing[-1]]
    settle_epoch_end(checkpoint)
    for part in ("total", "current"):
        assert fit["epoch_progress"][part] == {"started": 2, "processed": 2, "completed": 2}
    assert fit["epoch_loop.batch_progress"]["is_last_batch"] is False
    counters = [
        fit.get("epoch_loop.batch_progress", {}).get("current", {}),
        fit.get("epoch_loop.scheduler_progress", {}).get("current", {}),
        fit.get(OPTIM, {}).get("optimizer", {}).get("step", {}).get("current", {}),
    ]
    assert all(value == 0 for counts in counters for value in counts.values())


def _rows_on(device: str, num_workers: int = 0) -> _Rows:
    data = _Rows(batch_size=8, num_workers=num_workers, seed=3)
    data.trainer = SimpleNamespace(
        strategy=SimpleNamespace(root_device=torch.device(device)), world_size=1, global_rank=0
    )
    return data


def test_loaders_pin_memory_for_a_cuda_device_only_and_prefetch_with_workers():
    """Batches are page-locked only when the trainer's device is a GPU (on a CPU pinning only costs), and
    each worker keeps PREFETCH_BATCHES batches in flight (torch's default is 2)."""
    from bigtrain.data.base import PREFETCH_BATCHES

    for train in (True, False):
        assert _rows_on("cuda").loader(Values(20), train=train).pin_memory is True
        assert _rows_on("cpu").loader(Values(20), train=train).pin_memory is False
        with_workers = _rows_on("cpu", num_workers=1).loader(Values(20), train=train)
        assert with_workers.prefetch_factor == PREFETCH_BATCHES
    assert PREFETCH_BATCHES != 2
    no_trainer = _Rows(batch_size=8, num_workers=0, seed=3)
    assert no_trainer.loader(Values(20), train=False).pin_memory is False
