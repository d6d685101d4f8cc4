"""The policy of which checkpoints a run keeps, as Lightning callbacks.

`Checkpoints` is the run's ModelCheckpoint: it keeps the newest `keep_last` checkpoints (every epoch, or
every `every_n_steps`), and `last.ckpt` links to the newest. With `best`, a second one keeps the best
checkpoint by the model's validation metric (`best-step=N.ckpt`). `CheckpointPolicy` is the `checkpoint:`
section of a recipe that sets them up. Every save is atomic and has its manifest
(`bigtrain.checkpoints.save`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from bigtrain.checkpoints.manifest import CHECKPOINT_DIR
from bigtrain.checkpoints.save import remove_checkpoint, save_atomically
from bigtrain.errors import UserError
from bigtrain.lightning_compat import ModelCheckpointHooks


def checkpoint_folder(trainer: Trainer) -> Path:
    """The ModelCheckpoint folder when there is one, else `<default_root_dir>/checkpoints`."""
    callback = trainer.checkpoint_callback
    if callback is not None and getattr(callback, "dirpath", None):
        return Path(callback.dirpath)
    return Path(trainer.default_root_dir) / CHECKPOINT_DIR


class Checkpoints(ModelCheckpointHooks):
    """ModelCheckpoint with atomic saves and manifests; keeps the `keep_last` newest, links `last.ckpt`."""

    def __init__(
        self, dirpath: str | Path, *, keep_last: int = 1, every_n_steps: int | None = None, **kw: Any
    ) -> None:
        kw.setdefault("monitor", "step" if keep_last > 1 else None)  # the newest K: the K highest steps
        kw.setdefault("mode", "max")
        kw.setdefault("save_last", "link")
        # A restart into the same run directory replaces `last.ckpt` instead of adding `last-v1.ckpt`.
        kw.setdefault("enable_version_counter", False)
        super().__init__(dirpath=str(dirpath), save_top_k=keep_last, every_n_train_steps=every_n_steps, **kw)
        self._resumed_dropped = False

    def write_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        """Save atomically, with the manifest; then drop the checkpoint the run resumed from once no policy
        keeps it (Lightning never deletes that one, so every restart would leave one more than keep_last)."""
        save_atomically(trainer, Path(filepath), weights_only=self.save_weights_only)
        resumed = trainer.ckpt_path
        if self._resumed_dropped or not resumed or Path(resumed).parent != Path(self.dirpath or ""):
            return
        kept = {Path(filepath)}
        for callback in trainer.checkpoint_callbacks:
            kept |= {Path(p) for p in callback.best_k_models}
        if Path(resumed) not in kept:
            self._resumed_dropped = True
            self.delete_checkpoint(trainer, resumed)

    def on_train_batch_end(self, trainer: Trainer, pl_module: Any, *args: Any, **kwargs: Any) -> None:
        """Saving every N steps, also save the run's final step (`max_steps`), which N may not divide."""
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)
        if 0 < trainer.max_steps <= trainer.global_step:
            self._save_final(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: Any) -> None:
        """Saving every N steps, also save at the end of the run's final epoch (`max_epochs`)."""
        super().on_train_epoch_end(trainer, pl_module)
        max_epochs = trainer.max_epochs
        if max_epochs is not None and 0 < max_epochs <= trainer.current_epoch + 1:
            self._save_final(trainer)

    def _save_final(self, trainer: Trainer) -> None:
        step_based = self.every_n_train_steps > 0 and self.monitor in (None, "step")
        if step_based:
            self.save_now(trainer)

    def delete_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        """Delete the checkpoint and its manifest (rank 0), then wait for every rank."""
        if trainer.is_global_zero:
            remove_checkpoint(filepath)
        trainer.strategy.barrier("bigtrain-checkpoint-removed")


def best_checkpoint(dirpath: str | Path, metric: str, mode: str) -> Checkpoints:
    """A ModelCheckpoint that keeps the one best checkpoint by a validation metric, `best-step=N.ckpt`."""
    return Checkpoints(
        dirpath,
        monitor=metric,
        mode=mode,
        filename="best-{step}",
        save_last=False,
        save_on_train_epoch_end=False,
    )


@dataclass
class CheckpointPolicy:
    """Which checkpoints a run keeps: `--checkpoint.keep_last 3`, or `checkpoint:` in a recipe.

    Args:
        keep_last: How many of the newest checkpoints to keep (`last.ckpt` links to the newest).
        every_n_steps: Save every this many optimizer steps; null saves at the end of each epoch.
        best: Also keep the best checkpoint (`best-step=N.ckpt`) by this validation metric; `auto` takes
            the model's own (`checkpoint_metric`, e.g. val/acc for classifiers), null keeps none.
        best_mode: `min` or `max` for a metric named in `best` (`auto` knows its own).
    """

    keep_last: int = 2
    every_n_steps: int | None = None
    best: str | None = "auto"
    best_mode: Literal["min", "max"] = "min"

    def callbacks(self, dirpath: Path, module: Any, validates: bool) -> list[ModelCheckpoint]:
        """The ModelCheckpoints of this policy for a run of `module` (the best one only if it validates)."""
        if self.keep_last < 1:
            raise UserError(
                f"checkpoint.keep_last must be >= 1, got {self.keep_last} (no checkpoints: "
                "--trainer.enable_checkpointing false)"
            )
        if self.every_n_steps is not None and self.every_n_steps < 1:
            raise UserError(f"checkpoint.every_n_steps must be >= 1 or null, got {self.every_n_steps}")
        kept = [Checkpoints(dirpath, keep_last=self.keep_last, every_n_steps=self.every_n_steps)]
        metric, mode = self.best, self.best_mode
        if metric == "auto":
            metric, mode = getattr(module, "checkpoint_metric", None) or (None, mode)
        if metric and validates:
            kept.append(best_checkpoint(dirpath, metric, mode))
        return kept
