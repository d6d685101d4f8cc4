"""What a run prints while it trains: a rich bar in a terminal, plain log lines elsewhere (SLURM logs, tee).

The rich bar redraws one line in place, so in a file it shows nothing until the end. `ProgressLog` prints a
line every `every_s` seconds (or `every_n_steps` steps) instead, and one per validation.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import RichProgressBar

from bigtrain.models.train_metrics import current_metrics

VAL_SUFFIXES = ("loss", "ppl", "acc", "psnr")
"""Validation metrics shown (by name suffix): LMs' val/loss and val/ppl, the CNN's val/acc, the AE's
val/loss and val/psnr, the GAN's val/d_loss and val/g_loss."""


def val_metrics(trainer: Trainer) -> dict[str, float]:
    """The family's headline validation metrics from the last validation, as floats."""
    out = {}
    for name, value in trainer.callback_metrics.items():
        if name.startswith("val/") and name.endswith(VAL_SUFFIXES) and not name.endswith("_step"):
            number = value.item() if isinstance(value, torch.Tensor) and value.numel() == 1 else value
            if isinstance(number, (int, float)):
                out[name] = float(number)
    return out


def train_losses(trainer: Trainer) -> dict[str, float]:
    """The training losses last logged: `train/loss` (the GAN: `train/d_loss`, `train/g_loss`)."""
    out = {}
    for name, value in current_metrics(trainer).items():
        if (
            name.startswith("train/")
            and name.endswith("loss")
            and isinstance(value, torch.Tensor)
            and value.numel() == 1
        ):
            out[name] = float(value)  # a host read: see StepProgressBar.train_refresh_s
    return out


def bounded_by_steps(trainer: Trainer) -> bool:
    """Whether max_steps, not max_epochs, ends the run."""
    if trainer.max_steps is None or trainer.max_steps < 0:
        return False
    if trainer.max_epochs in (None, -1):
        return True
    per_epoch = trainer.num_training_batches
    if not math.isfinite(per_epoch) or per_epoch <= 0:
        return True
    steps_per_epoch = math.ceil(per_epoch / max(1, trainer.accumulate_grad_batches))
    return trainer.max_steps <= trainer.max_epochs * steps_per_epoch


class StepProgressBar(RichProgressBar):
    """Rich's bar counting optimizer steps (`step 120/2000`) when max_steps ends the run, epochs otherwise,
    with the family's validation metrics beside the training loss.

    The losses are not logged for Lightning's progress bar, which reads them to the host at every step; this
    bar reads them from `callback_metrics` at most every `train_refresh_s` seconds while it moves each step.
    """

    train_refresh_s = 0.5
    """Seconds between reads of the training losses (each read waits for the device)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._losses: tuple[float, dict[str, float]] = (-math.inf, {})  # (when read, values)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        super().on_train_epoch_start(trainer, pl_module)
        self._show_steps(trainer)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:  # noqa: D102
        super().on_train_batch_end(trainer, pl_module, *args)
        self._show_steps(trainer)

    def _show_steps(self, trainer: Trainer) -> None:
        if self.progress is None or self.train_progress_bar_id is None or not bounded_by_steps(trainer):
            return
        task, steps = self.train_progress_bar_id, trainer.max_steps
        self.progress.update(task, total=steps, completed=trainer.global_step, description="step")

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:  # noqa: D102
        items = super().get_metrics(trainer, pl_module)
        now = time.monotonic()
        if now - self._losses[0] >= self.train_refresh_s:
            self._losses = (now, train_losses(trainer))
        items.update({k: v for k, v in {**self._losses[1], **val_metrics(trainer)}.items() if k not in items})
        items.pop("v_num", None)
        return items


class ProgressLog(Callback):
    """Plain progress lines for a console that is not a terminal: step/total, loss, LR, samples/s, ETA."""

    def __init__(self, every_n_steps: int | None = None, every_s: float = 30.0) -> None:
        """
        Args:
            every_n_steps: Print a line every N optimizer steps (default: by time, every `every_s`).
            every_s: Seconds between lines when every_n_steps is not set.
        """
        self.every_n_steps = every_n_steps
        self.every_s = every_s
        self._last: tuple[float, int] | None = None  # (time, step) of the last line
        self._val_start = 0.0

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        self._last = (time.perf_counter(), trainer.global_step)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:  # noqa: D102
        if not trainer.is_global_zero or self._last is None:
            return
        now, step = time.perf_counter(), trainer.global_step
        last_time, last_step = self._last
        if step == last_step:
            return  # accumulating: no optimizer step yet
        due = (step % self.every_n_steps == 0) if self.every_n_steps else now - last_time >= self.every_s
        total = trainer.estimated_stepping_batches
        if due or step == total:
            self._print_line(trainer, pl_module, (now - last_time) / (step - last_step), total)
            self._last = (now, step)

    def _print_line(self, trainer: Trainer, pl_module: LightningModule, step_s: float, total: float) -> None:
        step = trainer.global_step
        parts = [f"step {step}/{total}" if math.isfinite(total) else f"step {step}"]
        parts.append(f"epoch {trainer.current_epoch}")
        loss = current_metrics(trainer).get("train/loss")
        if loss is not None:
            parts.append(f"loss {float(loss):.4g}")
        if trainer.optimizers:
            parts.append(f"lr {trainer.optimizers[0].param_groups[0]['lr']:.3g}")
        batch = getattr(trainer.datamodule, "batch_size", None)  # bigtrain's is the global batch
        if isinstance(batch, int) and step_s > 0:
            parts.append(f"{batch / step_s:.1f} samples/s")
        if math.isfinite(total) and step_s > 0:
            parts.append(f"eta {_clock((total - step) * step_s)}")
        print(" | ".join(parts), flush=True)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        if self._last is not None:  # validation time is not training time: samples/s and ETA leave it out
            self._last = (self._last[0] + time.perf_counter() - self._val_start, self._last[1])
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = " ".join(f"{k} {v:.4g}" for k, v in sorted(val_metrics(trainer).items()))
        print(f"validation at step {trainer.global_step}: {metrics or 'no metrics'}", flush=True)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def progress_callbacks(trainer_config: dict[str, Any], log: ProgressLog | None = None) -> list[Callback]:
    """The rich bar in a terminal; otherwise plain lines (`log`, default every 30 s) and no bar."""
    if sys.stdout.isatty():
        return [StepProgressBar(leave=True)]
    trainer_config["enable_progress_bar"] = False  # else Lightning adds its own bar, drawn only at the end
    return [log or ProgressLog()]
