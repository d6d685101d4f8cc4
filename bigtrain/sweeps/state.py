"""`<sweep>/sweep.yaml`: the recipe, the overrides, and each point's values, directory and state."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from bigtrain.errors import UserError
from bigtrain.files import write_text_atomic

SWEEP_FILE = "sweep.yaml"
FINISHED = "finished"
STATES = ("pending", "running", FINISHED, "failed", "submitted")


def point_name(index: int) -> str:
    """`point-000`, `point-001`, ...: the point's directory under the sweep (a SLURM array task's index)."""
    return f"point-{index:03d}"


def new_sweep(recipe: str, overrides: list[str], points: list[dict[str, str]]) -> dict[str, Any]:
    """A fresh sweep record, every point pending."""
    return {
        "recipe": recipe,
        "overrides": list(overrides),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "points": [
            {"name": point_name(i), "dir": point_name(i), "values": dict(values), "state": "pending"}
            for i, values in enumerate(points)
        ],
    }


def read_sweep(sweep_dir: Path) -> dict[str, Any] | None:
    """The sweep.yaml in `sweep_dir` (None when there is none); one line if it is not a sweep record."""
    path = sweep_dir / SWEEP_FILE
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not readable YAML ({type(err).__name__}); move it away") from None
    if not isinstance(data, dict) or not isinstance(data.get("points"), list):
        raise UserError(f"{path} is not a bigtrain sweep record (no list of points); move it away")
    for index, point in enumerate(data["points"]):
        name = point.get("name") if isinstance(point, dict) else None
        # The name becomes a path under the sweep directory: only the form this module writes.
        if name != point_name(index) or point.get("dir") != name or not isinstance(point.get("values"), dict):
            raise UserError(f"{path}: point {name!r} is not named point-NNN in order; move the file away")
    return data


def write_sweep(sweep_dir: Path, sweep: dict[str, Any]) -> None:
    """Write sweep.yaml atomically (a reader never sees half of it)."""
    text = yaml.safe_dump(sweep, sort_keys=False, default_flow_style=False)
    write_text_atomic(sweep_dir / SWEEP_FILE, text)


def same_sweep(stored: dict[str, Any], fresh: dict[str, Any]) -> bool:
    """Whether two records describe the same runs (recipe, overrides, points' values in order)."""
    keys = ("recipe", "overrides")
    if any(stored.get(k) != fresh.get(k) for k in keys):
        return False
    return [p.get("values") for p in stored["points"]] == [p["values"] for p in fresh["points"]]


def reuse_or_create(sweep_dir: Path, fresh: dict[str, Any]) -> dict[str, Any]:
    """The stored record if it is this sweep (to resume it), else `fresh` in a new directory; refuses a
    directory that holds another sweep or anything else."""
    stored = read_sweep(sweep_dir)
    if stored is not None:
        if not same_sweep(stored, fresh):
            raise UserError(
                f"{sweep_dir / SWEEP_FILE} records a different sweep (recipe, overrides or points differ); "
                "give the same options to resume it, or choose another --sweep-dir"
            )
        return stored
    if sweep_dir.exists() and any(sweep_dir.iterdir()):
        raise UserError(f"sweep directory {sweep_dir} is not empty and holds no {SWEEP_FILE}; choose another")
    return fresh
