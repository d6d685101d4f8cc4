"""Checkpoint discovery for `--ckpt_path auto`: the newest complete checkpoint in a run directory."""

from __future__ import annotations

from pathlib import Path

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_SUFFIX = ".ckpt"


def checkpoint_dir(run_dir: str | Path) -> Path:
    """Where a run keeps its checkpoints: `<run_dir>/checkpoints`."""
    return Path(run_dir) / CHECKPOINT_DIR


def is_complete(path: Path) -> bool:
    """Whether `path` looks like a finished checkpoint: a non-empty file, or a sharded checkpoint's folder."""
    # Writers save under a hidden or `.tmp` name and rename when done, so those are always partial.
    if path.name.startswith(".") or path.name.endswith(".tmp") or path.suffix != CHECKPOINT_SUFFIX:
        return False
    if path.is_file():
        return path.stat().st_size > 0
    if path.is_dir():
        # A distributed checkpoint is a folder of shards; torch.distributed.checkpoint writes .metadata last.
        return (path / ".metadata").is_file()
    return False  # a dangling symlink


def find_resume_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete `*.ckpt` (file or sharded folder) under `<run_dir>/checkpoints`, or None."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return None
    candidates = [path for path in folder.iterdir() if is_complete(path)]
    if not candidates:
        return None
    # Newest by modification time; the name breaks ties so the choice does not depend on listing order.
    return max(candidates, key=lambda path: (path.stat().st_mtime_ns, path.name))
