"""Run a sweep's points on this machine: each a `bigtrain fit` subprocess (this Python), K at a time."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bigtrain.run_names import RUN_DIR_ENV
from bigtrain.sweeps.spec import point_args
from bigtrain.sweeps.state import FINISHED, write_sweep

LOG_FILE = "fit.log"
POLL_S = 0.5


def fit_argv(sweep: dict[str, Any], point: dict[str, Any], run_dir: Path) -> list[str]:
    """`bigtrain fit` arguments of one point: recipe, overrides, the point's values, its own run directory,
    and `--ckpt_path auto` so that a point stopped half-way resumes from its newest checkpoint."""
    return [
        "fit",
        "--recipe",
        sweep["recipe"],
        *sweep["overrides"],
        *point_args(point["values"]),
        "--run_dir",
        str(run_dir),
        "--ckpt_path",
        "auto",
    ]


def finished(sweep_dir: Path, point: dict[str, Any]) -> bool:
    """Whether the point ended well and its metrics are still there (a rerun skips it)."""
    return point.get("state") == FINISHED and (sweep_dir / point["dir"] / "metrics.json").is_file()


def _start(sweep_dir: Path, sweep: dict[str, Any], point: dict[str, Any]) -> subprocess.Popen[bytes]:
    run_dir = (sweep_dir / point["dir"]).absolute()
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in (RUN_DIR_ENV, "PL_GLOBAL_SEED")}
    with open(run_dir / LOG_FILE, "ab") as log:
        # An argv list, never a shell: the values are the user's text.
        return subprocess.Popen(
            [sys.executable, "-m", "bigtrain", *fit_argv(sweep, point, run_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )


def _describe(point: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in point["values"].items())


def run_local(sweep_dir: Path, sweep: dict[str, Any], parallel: int = 1) -> list[dict[str, Any]]:
    """Run every unfinished point, at most `parallel` at once, recording each one's state in sweep.yaml as
    it starts and ends; returns the points that failed."""
    todo = [p for p in sweep["points"] if not finished(sweep_dir, p)]
    for point in sweep["points"]:
        if point not in todo:
            print(f"{point['name']}: finished earlier, skipped ({_describe(point)})", flush=True)
    running: dict[str, tuple[subprocess.Popen[bytes], dict[str, Any], float]] = {}
    try:
        while todo or running:
            while todo and len(running) < parallel:
                point = todo.pop(0)
                running[point["name"]] = (_start(sweep_dir, sweep, point), point, time.monotonic())
                point["state"] = "running"
                write_sweep(sweep_dir, sweep)
                print(f"{point['name']}: running {_describe(point)}", flush=True)
            time.sleep(POLL_S)
            for name, (proc, point, start) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[name]
                _ended(sweep_dir, sweep, point, proc.returncode, time.monotonic() - start)
    finally:
        for proc, point, start in running.values():  # interrupted: the children got the Ctrl-C too
            _ended(sweep_dir, sweep, point, proc.wait(), time.monotonic() - start)
    return [p for p in sweep["points"] if p["state"] != FINISHED]


def _ended(sweep_dir: Path, sweep: dict[str, Any], point: dict[str, Any], code: int, wall: float) -> None:
    ok = code == 0 and (sweep_dir / point["dir"] / "metrics.json").is_file()
    point["state"] = FINISHED if ok else "failed"
    point["exit_code"] = code
    point["wall_s"] = round(float(point.get("wall_s") or 0.0) + wall, 1)  # summed over resumed attempts
    write_sweep(sweep_dir, sweep)
    log = sweep_dir / point["dir"] / LOG_FILE
    print(
        f"{point['name']}: {point['state']}" + ("" if ok else f" (exit status {code}; see {log})"), flush=True
    )
