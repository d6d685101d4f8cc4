"""Atomic checkpoints with manifests, and the policy of which ones a run keeps.

Every checkpoint bigtrain writes (ModelCheckpoint's, a preemption's, the non-finite guard's) goes through
`save_atomically`: the strategy writes it under a hidden temporary name (a file, or a folder of shards),
global rank 0 writes its manifest (step, sizes, SHA-256; see `bigtrain.checkpoint`) and renames it into
place. A save that is interrupted, or fails because the disk is full or read-only, leaves the earlier
checkpoints as they were; the failure is one line naming the folder and the checkpoint still there.

`Checkpoints` is the run's ModelCheckpoint: it keeps the newest `keep_last` checkpoints (every epoch, or
every `every_n_steps`), and `last.ckpt` links to the newest. With `best`, a second one keeps the best
checkpoint by the model's validation metric (`best-step=N.ckpt`). `CheckpointPolicy` is the `checkpoint:`
section of a recipe that sets them up.
"""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from bigtrain.checkpoint import (
    CHECKPOINT_DIR,
    MANIFEST_SUFFIX,
    build_manifest,
    manifest_path,
    newest_checkpoint,
    read_manifest,
    write_json_atomically,
)
from bigtrain.errors import UserError
from bigtrain.lightning_compat import ModelCheckpointHooks

SPACE_MARGIN = 1.05
"""A save needs the size of the newest checkpoint in the folder, times this, free on its disk."""


def remove_checkpoint(path: str | Path) -> None:
    """Delete a checkpoint (file or folder) and its manifest; the manifest goes first."""
    path = Path(path)
    manifest_path(path).unlink(missing_ok=True)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def checkpoint_folder(trainer: Trainer) -> Path:
    """The ModelCheckpoint folder when there is one, else `<default_root_dir>/checkpoints`."""
    callback = trainer.checkpoint_callback
    if callback is not None and getattr(callback, "dirpath", None):
        return Path(callback.dirpath)
    return Path(trainer.default_root_dir) / CHECKPOINT_DIR


def _newest_size(folder: Path) -> int:
    """Bytes of the newest checkpoint with a manifest in `folder` (0 when there is none)."""
    sizes = []
    for manifest in folder.glob(f"*.ckpt{MANIFEST_SUFFIX}"):
        data = read_manifest(manifest.with_name(manifest.name.removesuffix(MANIFEST_SUFFIX))) or {}
        sizes.append((data.get("step", -1), sum(f.get("bytes", 0) for f in data.get("files", {}).values())))
    return max(sizes)[1] if sizes else 0


def _prepare(folder: Path, partial: Path) -> str | None:
    """On rank 0 before a save: why the folder cannot take one more checkpoint, or None when it can."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        remove_checkpoint(partial)  # left by a save that was killed
        probe = folder / ".bigtrain-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        return f"{folder} is not writable ({err.strerror})"
    needed, free = _newest_size(folder) * SPACE_MARGIN, shutil.disk_usage(folder).free
    if needed > free:
        return (
            f"not enough space in {folder} ({free / 2**20:.1f} MiB free, the last checkpoint took "
            f"{needed / SPACE_MARGIN / 2**20:.1f} MiB)"
        )
    return None


def _os_error(err: BaseException) -> OSError | None:
    """The OSError behind a failed save (Lightning and DCP wrap it), if any."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [err]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno is not None:
            return current
        failures = getattr(current, "failures", None)  # DCP's CheckpointException: {rank: wrapped error}
        if isinstance(failures, dict):
            stack += [getattr(f, "exc", f) for f in failures.values() if isinstance(f, BaseException)]
        stack += [current.__cause__, current.__context__]
    return None


def _failed(final: Path, why: str) -> UserError:
    previous = newest_checkpoint(final.parent, warn=lambda _: None, checksums=False)
    kept = (
        f"the previous checkpoint {previous.name} is intact"
        if previous
        else "no earlier checkpoint was touched"
    )
    return UserError(f"cannot save checkpoint {final}: {why}; {kept}")


def save_atomically(trainer: Trainer, final: Path, *, weights_only: bool = False) -> Path:
    """Save the trainer's checkpoint to `final` atomically, with its manifest (every rank calls this)."""
    final = Path(final)
    partial = final.with_name(f".{final.name}.tmp")
    problem = _prepare(final.parent, partial) if trainer.is_global_zero else None
    problem = trainer.strategy.broadcast(problem, src=0)
    if problem:
        raise _failed(final, problem)
    try:
        trainer.save_checkpoint(partial, weights_only=weights_only)  # collective for sharded strategies
        if trainer.is_global_zero:
            manifest = build_manifest(partial, step=trainer.global_step, epoch=trainer.current_epoch)
            remove_checkpoint(final)  # its manifest first: a crash from here leaves it unverified, not wrong
            os.replace(partial, final)
            write_json_atomically(manifest_path(final), manifest)
    except Exception as err:
        cause = _os_error(err)
        if cause is None:
            raise
        if trainer.is_global_zero:
            remove_checkpoint(partial)
        why = os.strerror(cause.errno) if cause.errno else str(cause)
        if cause.errno in (errno.ENOSPC, errno.EDQUOT):
            why = f"{final.parent} is full ({why})"
        raise _failed(final, why) from err
    trainer.strategy.barrier("bigtrain-checkpoint-saved")
    return final


class Checkpoints(ModelCheckpointHooks):
    """ModelCheckpoint with atomic saves and manifests; keeps the `keep_last` newest, links `last.ckpt`."""

    def __init__(
        self, dirpath: str | Path, *, keep_last: int = 1, every_n_steps: int | None = None, **kw: Any
    ) -> None:
        kw.setdefault("monitor", "step" if keep_last > 1 else None)  # the newest K: the K highest steps
        kw.setdefault("mode", "max")
        kw.setdefault("save_last", "link")
        super().__init__(dirpath=str(dirpath), save_top_k=keep_last, every_n_train_steps=every_n_steps, **kw)

    def write_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        """Save atomically, with the manifest."""
        save_atomically(trainer, Path(filepath), weights_only=self.save_weights_only)

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
