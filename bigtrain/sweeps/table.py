"""Tables of runs: `bigtrain runs` (one row per run) and `bigtrain runs compare` (the config keys that
differ next to the final metrics, best run marked); rich on a terminal, plain text, JSON or CSV."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

from bigtrain.files import write_text_atomic
from bigtrain.sweeps.flat import flat_config
from bigtrain.sweeps.runs import Run

DEFAULT_METRIC = "val/loss"


def metric_names(runs: list[Run], first: str | None = None) -> list[str]:
    """The metrics any run has (not the perf/ figures), `first` leading."""
    names = sorted({k for run in runs for k in run.metrics if not k.startswith("perf/")})
    if first in names:
        names.remove(first)
        names.insert(0, first)
    return names


def differing_keys(runs: list[Run]) -> list[str]:
    """Config keys whose values are not the same in every run (a key some runs lack counts as differing)."""
    flats = [flat_config(run.config) for run in runs]
    keys = sorted({k for flat in flats for k in flat})
    return [k for k in keys if len({repr(flat.get(k)) for flat in flats}) > 1]


def best_run(runs: list[Run], metric: str, mode: str = "min") -> Run | None:
    """The run with the lowest (`mode` min) or highest `metric`; None when no run has it."""
    scored = [run for run in runs if metric in run.metrics]
    if not scored:
        return None
    pick = min if mode == "min" else max
    return pick(scored, key=lambda run: run.metrics[metric])


def _label(run: Run) -> str:
    return run.path.name if run.sweep is not None else str(run.path)


def compare_rows(runs: list[Run], metric: str, mode: str) -> list[dict[str, Any]]:
    """One row per run: name, best mark, differing config keys, state, steps, metrics."""
    best = best_run(runs, metric, mode)
    keys, metrics = differing_keys(runs), metric_names(runs, metric)
    rows = []
    for run in runs:
        flat = flat_config(run.config)
        row: dict[str, Any] = {"run": _label(run), "best": run is best}
        row.update({key: flat.get(key) for key in keys})
        row.update({"state": run.state, "steps": run.steps})
        row.update({name: run.metrics.get(name) for name in metrics})
        rows.append(row)
    return rows


def list_rows(runs: list[Run], metric: str | None) -> list[dict[str, Any]]:
    """One row per run for `bigtrain runs`: recipe, state, steps, wall time, headline metrics, path."""
    shown = [m for m in dict.fromkeys([metric, DEFAULT_METRIC, "train/loss"]) if m]
    rows = []
    for run in runs:
        row: dict[str, Any] = {"recipe": run.recipe, "state": run.state, "steps": run.steps}
        row["wall"] = _duration(run.wall_s)
        row.update({name: run.metrics.get(name) for name in shown})
        row["path"] = str(run.path)
        rows.append(row)
    return rows


def sort_runs(runs: list[Run], key: str | None, descending: bool = False) -> list[Run]:
    """Runs ordered by a metric or by recipe/state/steps/wall/path; runs without the value go last."""
    if key is None:
        return runs
    fields = {"recipe": "recipe", "state": "state", "steps": "steps", "wall": "wall_s", "path": "path"}

    def value(run: Run) -> Any:
        return getattr(run, fields[key]) if key in fields else run.metrics.get(key)

    present = sorted((r for r in runs if value(r) is not None), key=value, reverse=descending)
    return present + [r for r in runs if value(r) is None]


def _duration(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def cell(value: Any) -> str:
    """A value as a table shows it: numbers to four significant digits, missing as '-'."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "*" if value else ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def plain(rows: list[dict[str, Any]]) -> str:
    """Rows as space-aligned text, a header line first (for pipes, logs and grep)."""
    if not rows:
        return ""
    columns = list(rows[0])
    table = [columns] + [[cell(row[c]) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    lines = [
        "  ".join(text.ljust(w) for text, w in zip(line, widths, strict=True)).rstrip() for line in table
    ]
    return "\n".join(lines) + "\n"


def show(rows: list[dict[str, Any]], as_json: bool, title: str | None = None) -> None:
    """Print rows: JSON with --json, a rich table on a terminal, plain text otherwise."""
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
    elif not rows:
        print("no runs found", file=sys.stderr)
    elif sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for column in rows[0]:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*(cell(v) for v in row.values()), style="bold green" if row.get("best") else None)
        Console().print(table)
    else:
        print(plain(rows), end="")


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write rows as CSV (full precision), atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else [], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())
