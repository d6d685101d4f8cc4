"""Atomic checkpoints with manifests: `--ckpt_path auto` takes the newest valid one, skipping broken ones."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch

from bigtrain.checkpoints.discover import find_resume_checkpoint
from bigtrain.checkpoints.manifest import build_manifest, manifest_path, verify_manifest, write_manifest
from tests.conftest import run_bigtrain


def _checkpoint(folder: Path, name: str, step: int, data: bytes = b"weights" * 100) -> Path:
    """A checkpoint file with its manifest, as the writer leaves it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    os.utime(path, ns=(step * 10**9, step * 10**9))
    write_manifest(path, build_manifest(path, step=step, epoch=0))
    return path


def _sharded(folder: Path, name: str, step: int) -> Path:
    path = folder / name
    path.mkdir(parents=True)
    for rank in (0, 1):
        (path / f"__{rank}_0.distcp").write_bytes(bytes([rank]) * 1000)
    (path / ".metadata").write_bytes(b"metadata")
    os.utime(path, ns=(step * 10**9, step * 10**9))
    write_manifest(path, build_manifest(path, step=step, epoch=0))
    return path


FIT = [
    "fit", "--recipe", "cnn/glyphs", "--data.num_samples", "64", "--data.batch_size", "16",
    "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0",
    "--trainer.enable_progress_bar", "false", "--trainer.logger", "false", "--checkpoint.every_n_steps", "2",
]  # fmt: skip
"""A tiny CNN run that saves every 2 steps (3 steps an epoch)."""


def _find(run: Path) -> tuple[Path | None, list[str]]:
    warnings: list[str] = []
    return find_resume_checkpoint(run, warn=warnings.append), warnings


def test_no_checkpoint_folder_or_empty_folder(tmp_path):
    assert _find(tmp_path) == (None, [])
    (tmp_path / "checkpoints").mkdir()
    assert _find(tmp_path) == (None, [])


def test_the_newest_wins_and_partial_names_are_ignored(tmp_path):
    folder = tmp_path / "checkpoints"
    _checkpoint(folder, "epoch=0-step=10.ckpt", 10)
    newest = _checkpoint(folder, "epoch=1-step=20.ckpt", 20)
    _checkpoint(folder, "epoch=0-step=5.ckpt", 5)
    os.symlink(newest.name, folder / "last.ckpt")  # a link to a candidate, not one itself
    # A save in progress (hidden temporary names) and other files are never candidates.
    (folder / ".epoch=2-step=30.ckpt.tmp").write_bytes(b"partial")
    os.utime(folder / ".epoch=2-step=30.ckpt.tmp", ns=(99 * 10**9, 99 * 10**9))
    (folder / "notes.txt").write_text("x")
    os.symlink(folder / "missing.ckpt", folder / "dangling.ckpt")
    assert _find(tmp_path) == (newest, [])
    assert find_resume_checkpoint(str(tmp_path), warn=print) == newest


def test_a_file_checkpoints_manifest_records_step_epoch_size_and_checksum(tmp_path):
    path = tmp_path / "epoch=2-step=7.ckpt"
    path.write_bytes(b"w" * 1234)
    write_manifest(path, build_manifest(path, step=7, epoch=2))
    digest = hashlib.sha256(b"w" * 1234).hexdigest()
    files = {".": {"bytes": 1234, "sha256": digest}}
    assert json.loads(manifest_path(path).read_text()) == {"format": 1, "step": 7, "epoch": 2, "files": files}
    assert verify_manifest(path) is None
    path.write_bytes(b"w" * 1000)
    assert verify_manifest(path) == "epoch=2-step=7.ckpt has 1000 bytes, the manifest says 1234 (truncated?)"
    assert verify_manifest(tmp_path / "gone.ckpt") == "missing"


@pytest.mark.parametrize("content", ["[1, 2]", '{"format": 1, "step": 3}', '{"files": [1]}'])
def test_a_manifest_without_its_files_table_is_no_manifest(tmp_path, content):
    path = _checkpoint(tmp_path, "epoch=0-step=3.ckpt", 3)
    manifest_path(path).write_text(content)
    expected = "no readable manifest epoch=0-step=3.ckpt.manifest.json (its write did not finish)"
    assert verify_manifest(path) == expected


def test_newest_is_by_time_not_name_and_hidden_names_are_never_candidates(tmp_path):
    """A run restarted from an older checkpoint writes newer ones with lower steps: those win."""
    folder = tmp_path / "checkpoints"
    _checkpoint(folder, "epoch=1-step=20.ckpt", 20)
    restarted = _checkpoint(folder, "epoch=0-step=10.ckpt", 30)
    _checkpoint(folder, ".epoch=2-step=40.ckpt", 40)  # hidden: a writer's, never a candidate
    assert _find(tmp_path) == (restarted, [])


def test_without_checksums_only_sizes_are_compared(tmp_path):
    """What the writer uses to name the previous checkpoint quickly: sizes only, no reading of the data."""
    from bigtrain.checkpoints.discover import newest_checkpoint

    folder = tmp_path / "checkpoints"
    newest = _checkpoint(folder, "epoch=0-step=4.ckpt", 4)
    newest.write_bytes(b"x" * newest.stat().st_size)  # same size, other bytes
    assert newest_checkpoint(folder, warn=lambda _: None) is None
    assert newest_checkpoint(folder, warn=lambda _: None, checksums=False) == newest


def test_skips_are_warned_on_stderr_by_default(tmp_path, capsys):
    folder = tmp_path / "checkpoints"
    previous = _checkpoint(folder, "epoch=0-step=4.ckpt", 4)
    newest = _checkpoint(folder, "epoch=1-step=8.ckpt", 8)
    manifest_path(newest).unlink()
    assert find_resume_checkpoint(tmp_path) == previous
    why = "no readable manifest epoch=1-step=8.ckpt.manifest.json (its write did not finish)"
    assert capsys.readouterr().err == f"bigtrain: warning: skipping checkpoint {newest}: {why}\n"


@pytest.mark.parametrize("damage", ["truncated", "bad checksum", "no manifest", "missing shard"])
def test_a_broken_newest_checkpoint_is_skipped_with_a_warning(tmp_path, damage):
    folder = tmp_path / "checkpoints"
    previous = _sharded(folder, "epoch=0-step=4.ckpt", 4)
    newest = _sharded(folder, "epoch=1-step=8.ckpt", 8)
    shard = newest / "__1_0.distcp"
    if damage == "truncated":
        shard.write_bytes(shard.read_bytes()[:500])
        expected = "__1_0.distcp has 500 bytes, the manifest says 1000 (truncated?)"
    elif damage == "bad checksum":
        shard.write_bytes(b"\x07" + shard.read_bytes()[1:])  # same size, other bytes
        expected = "__1_0.distcp does not match its SHA-256 checksum (corrupt)"
    elif damage == "no manifest":
        manifest_path(newest).unlink()
        expected = "no readable manifest epoch=1-step=8.ckpt.manifest.json (its write did not finish)"
    else:
        shard.unlink()
        expected = "file __1_0.distcp is missing"
    assert verify_manifest(newest) == expected
    assert _find(tmp_path) == (previous, [f"skipping checkpoint {newest}: {expected}"])


@pytest.mark.slow
def test_a_run_resumes_from_the_checkpoint_before_a_truncated_one(tmp_path):
    """A real run saves every 2 steps; its newest checkpoint is cut short; `auto` resumes the one before."""
    run = tmp_path / "run"
    args = [*FIT, "--checkpoint.keep_last", "3", "--run_dir", str(run)]
    first = run_bigtrain(*args, "--trainer.max_steps", "6")
    assert first.returncode == 0, first.stderr[-2000:]
    folder = run / "checkpoints"
    names = sorted(p.name for p in folder.glob("*.ckpt"))
    assert names == ["epoch=0-step=2.ckpt", "epoch=1-step=4.ckpt", "epoch=1-step=6.ckpt", "last.ckpt"]
    assert os.readlink(folder / "last.ckpt") == "epoch=1-step=6.ckpt"
    newest = folder / "epoch=1-step=6.ckpt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])

    second = run_bigtrain(*args, "--trainer.max_steps", "8", "--ckpt_path", "auto")
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"bigtrain: warning: skipping checkpoint {newest}: " in second.stderr
    assert "(truncated?)" in second.stderr
    restored = re.search(r"Restoring states from the checkpoint path at (\S+)", second.stdout + second.stderr)
    assert restored and Path(restored.group(1)).name == "epoch=1-step=4.ckpt"
    final = find_resume_checkpoint(run)
    assert final is not None and torch.load(final, weights_only=True)["global_step"] == 8


def _mount_tmpfs(where: Path, size: str) -> bool:
    """Mount a small tmpfs at `where` (needs root with mount rights); whether it worked."""
    where.mkdir(parents=True, exist_ok=True)
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)]
    return os.geteuid() == 0 and subprocess.run(mount, capture_output=True).returncode == 0


def _limit_file_size(limit: int):
    """A preexec_fn: writes past `limit` bytes fail with EFBIG (File too large) instead of a signal."""

    def apply() -> None:
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.slow
@pytest.mark.parametrize("failure", ["write fails", "disk full", "read-only"])
def test_a_failed_save_is_one_line_and_leaves_the_previous_checkpoint(tmp_path, failure):
    run = tmp_path / "run"
    folder = run / "checkpoints"
    if failure != "write fails" and not _mount_tmpfs(folder, "3m"):
        pytest.skip("needs root and mount rights for a small tmpfs")
    try:
        args = [*FIT, "--checkpoint.keep_last", "1", "--run_dir", str(run)]
        first = run_bigtrain(*args, "--trainer.max_steps", "2")
        assert first.returncode == 0, first.stderr[-2000:]
        previous = folder / "epoch=0-step=2.ckpt"
        size = previous.stat().st_size
        preexec = None
        if failure == "write fails":
            preexec = _limit_file_size(size // 2)
            why = "File too large"
        elif failure == "disk full":
            free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
            (folder / "filler").write_bytes(b"\0" * (free - size // 2))
            why = f"not enough space in {folder}"
        else:
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
            why = f"{folder} is not writable (Read-only file system)"
        second = run_bigtrain(*args, "--trainer.max_steps", "4", "--ckpt_path", "auto", preexec_fn=preexec)
        assert second.returncode == 2, second.stderr[-2000:]
        line = second.stderr.strip()
        assert "\n" not in line and "Traceback" not in line, line
        assert line.startswith(f"bigtrain: error: cannot save checkpoint {folder}/epoch=1-step=4.ckpt: "), (
            line
        )
        assert why in line and "the previous checkpoint epoch=0-step=2.ckpt is intact" in line, line
        assert find_resume_checkpoint(run) == previous
        assert torch.load(previous, weights_only=True)["global_step"] == 2
        assert not list(folder.glob(".*.tmp"))  # the partial write was cleaned up
    finally:
        if failure != "write fails":
            subprocess.run(["umount", str(folder)], check=False)
