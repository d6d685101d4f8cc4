"""Checkpoint manifests and discovery: which checkpoint `--ckpt_path auto` resumes.

Every checkpoint bigtrain writes (a `.ckpt` file, or a sharded checkpoint's folder) gets a manifest beside
it, `<name>.ckpt.manifest.json`: the step and epoch, and each file's size and SHA-256. The writer saves under
a hidden temporary name, writes the manifest, then renames both into place (`bigtrain.callbacks.checkpoints`),
so a checkpoint without a matching manifest is one whose write did not finish. `find_resume_checkpoint`
takes the newest checkpoint whose files all match their manifest and warns about each newer one it skips.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_SUFFIX = ".ckpt"
MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_FORMAT = 1


def checkpoint_dir(run_dir: str | Path) -> Path:
    """Where a run keeps its checkpoints: `<run_dir>/checkpoints`."""
    return Path(run_dir) / CHECKPOINT_DIR


def manifest_path(checkpoint: str | Path) -> Path:
    """The manifest beside a checkpoint: `<name>.ckpt.manifest.json`."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + MANIFEST_SUFFIX)


def _files(checkpoint: Path) -> list[tuple[str, Path]]:
    """(name in the manifest, path) of each file of a checkpoint: the file itself, or a folder's files."""
    if checkpoint.is_dir():
        found = sorted(p for p in checkpoint.rglob("*") if p.is_file())
        return [(p.relative_to(checkpoint).as_posix(), p) for p in found]
    return [(".", checkpoint)]


def sha256(path: Path, chunk: int = 1 << 22) -> str:
    """The hex SHA-256 of a file, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def build_manifest(checkpoint: str | Path, *, step: int, epoch: int) -> dict[str, Any]:
    """The manifest of a checkpoint as it is on disk now."""
    files = {name: {"bytes": p.stat().st_size, "sha256": sha256(p)} for name, p in _files(Path(checkpoint))}
    return {"format": MANIFEST_FORMAT, "step": step, "epoch": epoch, "files": files}


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    """Write JSON to `path` through a hidden temporary file and a rename, flushed to disk."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_manifest(checkpoint: str | Path) -> dict[str, Any] | None:
    """A checkpoint's manifest, or None when it has none (or it cannot be read)."""
    try:
        data = json.loads(manifest_path(checkpoint).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else None


def verify(checkpoint: str | Path, *, checksums: bool = True) -> str | None:
    """None when the checkpoint's files match its manifest, else what is wrong, in a few words."""
    checkpoint = Path(checkpoint)
    if not checkpoint.exists():
        return "missing"
    manifest = read_manifest(checkpoint)
    if manifest is None:
        return f"no readable manifest {manifest_path(checkpoint).name} (its write did not finish)"
    on_disk = dict(_files(checkpoint))
    for name, expected in manifest["files"].items():
        path, shown = on_disk.get(name), checkpoint.name if name == "." else name
        if path is None:
            return f"file {shown} is missing"
        size = path.stat().st_size
        if size != expected["bytes"]:
            return f"{shown} has {size} bytes, the manifest says {expected['bytes']} (truncated?)"
        if checksums and sha256(path) != expected["sha256"]:
            return f"{shown} does not match its SHA-256 checksum (corrupt)"
    return None


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


def newest_checkpoint(folder: str | Path, warn: Any = None, *, checksums: bool = True) -> Path | None:
    """The newest checkpoint in `folder` that matches its manifest, or None.

    Each newer checkpoint that is incomplete or corrupt is skipped with a warning through `warn`
    (default: a line on stderr from global rank 0), saying what is wrong with it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    warn = warn or _warn
    for path in sorted(_candidates(folder), key=_order, reverse=True):
        problem = verify(path, checksums=checksums)
        if problem is None:
            return path
        warn(f"skipping checkpoint {path}: {problem}")
    return None


def find_resume_checkpoint(run_dir: str | Path, warn: Any = None) -> Path | None:
    """The checkpoint `--ckpt_path auto` resumes: the newest valid one under `<run_dir>/checkpoints`."""
    return newest_checkpoint(checkpoint_dir(run_dir), warn)
