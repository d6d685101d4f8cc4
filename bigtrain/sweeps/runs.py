"""The runs under a folder: what each ran (recipe, config), how it stands (running, finished, failed,
preempted), how far it got, and its final metrics, read from the files a run leaves behind."""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bigtrain.errors import UserError
from bigtrain.run_lock import LOCK_FILE, holder
from bigtrain.sweeps.state import SWEEP_FILE, read_sweep

RUN_FILES = ("config.yaml", "metrics.json", LOCK_FILE)
"""A folder holding any of these is a run directory."""
_SKIP_DIRS = {"checkpoints", "__pycache__", ".git"}
_STEP = re.compile(r"step=(\d+)")
_EVENTS = re.compile(r"events\.out\.tfevents\.(\d+)\.")
STOPS = {"preempt-step=": "preempted", "nonfinite-step=": "failed"}
"""Checkpoints a run saves as it stops early, and what such a stop means when it is the run's last word."""


@dataclass
class Run:
    """One run directory as `bigtrain runs` shows it."""

    path: Path
    recipe: str = "?"
    state: str = "failed"
    steps: int | None = None
    wall_s: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    sweep: Path | None = None

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict (paths as strings; config left out: `runs compare` shows what differs)."""
        return {
            "path": str(self.path),
            "recipe": self.recipe,
            "state": self.state,
            "steps": self.steps,
            "wall_s": self.wall_s,
            "metrics": self.metrics,
            "sweep": str(self.sweep) if self.sweep else None,
        }


def find_runs(root: Path) -> list[Path]:
    """Every run directory at or under `root`, sorted by path (checkpoint folders are not searched)."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        # A sweep directory holds a lock while it runs, but its runs are the points below it.
        is_sweep = SWEEP_FILE in files and "config.yaml" not in files
        if any(name in files for name in RUN_FILES) and not is_sweep:
            found.append(Path(folder))
    return sorted(found)


def _load(path: Path, loader: Any) -> Any:
    try:
        return loader(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError, UnicodeDecodeError, yaml.YAMLError):
        return None  # a half-written or foreign file: the run shows without it


def _last_stop(run_dir: Path) -> tuple[int, str] | None:
    """(step, state) of the newest early-stop checkpoint, if any."""
    stops = []
    for path in (run_dir / "checkpoints").glob("*-step=*"):
        for prefix, state in STOPS.items():
            if path.name.startswith(prefix) and (match := _STEP.search(path.name)):
                stops.append((int(match.group(1)), state))
    return max(stops) if stops else None


def _steps(run_dir: Path, metrics: dict[str, Any]) -> int | None:
    if isinstance(metrics.get("global_step"), (int, float)):
        return int(metrics["global_step"])
    steps = [
        int(m.group(1)) for p in (run_dir / "checkpoints").glob("*step=*") if (m := _STEP.search(p.name))
    ]
    return max(steps) if steps else None


def _wall_s(run_dir: Path, running: bool) -> float | None:
    """From the first TensorBoard event file's time stamp (its name) to the last metrics (or now)."""
    starts = [int(m.group(1)) for p in run_dir.glob("events.out.tfevents.*") if (m := _EVENTS.match(p.name))]
    metrics = run_dir / "metrics.json"
    if not starts or not (running or metrics.is_file()):
        return None
    end = time.time() if running else metrics.stat().st_mtime
    return round(max(0.0, end - min(starts)), 1)


def _state(run_dir: Path, metrics: dict[str, Any], steps: int | None, recorded: str | None) -> str:
    if holder(run_dir) is not None:
        return "running"
    stop = _last_stop(run_dir)
    if stop is not None and stop[0] >= (steps or 0):
        return stop[1]  # its last act was to stop early (a later finish would have moved the step on)
    if recorded == "failed" or not metrics:
        return "failed"
    return "finished"


def read_run(run_dir: Path, sweeps: dict[Path, dict[str, Any] | None] | None = None) -> Run:
    """What the files of one run directory say (`sweeps` caches the sweep.yaml of parent folders)."""
    sweeps = {} if sweeps is None else sweeps
    config = _load(run_dir / "config.yaml", yaml.safe_load)
    config = config if isinstance(config, dict) else {}
    raw = _load(run_dir / "metrics.json", json.loads)
    raw = raw if isinstance(raw, dict) else {}
    metrics = {k: float(v) for k, v in raw.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    parent = run_dir.parent
    if parent not in sweeps:
        try:
            sweeps[parent] = read_sweep(parent) if (parent / SWEEP_FILE).is_file() else None
        except UserError:  # a broken sweep.yaml: the run still shows, outside a sweep
            sweeps[parent] = None
    sweep = sweeps[parent]
    point = next((p for p in (sweep or {}).get("points", []) if p["dir"] == run_dir.name), {})
    recorded = point.get("state")
    steps = _steps(run_dir, raw)
    state = _state(run_dir, metrics, steps, recorded)
    # A sweep times its points from start to exit (sweep.yaml); a lone run's time comes from its files.
    wall = point.get("wall_s") if state != "running" else None
    wall = wall if wall is not None else _wall_s(run_dir, state == "running")
    return Run(
        path=run_dir,
        recipe=str(config.get("recipe_name") or "?"),
        state=state,
        steps=steps,
        wall_s=wall,
        metrics={k: v for k, v in metrics.items() if k not in ("global_step", "epoch")},
        config=config,
        sweep=parent if sweep is not None else None,
    )


def read_runs(paths: list[Path]) -> list[Run]:
    """read_run of each path, sharing the sweep records."""
    sweeps: dict[Path, dict[str, Any] | None] = {}
    return [read_run(path, sweeps) for path in paths]
