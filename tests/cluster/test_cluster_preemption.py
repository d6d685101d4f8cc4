"""Preemption callback: stop at a step boundary, save atomically, requeue or exit non-zero, resume exactly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from steplog import SendSignal, StepLog, Tiny, read_steps
from torch import nn
from torch.utils.data import Dataset

from bigtrain.callbacks.preemption import EXIT_NOT_REQUEUED, Preemption
from bigtrain.checkpoints.discover import find_resume_checkpoint
from bigtrain.checkpoints.manifest import verify_manifest
from bigtrain.data.base import BigtrainDataModule

HERE = Path(__file__).resolve().parent
MAX_STEPS = 12


def _trainer(root: Path, *callbacks) -> Trainer:
    return Trainer(
        default_root_dir=str(root),
        max_steps=MAX_STEPS,
        accelerator="cpu",
        devices=1,
        callbacks=list(callbacks),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


@pytest.fixture
def no_slurm(monkeypatch):
    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_NTASKS", "SLURM_JOB_NAME"):
        monkeypatch.delenv(name, raising=False)


class Rows(Dataset):
    """Sample i (an `EpochSampler` value) is (x, y, i): each batch says which samples it trained on."""

    def __init__(self) -> None:
        self.x = torch.randn(256, 4, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        row = self.x[int(i) % len(self.x)]
        return row, row.sum(0, keepdim=True), int(i)


class RowsData(BigtrainDataModule):
    """bigtrain's resumable train loader (shuffled, seeded) over `Rows`: 32 batches an epoch."""

    def __init__(self) -> None:
        super().__init__(batch_size=8, num_workers=0, seed=7)

    def train_dataloader(self):  # noqa: D102
        return self.loader(Rows(), train=True)


class Recorded(Tiny):
    """Tiny that appends (sample ids, loss) of every step to `seen`; its weights start the same each time."""

    def __init__(self, seen: list) -> None:
        torch.manual_seed(0)
        super().__init__()
        self.seen = seen

    def training_step(self, batch, batch_idx):  # noqa: D102
        x, y, ids = batch
        loss = nn.functional.mse_loss(self.layer(x), y)
        self.seen.append((ids.tolist(), loss.item()))
        return loss


def test_signal_saves_at_step_boundary_and_resume_trains_each_step_once(tmp_path, no_slurm, capsys):
    uninterrupted: list = []
    _trainer(tmp_path / "whole").fit(Recorded(uninterrupted), datamodule=RowsData())
    assert len(uninterrupted) == MAX_STEPS

    before = signal.getsignal(signal.SIGUSR1)
    trainer = _trainer(tmp_path, SendSignal(at=5), StepLog(), Preemption())
    seen: list = []
    with pytest.raises(SystemExit) as stop:
        trainer.fit(Recorded(seen), datamodule=RowsData())
    assert stop.value.code == EXIT_NOT_REQUEUED  # not under SLURM: nothing requeues it
    assert signal.getsignal(signal.SIGUSR1) == before  # handlers given back
    err = capsys.readouterr().err
    assert "preempted by SIGUSR1 after step 5" in err and "resume with: " in err

    saved = find_resume_checkpoint(tmp_path)
    assert saved is not None and saved.name == "preempt-step=5.ckpt"
    assert not list((tmp_path / "checkpoints").glob(".*"))  # no partial file left behind

    resumed = _trainer(tmp_path, StepLog(), Preemption())
    resumed.fit(Recorded(seen), datamodule=RowsData(), ckpt_path=str(saved))
    assert resumed.global_step == MAX_STEPS
    first, second = read_steps(tmp_path / "steps-rank0.txt")
    assert first == list(range(1, 6))
    assert second == list(range(6, MAX_STEPS + 1))
    # Mid-epoch (step 5 of 32): the resumed loader goes on from batch 6, none trained twice or skipped,
    # and the weights it restored give the uninterrupted run's losses.
    assert [ids for ids, _ in seen] == [ids for ids, _ in uninterrupted]
    assert [loss for _, loss in seen] == [loss for _, loss in uninterrupted]


@pytest.mark.parametrize("has_scontrol", [True, False])
def test_under_slurm_sigterm_requeues_through_scontrol(tmp_path, monkeypatch, capsys, has_scontrol):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol-calls.txt"
    if has_scontrol:
        fake = bin_dir / "scontrol"
        fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
        fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    # What srun sets for a one-task job: Lightning then runs under its SLURMEnvironment.
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "bigtrain-test", "SLURM_NTASKS": "1"}
    slurm |= {"SLURM_NTASKS_PER_NODE": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}
    for name, value in slurm.items():
        monkeypatch.setenv(name, value)

    trainer = _trainer(tmp_path / "run", SendSignal(at=3, signum=signal.SIGTERM), Preemption())
    with pytest.raises(SystemExit) as stop:
        trainer.fit(Tiny())
    err = capsys.readouterr().err
    environment = trainer._accelerator_connector.cluster_environment
    assert type(environment).__name__ == "SLURMEnvironment" and environment.auto_requeue is False
    assert (tmp_path / "run" / "checkpoints" / "preempt-step=3.ckpt").is_file()
    if has_scontrol:
        assert stop.value.code == 0
        assert calls.read_text().split() == ["requeue", "4242"]
        assert "requeued SLURM job 4242" in err
    else:
        assert stop.value.code == EXIT_NOT_REQUEUED
        assert "scontrol not found" in err


def test_signals_handled_outside_slurm(tmp_path, no_slurm):
    """SIGUSR1 saves (as SLURM warns); SIGTERM and Ctrl-C are interrupts (test_interrupt.py)."""
    assert set(Preemption()._signals()) == {signal.SIGUSR1, signal.SIGTERM, signal.SIGINT}


@pytest.mark.distributed
@pytest.mark.slow
def test_ranks_agree_on_the_stop_step(tmp_path):
    """Only rank 1 receives the signal; both ranks stop after the same step and one checkpoint is saved."""
    script = HERE / "preempt_ddp.py"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    for name in ("SLURM_JOB_ID", "SLURM_NTASKS"):
        env.pop(name, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--master-port=29731"]
    result = subprocess.run(
        [*command, str(script), str(tmp_path)], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0, result.stdout + result.stderr  # preempted, not finished
    assert "preempted by SIGUSR1 after step 4" in result.stderr  # rank 0 learns it from rank 1
    steps = [read_steps(tmp_path / f"steps-rank{r}.txt")[0] for r in (0, 1)]
    assert steps[0] == steps[1] and steps[0][-1] == 4, steps
    saved = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert saved == ["preempt-step=4.ckpt", "preempt-step=4.ckpt.manifest.json"]
    assert verify_manifest(tmp_path / "checkpoints" / "preempt-step=4.ckpt") is None
