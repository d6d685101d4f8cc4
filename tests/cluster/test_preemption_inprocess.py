"""Preemption in one process: the job id, `scontrol requeue`'s outcomes, the exact line and exit status of
each way a run stops, the step it stops at, where it saves, the handlers it gives back, and the vote over a
world of two ranks (torch's fake process group). No SLURM needed; mutation testing can trace all of it."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from lightning.pytorch import Callback, Trainer
from steplog import SendSignal, Tiny
from torch import nn
from torch.testing._internal.distributed.fake_pg import FakeStore

import bigtrain.callbacks.preemption as preemption
from bigtrain.callbacks.preemption import EXIT_NOT_REQUEUED, Preemption, requeue, slurm_job_id
from bigtrain.callbacks.run_dir import RunDirectory
from bigtrain.checkpoints.manifest import verify_manifest
from bigtrain.strategies.fsdp import FSDP
from bigtrain.strategies.parallelize import parallelize

HANDLED = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)
SLURM_NAMES = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_NTASKS", "SLURM_JOB_NAME")


@pytest.fixture
def no_slurm(monkeypatch):
    for name in SLURM_NAMES:
        monkeypatch.delenv(name, raising=False)


def scontrol(tmp_path: Path, monkeypatch, script: str | None) -> Path:
    """PATH holds only a `scontrol` running `script` (none: no scontrol); returns the file it logs to."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    calls = tmp_path / "scontrol-calls.txt"
    if script is not None:
        fake = bin_dir / "scontrol"
        fake.write_text(f'#!/bin/sh\necho "$@" >> {shlex.quote(str(calls))}\n{script}\n')
        fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    return calls


def under_slurm(monkeypatch, job: str = "4242") -> None:
    """What srun sets for a one-task job: Lightning then runs under its SLURMEnvironment."""
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    slurm = {"SLURM_JOB_ID": job, "SLURM_JOB_NAME": "bigtrain-test", "SLURM_NTASKS": "1"}
    slurm |= {"SLURM_NTASKS_PER_NODE": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}
    for name, value in slurm.items():
        monkeypatch.setenv(name, value)


def trainer(root: Path, *callbacks: Callback, **options) -> Trainer:
    """A quiet CPU Trainer of Tiny for 8 steps (options override)."""
    settings = dict(max_steps=8, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    return Trainer(default_root_dir=str(root), callbacks=list(callbacks), **{**settings, **options})


def stop(fit: Trainer, capsys, module: nn.Module | None = None, **kwargs) -> tuple[object, str]:
    """Fit until the callback stops the run: (exit status, the last line on stderr)."""
    handlers = {s: signal.getsignal(s) for s in HANDLED}
    try:
        with pytest.raises(SystemExit) as stopped:
            fit.fit(module or Tiny(), **kwargs)
    finally:  # the process would end here: no teardown gives the handlers back, so the test does
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    return stopped.value.code, capsys.readouterr().err.strip().splitlines()[-1]


def test_the_job_id_names_an_array_task_by_its_array_and_task(monkeypatch, no_slurm):
    assert slurm_job_id() is None
    monkeypatch.setenv("SLURM_JOB_ID", "80")
    assert slurm_job_id() == "80"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert slurm_job_id() == "77_3"  # what `scontrol requeue` needs for one task of an array


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("exit 0", (True, "requeued SLURM job 12")),
        (
            'echo "one" >&2; echo "Invalid job id" >&2; exit 1',
            (False, "scontrol requeue 12 failed: Invalid job id"),
        ),
        ('echo "on stdout only"; exit 1', (False, "scontrol requeue 12 failed: on stdout only")),
        ("exit 3", (False, "scontrol requeue 12 failed: 3")),
        (None, (False, "scontrol not found (inside a container?), cannot requeue SLURM job 12")),
    ],
    ids=["ok", "stderr", "stdout", "silent", "missing"],
)
def test_requeue_says_what_happened(tmp_path, monkeypatch, script, expected):
    calls = scontrol(tmp_path, monkeypatch, script)
    assert requeue("12") == expected
    assert (calls.read_text() == "requeue 12\n") if script else not calls.exists()


def test_requeue_of_no_job_runs_nothing(tmp_path, monkeypatch):
    calls = scontrol(tmp_path, monkeypatch, "exit 0")
    assert requeue(None) == (False, "not a SLURM job, nothing to requeue")
    assert not calls.exists()


def test_a_hung_scontrol_is_given_up_on(tmp_path, monkeypatch):
    scontrol(tmp_path, monkeypatch, f"exec {shutil.which('sleep')} 30")
    limits = []
    run = subprocess.run

    def sooner(*args, **kwargs):  # the real call, with the limit it was given shortened for the test
        limits.append(kwargs["timeout"])
        return run(*args, **{**kwargs, "timeout": 0.3})

    monkeypatch.setattr(preemption.subprocess, "run", sooner)
    assert requeue("12") == (False, "scontrol requeue 12 timed out")
    assert len(limits) == 1 and 0 < limits[0] <= 90  # before SLURM's warning time runs out


def resume_hint(root: Path) -> str:
    """What the line says to run next when nothing requeued the run and it has no config.yaml."""
    return f"the same command with --ckpt_path auto and --run_dir {shlex.quote(str(root))}"


@pytest.mark.parametrize("config", [False, True], ids=["no-config", "config"])
def test_ctrl_c_saves_writes_metrics_and_says_how_to_resume(tmp_path, capsys, no_slurm, config):
    root = tmp_path / "run dir"  # a space: the printed command must quote it
    root.mkdir()
    if config:
        (root / "config.yaml").write_text("{}\n")
    fit = trainer(root, SendSignal(at=3, signum=signal.SIGINT), RunDirectory(root, "fit"), Preemption())
    code, line = stop(fit, capsys)
    assert code == 128 + signal.SIGINT
    saved = root / "checkpoints" / "preempt-step=3.ckpt"
    hint = f"bigtrain fit --config {shlex.quote(str(root / 'config.yaml'))} --ckpt_path auto"
    assert line == f"interrupted by SIGINT after step 3: saved {saved}; resume with: " + (
        hint if config else resume_hint(root)
    )
    assert verify_manifest(saved) is None
    assert json.loads((root / "metrics.json").read_text())["global_step"] == 3


@pytest.mark.parametrize(
    ("script", "code", "after"),
    [
        ("exit 0", 0, "; requeued SLURM job 4242"),
        (
            None,
            EXIT_NOT_REQUEUED,
            "; scontrol not found (inside a container?), cannot requeue SLURM job 4242",
        ),
    ],
    ids=["requeued", "no-scontrol"],
)
def test_under_slurm_the_warning_signal_saves_and_requeues(
    tmp_path, monkeypatch, capsys, script, code, after
):
    calls = scontrol(tmp_path, monkeypatch, script)
    under_slurm(monkeypatch)
    root = tmp_path / "run"
    got, line = stop(trainer(root, SendSignal(at=3), Preemption()), capsys)
    saved = root / "checkpoints" / "preempt-step=3.ckpt"
    if script is None:
        after += f"; resume with: {resume_hint(root)}"
    else:
        assert calls.read_text() == "requeue 4242\n"
    assert (got, line) == (code, f"preempted by SIGUSR1 after step 3: saved {saved}{after}")


def test_outside_slurm_the_warning_signal_saves_and_exits_75(tmp_path, monkeypatch, capsys, no_slurm):
    calls = scontrol(tmp_path, monkeypatch, "exit 0")
    code, line = stop(trainer(tmp_path, SendSignal(at=2), Preemption()), capsys)
    saved = tmp_path / "checkpoints" / "preempt-step=2.ckpt"
    expected = f"preempted by SIGUSR1 after step 2: saved {saved}; resume with: {resume_hint(tmp_path)}"
    assert (code, line) == (EXIT_NOT_REQUEUED, expected)
    assert not calls.exists()


def test_under_slurm_ctrl_c_is_an_interrupt_and_requeues_nothing(tmp_path, monkeypatch, capsys):
    calls = scontrol(tmp_path, monkeypatch, "exit 0")
    under_slurm(monkeypatch)
    code, line = stop(trainer(tmp_path, SendSignal(at=2, signum=signal.SIGINT), Preemption()), capsys)
    assert code == 128 + signal.SIGINT and line.startswith("interrupted by SIGINT after step 2: saved ")
    assert not calls.exists()


class SignalAtBatch(Callback):
    """Sends `signum` to this process at the end of batch `at` (a micro-batch, under accumulation)."""

    def __init__(self, at: int, signum: int = signal.SIGUSR1) -> None:
        self.at, self.signum = at, signum

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: D102
        if batch_idx == self.at:
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize(("batch", "step"), [(0, 1), (2, 2), (3, 2)])
def test_a_signal_between_micro_batches_stops_after_its_optimizer_step(
    tmp_path, capsys, no_slurm, batch, step
):
    fit = trainer(tmp_path, SignalAtBatch(batch), Preemption(), accumulate_grad_batches=2)
    code, line = stop(fit, capsys)
    assert code == EXIT_NOT_REQUEUED and line.startswith(f"preempted by SIGUSR1 after step {step}: ")
    assert (tmp_path / "checkpoints" / f"preempt-step={step}.ckpt").is_file()


def test_a_chosen_folder_keeps_only_the_newest_preemption_checkpoint(tmp_path, capsys, no_slurm):
    folder = tmp_path / "elsewhere"
    stop(trainer(tmp_path, SendSignal(at=2), Preemption(dirpath=str(folder))), capsys)
    first = folder / "preempt-step=2.ckpt"
    assert first.is_file() and not (tmp_path / "checkpoints").exists()
    resumed = trainer(tmp_path, SendSignal(at=5), Preemption(dirpath=str(folder)))
    stop(resumed, capsys, ckpt_path=str(first))
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["preempt-step=5.ckpt", "preempt-step=5.ckpt.manifest.json"]


def test_handlers_are_given_back_after_each_fit_and_installed_again_for_the_next(tmp_path, no_slurm):
    def mine(signum, frame):  # a handler the program had before training
        raise AssertionError("not expected to run")

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    previous = signal.signal(signal.SIGUSR1, mine)
    try:
        callback = Preemption()
        for attempt in range(2):  # the same callback in two fits, as a script that trains twice does
            seen = Seen()
            trainer(tmp_path / str(attempt), seen, callback, max_steps=2).fit(Tiny())
            assert seen.handlers == dict.fromkeys(HANDLED, callback._record)
            assert signal.getsignal(signal.SIGUSR1) is mine
            assert {s: signal.getsignal(s) for s in before} == before
    finally:
        signal.signal(signal.SIGUSR1, previous)


class Seen(Callback):
    """Notes the handlers of the three signals while training runs."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: D102
        self.handlers = {s: signal.getsignal(s) for s in HANDLED}


class Layer(nn.Module):
    """Tiny's linear layer as a network with one block, for bigtrain's sharding plan."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 1)

    def blocks(self) -> list[nn.Module]:
        """The one Linear."""
        return [self.layer]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 4) -> (B, 1)."""
        return self.layer(x)


class Sharded(Tiny):
    """Tiny with its layer built and sharded in configure_model, as the families do under FSDP."""

    def configure_model(self) -> None:  # noqa: D102
        self.layer = parallelize(self, Layer)


@pytest.fixture
def two_ranks(monkeypatch, no_slurm):
    """This process as rank 0 of 2 (torch's fake process group: collectives return at once, unchanged),
    started as torchrun starts each rank, so Lightning launches nothing more."""
    ranks = {"RANK": "0", "GROUP_RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "2"}
    for name, value in {**ranks, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(name, value)
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=2)
    yield
    dist.destroy_process_group()


def sharded_trainer(root: Path, *callbacks: Callback) -> Trainer:
    """FSDP over 2 ranks, saving one full checkpoint (a sharded one would need the other rank's shards)."""
    return trainer(root, *callbacks, strategy=FSDP(save_distributed_checkpoint=False), devices=2)


def test_two_ranks_vote_at_each_step_and_stop_on_a_signal(tmp_path, capsys, two_ranks):
    fit = sharded_trainer(tmp_path, SendSignal(at=3), Preemption())
    assert fit.world_size == 2
    code, line = stop(fit, capsys, Sharded())
    saved = tmp_path / "checkpoints" / "preempt-step=3.ckpt"
    expected = f"preempted by SIGUSR1 after step 3: saved {saved}; resume with: {resume_hint(tmp_path)}"
    assert (code, line) == (EXIT_NOT_REQUEUED, expected)
    assert saved.is_file() and verify_manifest(saved) is None


def test_two_ranks_without_a_signal_train_to_the_end(tmp_path, two_ranks):
    fit = sharded_trainer(tmp_path, Preemption())
    fit.fit(Sharded())
    assert fit.global_step == 8 and not (tmp_path / "checkpoints").exists()


def test_only_a_ctrl_c_after_another_signal_aborts_at_once():
    callback = Preemption()
    try:  # an escaping KeyboardInterrupt would end the test session instead of failing this test
        for signum in (signal.SIGUSR1, signal.SIGUSR1, signal.SIGTERM):
            callback._record(signum, None)
    except KeyboardInterrupt:
        pytest.fail("a signal other than a second Ctrl-C aborted at once")
    assert callback.received == signal.SIGTERM
    with pytest.raises(KeyboardInterrupt):
        callback._record(signal.SIGINT, None)
