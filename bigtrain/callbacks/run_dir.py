"""The run directory: where a run says it is, and the final metrics it leaves behind."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from bigtrain.errors import UserError
from bigtrain.files import write_json_atomic
from bigtrain.models.train_metrics import current_metrics


class RunDirectory(Callback):
    """Prints the run directory at start and end and writes `metrics.json` (flat {name: number})."""

    def __init__(self, run_dir: Path, stage: str | None) -> None:
        self.run_dir = Path(run_dir)
        self.stage = stage

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:  # noqa: D102
        if trainer.is_global_zero:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            read_metrics(self.run_dir / "metrics.json")  # a reused directory's file, vetted before any work
            print(f"run directory: {self.run_dir}", flush=True)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        from bigtrain.run_names import keep_run_dirs

        keep_run_dirs()  # from here on the directory holds the run's work, whatever ends it

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        self.write_metrics(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        if self.stage == "validate":
            self.write_metrics(trainer)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        self.write_metrics(trainer)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:  # noqa: D102
        if trainer.is_global_zero:
            made = ", ".join(self.contents())
            print(f"run directory: {self.run_dir}" + (f" ({made})" if made else ""), flush=True)

    def contents(self) -> list[str]:
        """Which of the run's files exist (fast_dev_run writes no config.yaml or checkpoint)."""
        names = ("metrics.json", "config.yaml", "checkpoints/")
        present = [n for n in names if (self.run_dir / n).is_file()]
        folder = self.run_dir / "checkpoints"
        return present + (["checkpoints/"] if folder.is_dir() and any(folder.iterdir()) else [])

    def write_metrics(self, trainer: Trainer) -> None:
        """Merge the trainer's scalar metrics, step and epoch into `metrics.json` (global rank 0)."""
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        path = self.run_dir / "metrics.json"
        metrics = read_metrics(path)
        metrics.update(scalar_metrics(current_metrics(trainer)))
        metrics["global_step"] = trainer.global_step
        metrics["epoch"] = trainer.current_epoch
        write_json_atomic(path, metrics)


def read_metrics(path: Path) -> dict[str, Any]:
    """The flat JSON object in `path` (empty when there is none); UserError if it is something else."""
    if not path.exists():
        return {}
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        metrics = err
    if not isinstance(metrics, dict):
        raise UserError(
            f"{path} is not a JSON object of metrics ({type(metrics).__name__}); move it away or choose "
            f"another --run_dir"
        )
    return metrics


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Plain floats of the finite scalar metrics (JSON has no NaN or infinity)."""
    out = {}
    for name, value in metrics.items():
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                continue
            value = value.item()
        if isinstance(value, (int, float)) and math.isfinite(value):
            out[name] = float(value)
    return out


def default_callbacks(
    run_dir: Path,
    trainer_config: dict[str, Any],
    *,
    fitting: bool,
    policy: Any = None,
    module: Any = None,
    throughput: Any = None,
    progress: Any = None,
) -> list[Callback]:
    """Checkpoints into <run_dir>/checkpoints (by `policy`, a CheckpointPolicy), progress (a rich bar in a
    terminal, else `progress`, a ProgressLog), and preemption handling and throughput/MFU (`throughput`, a
    ThroughputMeter) while fitting."""
    from bigtrain.callbacks.final_step import FinalStep
    from bigtrain.callbacks.lean_hooks import LeanHooks
    from bigtrain.callbacks.peers import PeerWatch

    callbacks: list[Callback] = [PeerWatch(), LeanHooks()]  # LeanHooks: no calls of empty per-batch hooks
    if trainer_config.get("enable_progress_bar", True) is not False:
        from bigtrain.callbacks.progress import progress_callbacks

        callbacks += progress_callbacks(trainer_config, progress)
    # fast_dev_run is a smoke test: Lightning says it suppresses checkpointing, so bigtrain's are off too.
    checkpointing = trainer_config.get("enable_checkpointing", True) is not False
    if fitting and checkpointing and not trainer_config.get("fast_dev_run"):
        user = [c for c in trainer_config.get("callbacks") or [] if isinstance(c, ModelCheckpoint)]
        if not user:
            from bigtrain.callbacks.checkpoints import CheckpointPolicy

            validates = trainer_config.get("limit_val_batches") not in (0, 0.0)
            policy = policy or CheckpointPolicy()
            callbacks += policy.callbacks(Path(run_dir) / "checkpoints", module, validates)
    if fitting:
        callbacks.append(FinalStep())  # the step that reaches max_steps is validated and checkpointed
        from bigtrain.callbacks.preemption import Preemption
        from bigtrain.callbacks.resume_state import ResumeState

        callbacks.append(ResumeState())  # RNG states in checkpoints: exact mid-epoch resume
        callbacks.append(Preemption())  # SIGUSR1/SIGTERM: save at a step boundary, requeue
        from bigtrain.callbacks.startup import StartupTime

        callbacks.append(StartupTime())  # process start to the first optimizer step: perf/startup_s
        from bigtrain.callbacks.throughput import ThroughputMeter

        throughput = throughput or ThroughputMeter()
        if throughput.enabled:
            callbacks.append(throughput)  # samples/tokens per second, FLOPs, MFU, peak memory
    return callbacks
