"""Atomic checkpoint saves: a checkpoint carries its final name only once it and its manifest are whole.

Every checkpoint bigtrain writes (ModelCheckpoint's, a preemption's, the non-finite guard's) goes through
`save_atomically`: the strategy writes it under a hidden temporary name (a file, or a folder of shards),
global rank 0 writes its manifest (step, sizes, SHA-256) and renames it into place. A save that is
interrupted, or fails because the disk is full or read-only, leaves the earlier checkpoints as they were;
the failure is one line naming the folder and the checkpoint still there.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from bigtrain.checkpoints.discover import newest_checkpoint
from bigtrain.checkpoints.manifest import (
    MANIFEST_SUFFIX,
    build_manifest,
    manifest_path,
    read_manifest,
    write_manifest,
)
from bigtrain.errors import UserError

if TYPE_CHECKING:
    from lightning.pytorch import Trainer

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


def _newest_size(folder: Path) -> int:
    """Bytes of the newest checkpoint with a manifest in `folder` (0 when there is none)."""
    sizes = []
    for manifest in folder.glob(f"*.ckpt{MANIFEST_SUFFIX}"):
        data = read_manifest(manifest.with_name(manifest.name.removesuffix(MANIFEST_SUFFIX))) or {}
        sizes.append((data.get("step", -1), sum(f.get("bytes", 0) for f in data.get("files", {}).values())))
    return max(sizes)[1] if sizes else 0


def check_room(folder: Path, partial: Path) -> str | None:
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
    problem = check_room(final.parent, partial) if trainer.is_global_zero else None
    problem = trainer.strategy.broadcast(problem, src=0)
    if problem:
        raise _failed(final, problem)
    try:
        trainer.save_checkpoint(partial, weights_only=weights_only)  # collective for sharded strategies
        if trainer.is_global_zero:
            manifest = build_manifest(partial, step=trainer.global_step, epoch=trainer.current_epoch)
            remove_checkpoint(final)  # its manifest first: a crash from here leaves it unverified, not wrong
            os.replace(partial, final)
            write_manifest(final, manifest)
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
