"""Preemption and interrupts: on a signal, stop at a step boundary, checkpoint, requeue (SLURM), exit.

Ctrl-C (SIGINT) and SIGTERM outside SLURM are interrupts: the run stops at the next step boundary on every
rank, saves, writes `metrics.json` and prints the command that resumes it; a second Ctrl-C aborts at once
(only the partial write of the save in progress is lost, never an older checkpoint).

SLURM warns a job before its time limit (`#SBATCH --signal=USR1@90`) and before a preemption (SIGTERM,
then SIGKILL after `KillWait`). The handler only records the signal: saving inside a signal handler can
interrupt a collective or an optimizer step half-way. At the end of the next optimizer step every rank
votes (any rank that saw the signal stops all of them, so they stop at the same step), the checkpoint is
written atomically with its manifest, global rank 0 runs `scontrol requeue`, and every
rank exits. The requeued job starts again with `--ckpt_path auto` and resumes from that checkpoint.

What a step costs: with one process, nothing but reading the flag the handler set (no tensor, no device
sync). With several, the vote is one all-reduce of one number per optimizer step: a signal can reach one
rank only, and every rank must stop at the step it arrived, so the ranks have to talk at every step
boundary; voting less often would let ranks run on past the signal.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch import Callback, LightningModule, Trainer

from bigtrain.callbacks.checkpoints import checkpoint_folder
from bigtrain.checkpoints.save import remove_checkpoint, save_atomically
from bigtrain.lightning_compat import connector_cluster_environment

# EX_TEMPFAIL: "temporary failure, the user is invited to retry" -- the run is saved, not finished.
EXIT_NOT_REQUEUED = 75
PREFIX = "preempt-step="
INTERRUPTS = (signal.SIGINT,)
"""Signals that mean "the user stops this run" (SIGTERM too, outside SLURM): save, say how to resume, exit."""


def slurm_job_id() -> str | None:
    """The id `scontrol requeue` takes for this job (array jobs: `<array id>_<task id>`), or None."""
    array_id = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_id:
        return f"{array_id}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def requeue(job_id: str | None) -> tuple[bool, str]:
    """Ask SLURM to requeue `job_id`; (whether it worked, what happened in a few words)."""
    if job_id is None:
        return False, "not a SLURM job, nothing to requeue"
    scontrol = shutil.which("scontrol")
    if scontrol is None:
        return False, f"scontrol not found (inside a container?), cannot requeue SLURM job {job_id}"
    try:
        result = subprocess.run(
            [scontrol, "requeue", job_id], capture_output=True, text=True, timeout=60, check=False
        )
    except subprocess.TimeoutExpired:
        return False, f"scontrol requeue {job_id} timed out"
    if result.returncode != 0:
        reason = (result.stderr or result.stdout).strip().splitlines()
        return False, f"scontrol requeue {job_id} failed: {reason[-1] if reason else result.returncode}"
    return True, f"requeued SLURM job {job_id}"


class Preemption(Callback):
    """On SIGUSR1 or SIGTERM under SLURM: checkpoint at the next step boundary, requeue, exit; on Ctrl-C or
    SIGTERM elsewhere: checkpoint at the next step boundary, say how to resume, exit."""

    def __init__(self, dirpath: str | None = None, requeue_signals: tuple[str, ...] = ("SIGUSR1",)) -> None:
        """`dirpath`: where to save (default: the ModelCheckpoint folder, else `<root>/checkpoints`).

        `requeue_signals`: signal names that trigger the save and a requeue; SIGTERM (a preemption under
        SLURM, which sends it before killing a preempted or cancelled job; an interrupt elsewhere) and
        Ctrl-C (an interrupt) are always handled too.
        """
        super().__init__()
        self.dirpath = dirpath
        self.requeue_signals = tuple(requeue_signals)
        self.received: int | None = None
        self._previous: dict[int, Any] = {}
        self._last_step = -1

    # Signals ---------------------------------------------------------------------------------------------

    def _signals(self) -> list[signal.Signals]:
        names = [*self.requeue_signals, "SIGTERM", *(s.name for s in INTERRUPTS)]
        return [signal.Signals[name] for name in dict.fromkeys(names)]

    def _record(self, signum: int, _frame: Any) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now, without waiting for the step to end
        # Only a flag: the save happens at the next step boundary, outside the handler.
        self.received = signum

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Switch off Lightning's own SLURM requeue, which saves inside its signal handler."""
        # Runs before Lightning installs its handlers, so this holds even where the Trainer was built
        # without bigtrain.cluster.environment_plugins().
        environment = getattr(trainer.strategy, "cluster_environment", None)
        if environment is None:  # single-device strategies keep it only in the accelerator connector
            environment = connector_cluster_environment(trainer)
        if isinstance(environment, SLURMEnvironment):
            environment.auto_requeue = False
        # Noted here, before Lightning installs its own: it puts the originals back before `teardown` runs,
        # so handlers noted at train start would be Lightning's, and teardown would leave its SIGTERM
        # handler (which ignores the signal) in place after training.
        self._previous = {signum: signal.getsignal(signum) for signum in self._signals()}

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Install the handlers (after Lightning installed its own, so these replace them)."""
        self.received = None
        self._last_step = trainer.global_step
        for signum in self._signals():
            signal.signal(signum, self._record)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Give the signals back to whoever had them before training."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    # Stop, save, requeue ---------------------------------------------------------------------------------

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """After each optimizer step, stop every rank if any rank received a signal."""
        if trainer.global_step == self._last_step:
            return  # still accumulating gradients: not a step boundary
        self._last_step = trainer.global_step
        signum = self._agree(trainer)
        if signum:
            self._preempt(trainer, signal.Signals(signum).name)

    def _agree(self, trainer: Trainer) -> int:
        """The signal some rank received (the same number on every rank), or 0."""
        if trainer.world_size == 1:
            return self.received or 0  # a Python flag set by the handler: no tensor, no device sync
        # Several ranks must stop at the same step, and a signal may reach only one of them (the test in
        # tests/cluster stops both ranks at the step rank 1 was signalled): one all-reduce per step, whose
        # max also tells every rank which signal was received.
        local = torch.tensor(float(self.received or 0), device=trainer.strategy.root_device)
        return int(trainer.strategy.reduce(local, reduce_op="max").item())

    def save(self, trainer: Trainer) -> Path:
        """Save a checkpoint of the current step atomically (every rank calls this); returns its path."""
        folder = Path(self.dirpath) if self.dirpath is not None else checkpoint_folder(trainer)
        final = save_atomically(trainer, folder / f"{PREFIX}{trainer.global_step}.ckpt")
        if trainer.is_global_zero:
            for older in folder.glob(f"{PREFIX}*.ckpt"):
                if older != final:
                    remove_checkpoint(older)
        return final

    def _preempt(self, trainer: Trainer, received: str) -> None:
        for logger in trainer.loggers:
            logger.save()
        path = self.save(trainer)
        write_metrics(trainer)
        interrupted = _is_interrupt(signal.Signals[received])
        job = None if interrupted else slurm_job_id()
        requeued, what = requeue(job) if trainer.is_global_zero and job else (False, "")
        requeued = trainer.strategy.broadcast(requeued, src=0)
        if trainer.is_global_zero:
            how = "interrupted" if interrupted else "preempted"
            line = f"{how} by {received} after step {trainer.global_step}: saved {path}"
            if requeued:
                line += f"; {what}"
            else:
                line += f"{'; ' + what if what else ''}; resume with: {resume_command(trainer)}"
            print(line, file=sys.stderr, flush=True)
        # Leaving through SystemExit lets Lightning tear down (process group, loggers) on the way out.
        if interrupted:
            raise SystemExit(128 + signal.Signals[received])
        raise SystemExit(0 if requeued else EXIT_NOT_REQUEUED)


def _is_interrupt(signum: signal.Signals) -> bool:
    """Ctrl-C, or SIGTERM where no SLURM job sent it (a user's `kill`, a container stopping)."""
    return signum in INTERRUPTS or (signum == signal.SIGTERM and slurm_job_id() is None)


def resume_command(trainer: Trainer) -> str:
    """The command that continues this run from its newest checkpoint."""
    run = Path(trainer.default_root_dir)
    config = run / "config.yaml"
    if config.is_file():
        return f"bigtrain fit --config {shlex.quote(str(config))} --ckpt_path auto"
    return f"the same command with --ckpt_path auto and --run_dir {shlex.quote(str(run))}"


def write_metrics(trainer: Trainer) -> None:
    """Write `metrics.json` now, as at the end of a run (the run directory callback, if there is one)."""
    # By its method, not its class: run_dir.py builds this callback, so importing it here would be a cycle.
    for callback in trainer.callbacks:
        if callable(getattr(callback, "write_metrics", None)):
            callback.write_metrics(trainer)
