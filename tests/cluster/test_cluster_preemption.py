"""Preemption callback: stop at a step boundary, save atomically, requeue or exit non-zero, resume exactly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from lightning.pytorch import Trainer
from steplog import SendSignal, StepLog, Tiny, read_steps

from bigtrain.callbacks.preemption import EXIT_NOT_REQUEUED, Preemption
from bigtrain.checkpoints.discover import find_resume_checkpoint
from bigtrain.checkpoints.manifest import verify_manifest

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


def test_signal_saves_at_step_boundary_and_resume_trains_each_step_once(tmp_path, no_slurm, capsys):
    before = signal.getsignal(signal.SIGUSR1)
    trainer = _trainer(tmp_path, SendSignal(at=5), StepLog(), Preemption())
    with pytest.raises(SystemExit) as stop:
        trainer.fit(Tiny())
    assert stop.value.code == EXIT_NOT_REQUEUED  # not under SLURM: nothing requeues it
    assert signal.getsignal(signal.SIGUSR1) == before  # handlers given back
    err = capsys.readouterr().err
    assert "preempted by SIGUSR1 after step 5" in err and "resume with: " in err

    saved = find_resume_checkpoint(tmp_path)
    assert saved is not None and saved.name == "preempt-step=5.ckpt"
    assert not list((tmp_path / "checkpoints").glob(".*"))  # no partial file left behind

    resumed = _trainer(tmp_path, StepLog(), Preemption())
    resumed.fit(Tiny(), ckpt_path=str(saved))
    assert resumed.global_step == MAX_STEPS
    first, second = read_steps(tmp_path / "steps-rank0.txt")
    assert first == list(range(1, 6))
    assert second == list(range(6, MAX_STEPS + 1))


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
