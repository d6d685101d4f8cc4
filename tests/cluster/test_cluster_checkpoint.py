"""find_resume_checkpoint: the newest complete checkpoint, ignoring partial ones."""

from __future__ import annotations

import os
from pathlib import Path

from bigtrain.checkpoint import find_resume_checkpoint


def _touch(path: Path, mtime: int, data: bytes = b"x") -> Path:
    path.write_bytes(data)
    os.utime(path, ns=(mtime, mtime))
    return path


def test_no_checkpoint_folder_or_empty_folder(tmp_path):
    assert find_resume_checkpoint(tmp_path) is None
    (tmp_path / "checkpoints").mkdir()
    assert find_resume_checkpoint(tmp_path) is None


def test_newest_complete_checkpoint_wins(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    _touch(folder / "epoch=0-step=10.ckpt", 1_000)
    newest = _touch(folder / "last.ckpt", 3_000)
    _touch(folder / "epoch=0-step=5.ckpt", 2_000)
    # Newer but partial or not a checkpoint: a temporary name, a hidden file, an empty file, other files.
    _touch(folder / ".preempt-step=12.ckpt.tmp", 9_000)
    _touch(folder / ".hidden.ckpt", 9_000)
    _touch(folder / "empty.ckpt", 9_000, data=b"")
    _touch(folder / "notes.txt", 9_000)
    os.symlink(folder / "missing.ckpt", folder / "dangling.ckpt")
    assert find_resume_checkpoint(tmp_path) == newest
    assert find_resume_checkpoint(str(tmp_path)) == newest


def test_sharded_checkpoint_folder_needs_its_metadata(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    _touch(folder / "epoch=0-step=4.ckpt", 1_000)
    sharded = folder / "epoch=0-step=8.ckpt"
    sharded.mkdir()
    _touch(sharded / "__0_0.distcp", 2_000)
    os.utime(sharded, ns=(5_000, 5_000))
    # Shards without .metadata: an interrupted save, so the older file checkpoint is the one to resume.
    assert find_resume_checkpoint(tmp_path) == folder / "epoch=0-step=4.ckpt"
    _touch(sharded / ".metadata", 6_000)
    os.utime(sharded, ns=(6_000, 6_000))
    assert find_resume_checkpoint(tmp_path) == sharded
