"""Which checkpoint to resume: `--ckpt_path auto` takes the newest one that matches its manifest.

Each newer checkpoint that is incomplete or corrupt is skipped with a warning saying what is wrong with it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from bigtrain.checkpoints.manifest import CHECKPOINT_SUFFIX, checkpoint_dir, verify_manifest


def _candidates(folder: Path) -> list[Path]:
    """The checkpoints in a folder: `*.ckpt` files and folders, not hidden or temporary names, and not
    links (`last.ckpt` links to a checkpoint that is a candidate itself)."""
    return [
        p
        for p in folder.iterdir()
        if p.suffix == CHECKPOINT_SUFFIX and not p.name.startswith(".") and not p.is_symlink() and p.exists()
    ]


def _order(path: Path) -> tuple[int, str]:
    """Newest first by modification time (a run restarted from an older checkpoint writes newer ones with
    lower steps, and a checkpoint without its manifest has no step); the name breaks ties."""
    return (path.stat().st_mtime_ns, path.name)


def _warn(message: str) -> None:
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    if rank_zero_only.rank == 0:
        print(f"bigtrain: warning: {message}", file=sys.stderr, flush=True)


def newest_checkpoint(
    folder: str | Path, warn: Callable[[str], object] | None = None, *, checksums: bool = True
) -> Path | None:
    """The newest checkpoint in `folder` that matches its manifest, or None.

    Each newer checkpoint that is incomplete or corrupt is skipped with a warning through `warn`
    (default: a line on stderr from global rank 0), saying what is wrong with it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    warn = warn or _warn
    for path in sorted(_candidates(folder), key=_order, reverse=True):
        problem = verify_manifest(path, checksums=checksums)
        if problem is None:
            return path
        warn(f"skipping checkpoint {path}: {problem}")
    return None


def find_resume_checkpoint(run_dir: str | Path, warn: Callable[[str], object] | None = None) -> Path | None:
    """The checkpoint `--ckpt_path auto` resumes: the newest valid one under `<run_dir>/checkpoints`."""
    return newest_checkpoint(checkpoint_dir(run_dir), warn)
