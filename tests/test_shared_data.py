"""A missing shared data set skips the real-data tests on a laptop, and fails them under CI (`CI` set)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REAL_DATA_TEST = "tests/recipes/test_learning.py::test_cnn_learns_digits"


def _pytest(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BIGTRAIN_TEST_DATA": str(tmp_path / "absent")}
    env.pop("CI", None)
    if ci is not None:
        env["CI"] = ci
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", REAL_DATA_TEST]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_missing_real_data_skips_without_ci_and_fails_under_ci(tmp_path):
    laptop = _pytest(tmp_path, None)
    assert laptop.returncode == 0 and "1 skipped" in laptop.stdout, laptop.stdout[-2000:]
    ci = _pytest(tmp_path, "true")
    assert ci.returncode == 1 and "CI must run the real-data tests" in ci.stdout, ci.stdout[-2000:]
