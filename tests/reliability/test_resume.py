"""Exact mid-epoch resume, in one process: the resumable train loader and the RNG states in checkpoints."""

from __future__ import annotations

import random
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import Dataset

from bigtrain.callbacks.record import RecordSteps, StopAtStep
from bigtrain.callbacks.resume_state import ResumeState, capture_rng, restore_rng
from bigtrain.data.base import (
    BigtrainDataModule,
    EpochSampler,
    ResumableDataLoader,
    sample_generator,
    split_index,
)


class Values(Dataset):
    """Sample i is the `EpochSampler` value itself, so batches show exactly which samples were drawn."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return int(i)


def _loader(n: int, batch: int, workers: int, replicas: int = 1, rank: int = 0) -> ResumableDataLoader:
    sampler = EpochSampler(Values(n), num_replicas=replicas, rank=rank, shuffle=True, seed=3, drop_last=True)
    return ResumableDataLoader(
        Values(n), batch_size=batch, sampler=sampler, drop_last=True, num_workers=workers
    )


def _epoch(loader: ResumableDataLoader, epoch: int, stop: int | None = None) -> list[list[int]]:
    """The batches of one pass (the first `stop` of them), as Lightning runs it: set_epoch, then iterate."""
    loader.sampler.set_epoch(epoch)
    out = []
    for batch in loader:
        out.append(batch.tolist())
        if stop is not None and len(out) == stop:
            break
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_resumes_mid_epoch_without_skipping_or_repeating(workers):
    n, batch = 50, 4  # 12 batches per epoch, 2 samples dropped
    reference = [_epoch(_loader(n, batch, 0), e) for e in (0, 1, 2)]
    assert len(reference[1]) == 12 and reference[1] != reference[0]

    first = _loader(n, batch, workers)
    _epoch(first, 0)
    head = _epoch(first, 1, stop=5)
    state = first.state_dict()
    assert state == {"epoch": 1, "batches": 5}

    resumed = _loader(n, batch, workers)  # a new process: a new loader, the state from the checkpoint
    resumed.load_state_dict(state)
    tail = _epoch(resumed, 1)
    assert head + tail == reference[1]
    assert resumed.state_dict() == {"epoch": 1, "batches": 12}
    assert _epoch(resumed, 2) == reference[2]  # the next epoch is whole again


def test_a_finished_epoch_resumes_at_the_start_of_the_next():
    loader = _loader(50, 4, 0)
    _epoch(loader, 0)
    state = loader.state_dict()
    assert state == {"epoch": 0, "batches": 12}
    resumed = _loader(50, 4, 0)
    resumed.load_state_dict(state)
    # Lightning moves on to epoch 1 for a checkpoint taken at the end of epoch 0: nothing is skipped.
    assert _epoch(resumed, 1) == _epoch(_loader(50, 4, 0), 1)


def test_each_rank_resumes_its_own_share():
    for rank in (0, 1):
        reference = _epoch(_loader(64, 4, 0, replicas=2, rank=rank), 0)
        first = _loader(64, 4, 0, replicas=2, rank=rank)
        head = _epoch(first, 0, stop=3)
        resumed = _loader(64, 4, 0, replicas=2, rank=rank)
        resumed.load_state_dict(first.state_dict())
        assert head + _epoch(resumed, 0) == reference


class _Rows(BigtrainDataModule):
    """The datamodule whose `loader()` builds every bigtrain train loader, over `Values`."""


def _rank_loader(world: int, rank: int) -> ResumableDataLoader:
    """A train loader as `rank` of `world` data-parallel ranks builds it: global batch 8, 64 samples."""
    data = _Rows(batch_size=8, num_workers=0, seed=3)
    data.trainer = SimpleNamespace(
        strategy=SimpleNamespace(root_device=torch.device("cpu")), world_size=world, global_rank=rank
    )
    return data.loader(Values(64), train=True)


def test_resumed_rank_shares_are_disjoint_and_interleave_to_the_single_process_batches():
    """Stopped after 3 of 8 steps and resumed in new processes, the ranks' shares are still one process's
    batches: rank r holds rows r::2 of each, so no sample is trained twice and none is skipped."""
    single = _epoch(_rank_loader(1, 0), 1)
    assert len(single) == 8 and all(len(b) == 8 for b in single)
    shares = []
    for rank in (0, 1):
        first = _rank_loader(2, rank)
        head = _epoch(first, 1, stop=3)
        resumed = _rank_loader(2, rank)
        resumed.load_state_dict(first.state_dict())
        shares.append(head + _epoch(resumed, 1))
    tails = [{i for batch in share[3:] for i in batch} for share in shares]
    assert len(tails[0]) == len(tails[1]) == 20 and not tails[0] & tails[1]
    for step, batch in enumerate(single):
        assert batch[0::2] == shares[0][step] and batch[1::2] == shares[1][step], step


def test_rng_states_round_trip_through_plain_tensors():
    random.gauss(0, 1)  # leaves a cached Gaussian in Python's generator state
    state = capture_rng()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    draws = (torch.rand(3), np.random.rand(3), random.random(), random.gauss(0, 1))
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    restore_rng(state)
    again = (torch.rand(3), np.random.rand(3), random.random(), random.gauss(0, 1))
    assert torch.equal(draws[0], again[0]) and np.array_equal(draws[1], again[1])
    assert draws[2:] == again[2:]


class NoisyData(BigtrainDataModule):
    """Random vectors with seeded per-sample jitter (an 'augmentation'), through bigtrain's loaders."""

    def __init__(self) -> None:
        super().__init__(batch_size=8, num_workers=0, seed=5)
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(60, 6, generator=gen)

    def train_dataloader(self):  # noqa: D102
        return self.loader(Jittered(self.x, self.seed), train=True)

    def val_dataloader(self):  # noqa: D102
        return self.loader(Jittered(self.x[:16], self.seed), train=False)


class Jittered(Dataset):
    def __init__(self, x: torch.Tensor, seed: int) -> None:
        self.x, self.seed = x, seed

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        epoch, index = split_index(int(i), len(self.x))
        return self.x[index] + 0.1 * torch.randn(6, generator=sample_generator(self.seed, epoch, index))


class DropoutNet(LightningModule):
    """Dropout in training and, to test that validation is set aside, a global-RNG draw in validation."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 6))

    def training_step(self, batch, batch_idx):  # noqa: D102
        return nn.functional.mse_loss(self.net(batch), batch.flip(-1))

    def validation_step(self, batch, batch_idx):  # noqa: D102
        self.log("val/loss", nn.functional.mse_loss(self.net(batch + torch.randn_like(batch)), batch))

    def configure_optimizers(self):  # noqa: D102
        return torch.optim.SGD(self.parameters(), lr=0.1)


STEPS = 14  # 7 batches per epoch: two epochs


class ScheduledNet(DropoutNet):
    """Asks for the run's length in `configure_optimizers`, as bigtrain's schedules do: with `max_epochs`
    set, that builds the train loader before a resume has restored the checkpoint."""

    def configure_optimizers(self):  # noqa: D102
        total = self.trainer.estimated_stepping_batches
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        decay = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / (total + 1))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": decay, "interval": "step"}}


def _fit(root, *callbacks, ckpt_path=None, max_steps=STEPS, net=DropoutNet, max_epochs=None) -> RecordSteps:
    torch.manual_seed(0)
    record = RecordSteps(dirpath=str(root))
    trainer = Trainer(
        default_root_dir=str(root),
        max_steps=max_steps,
        max_epochs=max_epochs,
        val_check_interval=3,
        limit_val_batches=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[record, *callbacks],
    )
    if ckpt_path is not None:
        torch.manual_seed(1234)  # a new process: its generators are wherever its own start-up left them
    trainer.fit(net(), datamodule=NoisyData(), ckpt_path=ckpt_path)
    return record


def _stop_and_resume(tmp_path, with_rng: bool) -> tuple[list[float], list[float], bool]:
    def rng() -> list[ResumeState]:
        return [ResumeState()] if with_rng else []

    full = _fit(tmp_path / "full", *rng())
    with pytest.raises(SystemExit):  # stops after step 3, where a validation is due
        _fit(tmp_path / "run", StopAtStep(step=3), *rng())
    ckpt = tmp_path / "run" / "checkpoints" / "stop-step=3.ckpt"
    assert torch.load(ckpt, weights_only=True)["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"epoch": 0, "batches": 3}
    ]
    resumed = _fit(tmp_path / "resumed", *rng(), ckpt_path=str(ckpt))
    assert [s["step"] for s in resumed.steps] == list(range(4, STEPS + 1))
    same_weights = all(
        torch.equal(a, b) for a, b in zip(full_weights(full), full_weights(resumed), strict=True)
    )
    losses = [s["losses"]["loss"] for s in full.steps[3:]]
    return losses, [s["losses"]["loss"] for s in resumed.steps], same_weights


def full_weights(record: RecordSteps) -> list[torch.Tensor]:
    from safetensors.torch import load_file

    return list(load_file(f"{record.dirpath}/weights.safetensors").values())


def test_stopped_and_resumed_run_equals_the_uninterrupted_one(tmp_path):
    full, resumed, same_weights = _stop_and_resume(tmp_path, with_rng=True)
    assert resumed == full and same_weights


def test_without_the_rng_states_dropout_makes_the_resume_inexact(tmp_path):
    full, resumed, same_weights = _stop_and_resume(tmp_path, with_rng=False)
    assert resumed[0] != full[0]  # the first step after the resume already differs
    assert not same_weights


def test_validation_leaves_the_training_rng_where_it_was():
    callback = ResumeState()
    before = torch.get_rng_state()
    callback.on_validation_start(None, None)
    torch.rand(5)
    callback.on_validation_end(None, None)
    assert torch.equal(torch.get_rng_state(), before)


def test_each_rank_restores_its_own_generators():
    from types import SimpleNamespace

    torch.manual_seed(1)
    rank0 = capture_rng()
    torch.manual_seed(2)
    rank1 = capture_rng()
    expected = torch.rand(4)
    saved = {"world_size": 2, "rng": {k: torch.stack([rank0[k], rank1[k]]) for k in rank0}}

    callback = ResumeState()
    callback.load_state_dict(saved)
    torch.manual_seed(3)
    callback.on_train_batch_start(SimpleNamespace(world_size=2, global_rank=1), None, None, 0)
    assert torch.equal(torch.rand(4), expected)

    callback.load_state_dict(saved)  # saved by 2 ranks, resumed on 3: left alone, with a warning
    torch.manual_seed(3)
    said = (
        "the checkpoint's RNG states are from 2 ranks, this run has 3: they are not restored, so the "
        "resumed run is not bit-exact (resume with the same number of ranks for that)"
    )
    with pytest.warns(UserWarning, match=re.escape(said)):
        callback.on_train_batch_start(SimpleNamespace(world_size=3, global_rank=1), None, None, 0)
    untouched = torch.rand(4)
    torch.manual_seed(3)
    assert torch.equal(untouched, torch.rand(4))


@pytest.mark.parametrize("stop", [5, 7], ids=["mid-epoch", "epoch-end"])
def test_continuing_a_run_that_ended_at_max_steps_is_exact(tmp_path, stop):
    """`last.ckpt` of a run stopped by max_steps is saved by the epoch-end hooks, whether the epoch is
    finished (step 7 of 7) or not. Resumed with a larger max_steps, it must continue with the right batch
    (Lightning alone would run one more batch in the finished epoch, then start the next one ahead)."""
    full = _fit(tmp_path / "full", ResumeState())
    short = _fit(
        tmp_path / "short",
        ResumeState(),
        ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True, save_on_train_epoch_end=True),
        max_steps=stop,
    )
    assert len(short.steps) == stop
    longer = _fit(tmp_path / "longer", ResumeState(), ckpt_path=str(tmp_path / "ck" / "last.ckpt"))
    assert longer.steps[0]["step"] == stop + 1
    assert [(s["epoch"], s["batch"]) for s in longer.steps] == [
        (s["epoch"], s["batch"]) for s in full.steps[stop:]
    ]
    assert [s["losses"] for s in longer.steps] == [s["losses"] for s in full.steps[stop:]]
    assert all(torch.equal(a, b) for a, b in zip(full_weights(full), full_weights(longer), strict=True))


def test_resume_is_exact_when_the_train_loader_was_built_before_the_restore(tmp_path):
    """`estimated_stepping_batches` with `max_epochs` set builds the train loader before Lightning restores
    a checkpoint, which then never gives it its position: the resumed epoch would start from batch 0."""
    fit = {"net": ScheduledNet, "max_epochs": 3}
    full = _fit(tmp_path / "full", ResumeState(), **fit)
    with pytest.raises(SystemExit):
        _fit(tmp_path / "run", StopAtStep(step=3), ResumeState(), **fit)
    resumed = _fit(
        tmp_path / "resumed",
        ResumeState(),
        ckpt_path=str(tmp_path / "run" / "checkpoints" / "stop-step=3.ckpt"),
        **fit,
    )
    assert [(s["epoch"], s["batch"]) for s in resumed.steps] == [
        (s["epoch"], s["batch"]) for s in full.steps[3:]
    ]
    assert [s["losses"] for s in resumed.steps] == [s["losses"] for s in full.steps[3:]]
    assert all(torch.equal(a, b) for a, b in zip(full_weights(full), full_weights(resumed), strict=True))
