"""`bigtrain sweep` and `bigtrain runs` as commands: the default sweep directory, a wrong key refused before
any point starts, and the rich table on a terminal."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import yaml


def bigtrain(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bigtrain", *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def test_dry_run_prints_points_under_the_default_sweep_dir(tmp_path):
    out = bigtrain("sweep", "cnn/glyphs", "--grid", "model.optim.lr=1e-3,3e-4", "--dry-run", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = [line.split() for line in out.stdout.splitlines()]
    assert [values for _, values in lines] == ["model.optim.lr=1e-3", "model.optim.lr=3e-4"]
    dirs = [Path(path) for path, _ in lines]
    assert [d.name for d in dirs] == ["point-000", "point-001"]
    assert dirs[0].parent.parent == tmp_path / "runs" / "cnn-glyphs"
    assert dirs[0].parent.name.startswith("sweep-")
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing


def test_a_wrong_key_is_one_line_and_starts_no_point(tmp_path):
    sweep = tmp_path / "sweep"
    grid = ["--grid", "model.optim.lrr=1e-3,3e-4"]
    out = bigtrain("sweep", "cnn/glyphs", *grid, "--sweep-dir", str(sweep), cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("bigtrain: error: ") and "lrr" in lines[0], out.stderr
    assert not sweep.exists()


def test_compare_on_a_terminal_is_a_rich_table(tmp_path):
    for name, loss in (("a", 0.5), ("b", 0.3)):
        run = tmp_path / name
        run.mkdir()
        (run / "config.yaml").write_text(yaml.safe_dump({"model": {"lr": loss}, "recipe_name": "r"}))
        (run / "metrics.json").write_text(json.dumps({"val/loss": loss}))
    pid, fd = pty.fork()
    if pid == 0:  # the child: stdout is the terminal
        os.execv(sys.executable, [sys.executable, "-m", "bigtrain", "runs", "compare", str(tmp_path / "a"),
                                  str(tmp_path / "b")])  # fmt: skip
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    text = b"".join(chunks).decode()
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "┃" in text and "best: min val/loss" in text and "model.lr" in text


def test_resuming_by_directory_refuses_overrides(tmp_path):
    from bigtrain.sweeps.state import new_sweep, write_sweep

    write_sweep(tmp_path / "s", new_sweep("cnn/glyphs", [], [{"model.optim.lr": "1e-3"}]))
    out = bigtrain("sweep", "--sweep-dir", str(tmp_path / "s"), "--trainer.max_steps", "9", cwd=tmp_path)
    assert out.returncode == 2 and "takes no overrides (--trainer.max_steps 9)" in out.stderr, out.stderr
    assert not (tmp_path / "s" / "point-000").exists()
