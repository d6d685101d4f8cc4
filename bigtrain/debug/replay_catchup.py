"""Catch-up before a replay: when the newest checkpoint at or before step K is at step C < K, steps C+1..K are
trained first, so that step K+1 is replayed on the weights it had in the run.

There is no training loop here: `bigtrain fit` resumes the run's own config.yaml from checkpoint C, in this
one process (strategy single, one device, one node), to `max_steps` K, into a scratch run directory inside the
debug run's. bigtrain's global-batch arithmetic gives the one process the whole global batch of each step,
the samples every rank took together; with `data.micro_batch_size` the one process loads each micro-batch of
every rank together (micro-batch x data-parallel ranks rows), so it accumulates as often as a rank did, its
loader counts batches as a rank's did, and a synced BatchNorm sees the rows it saw in the run. A sharded
checkpoint is first exported to one full checkpoint file (any rank count), which `single` resumes.
"""

from __future__ import annotations

import contextlib
import io
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from bigtrain.debug.replay_state import Ranks, Replay, checkpoint_steps, one_device
from bigtrain.errors import UserError
from bigtrain.lightning_cli import BigtrainCLI

CATCH_UP_DIR = "catch-up"
"""The scratch run directory of the catch-up, inside the debug run's directory."""
CATCH_UP_MAX = 10_000
"""Default most steps a replay trains to catch up (`--catch-up-max`): more takes hours on one device."""
LINES = 10
"""Progress lines a catch-up prints (about; one every tenth of its steps)."""


@dataclass(frozen=True)
class CaughtUp:
    """The step-K checkpoint a catch-up wrote, and what it took."""

    path: Path
    start: int
    stop: int
    seconds: float

    def line(self) -> str:
        """The report's line: `caught up from step C to K (n steps on one device, T s)`."""
        n, took = self.stop - self.start, f"{self.seconds:.1f} s"
        return f"caught up from step {self.start} to {self.stop} ({n} steps on one device, {took})"


class CatchUpProgress(Callback):
    """A line every tenth of the steps and at the last: `catching up: step 12/40 (0.5 s/step, 14 s left)`."""

    def __init__(self, start: int, stop: int) -> None:
        self.start, self.stop = start, stop
        self.every = max(1, (stop - start) // LINES)
        self._began = time.perf_counter()
        self._last = start

    def due(self, step: int) -> bool:
        """Whether optimizer step `step` gets a line: every `every` steps from the start, and the last."""
        return (step - self.start) % self.every == 0 or step >= self.stop

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        self._began = time.perf_counter()  # the time per step leaves out building and loading

    def on_train_batch_end(  # noqa: D102
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        step = trainer.global_step
        if step == self._last or not self.due(step):
            return  # accumulating (no optimizer step yet), or not a line's step
        self._last = step
        per_step = (time.perf_counter() - self._began) / max(step - self.start, 1)
        left = per_step * (self.stop - step)
        print(f"catching up: step {step}/{self.stop} ({per_step:.2f} s/step, {left:.0f} s left)", flush=True)


class CatchUpCLI(BigtrainCLI):
    """`bigtrain fit` of the catch-up, with its progress lines."""

    progress_line: CatchUpProgress

    def prepare_trainer_config(self, config: dict[str, Any]) -> None:
        """bigtrain's callbacks, and the catch-up's progress lines."""
        super().prepare_trainer_config(config)
        config["callbacks"] = [*config["callbacks"], self.progress_line]


def check_limit(start: int, stop: int, limit: int) -> None:
    """UserError when catching up from step `start` to `stop` would train more than `limit` steps."""
    if stop - start > limit:
        raise UserError(
            f"the newest checkpoint at or before step {stop} is at step {start}: catching up would train "
            f"{stop - start} steps on one device, more than --catch-up-max {limit}; give a larger "
            "--catch-up-max, or --no-catch-up to replay on the checkpoint's weights"
        )


def fit_argv(
    config_file: Path, config: dict[str, Any], ranks: Ranks, start: Path, stop: int, scratch: Path
) -> list[str]:
    """The `bigtrain fit` command line that resumes the run from `start` on one device up to step `stop`,
    in the run directory `scratch`."""
    import torch

    from bigtrain.strategies.batch import split_batch

    argv, _ = one_device(config["trainer"], torch.cuda.is_available())
    data = (config.get("data") or {}).get("init_args") or {}
    if data.get("micro_batch_size") and data.get("batch_size"):
        split = split_batch(int(data["batch_size"]), ranks.layout, int(data["micro_batch_size"]))
        argv += ["--data.micro_batch_size", str(split.loader_batch * ranks.layout.size)]
    # No validation (it leaves the training generators and weights alone) and no logs; keep the run's
    # limit_train_batches and accumulation, which decide where an epoch ends and what a step is.
    knobs = {
        "max_steps": stop, "max_epochs": -1, "max_time": "null", "limit_val_batches": 0,
        "num_sanity_val_steps": 0, "val_check_interval": 1.0, "check_val_every_n_epoch": 1,
        "logger": "false", "enable_progress_bar": "false", "enable_model_summary": "false",
    }  # fmt: skip
    argv += [x for k, v in knobs.items() for x in (f"--trainer.{k}", str(v))]
    argv += ["--checkpoint.every_n_steps", str(stop), "--checkpoint.keep_last", "1"]  # step K's alone
    argv += ["--checkpoint.best", "null", "--throughput.enabled", "false"]
    return ["--config", str(config_file), *argv, "--run_dir", str(scratch), "--ckpt_path", str(start)]


def resumable(config_file: Path, path: Path, saved: int, scratch: Path) -> Path:
    """`path` itself when `single` can resume it (a file); a sharded folder exported to one full file."""
    if not path.is_dir():
        return path
    from bigtrain.checkpoints.export import export

    out = scratch / f"start-step={saved}.ckpt"
    with contextlib.redirect_stdout(io.StringIO()):  # its "exported ..." line: the report says it instead
        export(path, out, full=True, config=str(config_file))
    return out


def catch_up(config_file: Path, config: dict[str, Any], plan: Replay, debug_dir: Path) -> None:
    """Train steps `plan.saved_step`+1 .. `plan.step` of the run from `plan.path` on one device, in
    `debug_dir`/catch-up; `plan` then holds the catch-up and the weights of its step-K checkpoint."""
    from bigtrain.checkpoints.load import load_checkpoint
    from bigtrain.lightning_cli import build_cli

    scratch, start, stop = debug_dir / CATCH_UP_DIR, plan.saved_step, plan.step
    scratch.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    source = resumable(config_file, plan.path, start, scratch)
    argv = fit_argv(config_file, config, plan.ranks, source, stop, scratch)
    print(f"catching up: steps {start + 1}..{stop} of the run on one device (--no-catch-up skips this)")
    cls = type("CatchUpCLI", (CatchUpCLI,), {"progress_line": CatchUpProgress(start, stop)})
    with warnings.catch_warnings():
        # The ranks' generators do not fit one process: the README says what that changes.
        warnings.filterwarnings("ignore", message=".*RNG states are from")
        # The run's checkpoint callback is rebuilt here with the catch-up's own policy, on purpose.
        warnings.filterwarnings("ignore", message="Be aware that when using `ckpt_path`")
        cli = build_cli("fit", argv, cls)
    del cli
    found = [p for p, s in checkpoint_steps(scratch).items() if s == stop]
    if not found:
        reached = max(checkpoint_steps(scratch).values(), default=start)
        raise UserError(
            f"the catch-up from step {start} stopped before step {stop} (at step {reached} or earlier; see "
            f"its run directory {str(scratch)!r}); replay an earlier --step, or give --no-catch-up"
        )
    plan.caught_up = CaughtUp(found[0], start, stop, time.perf_counter() - began)
    plan.weights = load_checkpoint(found[0])["state_dict"]
