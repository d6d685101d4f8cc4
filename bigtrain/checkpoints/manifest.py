"""Checkpoint manifests: what a complete checkpoint's files are, and whether they are still that.

Every checkpoint bigtrain writes (a `.ckpt` file, or a sharded checkpoint's folder) gets a manifest beside
it, `<name>.ckpt.manifest.json`: the step and epoch, and each file's size and SHA-256. The writer saves under
a hidden temporary name, writes the manifest, then renames both into place (`bigtrain.checkpoints.save`),
so a checkpoint without a matching manifest is one whose write did not finish.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from bigtrain.files import atomic_path

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


def checkpoint_files(checkpoint: Path) -> list[tuple[str, Path]]:
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
    found = checkpoint_files(Path(checkpoint))
    files = {name: {"bytes": p.stat().st_size, "sha256": sha256(p)} for name, p in found}
    return {"format": MANIFEST_FORMAT, "step": step, "epoch": epoch, "files": files}


def write_manifest(checkpoint: str | Path, manifest: dict[str, Any]) -> Path:
    """Write a checkpoint's manifest beside it, atomically and flushed to disk; returns its path."""
    path = manifest_path(checkpoint)
    with atomic_path(path) as tmp, tmp.open("w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())  # the manifest vouches for the checkpoint: it must survive a power cut
    return path


def read_manifest(checkpoint: str | Path) -> dict[str, Any] | None:
    """A checkpoint's manifest, or None when it has none (or it cannot be read)."""
    try:
        data = json.loads(manifest_path(checkpoint).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else None


def verify_manifest(checkpoint: str | Path, *, checksums: bool = True) -> str | None:
    """None when the checkpoint's files match its manifest, else what is wrong, in a few words."""
    checkpoint = Path(checkpoint)
    if not checkpoint.exists():
        return "missing"
    manifest = read_manifest(checkpoint)
    if manifest is None:
        return f"no readable manifest {manifest_path(checkpoint).name} (its write did not finish)"
    on_disk = dict(checkpoint_files(checkpoint))
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
