"""What `bigtrain verify-resume` records of a run: each batch's training losses, the final weights, and a
checkpoint at a chosen step where the run then stops.

Runs load them by class path (`--trainer.callbacks+=bigtrain.callbacks.record.RecordSteps`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from bigtrain.models.train_metrics import current_metrics

STEPS_FILE = "steps.json"
WEIGHTS_FILE = "weights.safetensors"


def training_losses(trainer: Trainer, outputs: Any) -> dict[str, float]:
    """This batch's training losses on this rank: the step's `loss` and the logged `train/...loss` values."""
    values: dict[str, Any] = {}
    if isinstance(outputs, dict) and isinstance(outputs.get("loss"), torch.Tensor):
        values["loss"] = outputs["loss"]
    for name, value in current_metrics(trainer).items():
        if name.startswith("train/") and "loss" in name and not name.endswith("_epoch"):
            values[name.removesuffix("_step")] = value
    # float() of a float32 is exact, and JSON keeps every digit of a float.
    return {name: float(v.detach().float().item()) for name, v in values.items() if v.numel() == 1}


def full_state_dict(pl_module: LightningModule) -> dict[str, torch.Tensor]:
    """The module's whole state dict on CPU (sharded parameters gathered: a collective under FSDP)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = get_model_state_dict(pl_module, options=options)
    else:
        state = pl_module.state_dict()
    # Clones: safetensors refuses tensors that share memory (tied weights).
    return {name: value.detach().cpu().clone().contiguous() for name, value in state.items()}


class RecordSteps(Callback):
    """Writes `weights.safetensors` and `steps.json` into the run directory: {"steps": one entry per
    training batch, "validated_after": the steps validation ran after, "weights": tensor names in order}."""

    def __init__(self, dirpath: str | None = None) -> None:
        """`dirpath`: where to write (default: the run directory)."""
        self.dirpath = dirpath
        self.steps: list[dict[str, Any]] = []
        self.validated_after: list[int] = []

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        if not trainer.sanity_checking:
            self.validated_after.append(trainer.global_step)

    def on_train_batch_end(  # noqa: D102
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        entry = {"step": trainer.global_step, "epoch": trainer.current_epoch, "batch": batch_idx}
        entry["batches"] = trainer.num_training_batches
        entry["losses"] = training_losses(trainer, outputs)
        self.steps.append(entry)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        self.write(trainer, pl_module)

    def write(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Write both files now (every rank calls this: gathering sharded weights is a collective)."""
        state = full_state_dict(pl_module)
        if not trainer.is_global_zero:
            return
        from safetensors.torch import save_file

        folder = Path(self.dirpath or trainer.default_root_dir)
        folder.mkdir(parents=True, exist_ok=True)
        record = {"steps": self.steps, "validated_after": self.validated_after, "weights": list(state)}
        (folder / STEPS_FILE).write_text(json.dumps(record, indent=1) + "\n")
        save_file(state, str(folder / WEIGHTS_FILE))


class StopAtStep(Callback):
    """Ends the process like an interruption: after the first batch that reaches global step `step`, saves a
    checkpoint (default `<run_dir>/checkpoints/stop-step=<step>.ckpt`), writes what `RecordSteps` recorded,
    and exits with status 0 before anything else of that step runs (validation, other checkpoints)."""

    def __init__(self, step: int, path: str | None = None) -> None:
        """`step`: the global step to stop at; `path`: the checkpoint to write there."""
        self.step = step
        self.path = path

    def on_train_batch_end(  # noqa: D102
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step < self.step:
            return
        from bigtrain.checkpoints.save import save_atomically

        path = self.path or str(
            Path(trainer.default_root_dir) / "checkpoints" / f"stop-step={trainer.global_step}.ckpt"
        )
        save_atomically(trainer, Path(path))  # with its manifest, so that `--ckpt_path auto` takes it
        for callback in trainer.callbacks:
            if isinstance(callback, RecordSteps):
                callback.write(trainer, pl_module)
        if trainer.is_global_zero:
            print(f"stopped after step {trainer.global_step}: saved {path}", flush=True)
        raise SystemExit(0)  # Lightning tears down (loggers, process group) on the way out


def same_float(a: float, b: float) -> bool:
    """Bit-for-bit the same value as JSON gives it back (NaN equals NaN)."""
    return a == b or (math.isnan(a) and math.isnan(b))
