"""Shared test fixtures: the shared test data folder and a way to run the `bigtrain` command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_data_dir() -> Path:
    """Where the shared test data sets are (BIGTRAIN_TEST_DATA, default ../shared/data)."""
    return Path(os.environ.get("BIGTRAIN_TEST_DATA", ROOT.parent / "shared" / "data"))


test_data_dir.__test__ = False  # not a test, despite its name


def require_test_data(path: Path) -> Path:
    """`path` in the shared test data; when it is absent the test skips, or fails under CI (`CI` set), where
    a skip would silently stop the real-data tests."""
    if not path.exists():
        why = f"shared test data not found at {path} (set BIGTRAIN_TEST_DATA)"
        if os.environ.get("CI"):
            pytest.fail(f"{why}; CI must run the real-data tests")
        pytest.skip(why)
    return path


@pytest.fixture
def shared_data() -> Path:
    """The shared test data folder (see `require_test_data`)."""
    return require_test_data(test_data_dir())


def run_bigtrain(
    *args: str, cwd: Path | None = None, timeout: float = 600, env: dict | None = None, **popen: Any
):
    """Run `python -m bigtrain ARGS` in a subprocess; returns the CompletedProcess (text output).

    `popen`: more keyword arguments for subprocess.run (e.g. `preexec_fn`)."""
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", **(env or {})}
    full_env.pop("BIGTRAIN_RUN_DIR", None)
    return subprocess.run(
        [sys.executable, "-m", "bigtrain", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **popen,
    )


@pytest.fixture
def bigtrain_cmd():
    """The run_bigtrain function, as a fixture."""
    return run_bigtrain


@pytest.fixture(autouse=True)
def _one_thread_per_test():
    """One intra-op thread per test: tests run two at a time on two cores, and threads that wait on each
    other on a loaded machine make small models many times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
