"""The debug report: one table (plain lines off a terminal), and `debug.json` in the run directory."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bigtrain.debug.checks import Verdict
from bigtrain.files import write_json_atomic

STYLE = {"pass": "green", "FAIL": "bold red", "skip": "yellow"}


def passed(verdicts: list[Verdict]) -> bool:
    """Whether no check failed (skipped checks do not fail a run)."""
    return all(v.status != "FAIL" for v in verdicts)


def write(run_dir: Path, recipe: str, changes: list[str], verdicts: list[Verdict]) -> Path:
    """`debug.json`: marks the run directory as a debug run and keeps every check's details."""
    path = Path(run_dir) / "debug.json"
    body = {
        "debug": True,
        "recipe": recipe,
        "passed": passed(verdicts),
        "changes": changes,
        "checks": [_plain(asdict(v)) for v in verdicts],
    }
    write_json_atomic(path, body)
    return path


def _plain(value: Any) -> Any:
    """JSON-safe: tuples as lists, NaN/Inf and dtypes as strings."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def show(recipe: str, description: str, changes: list[str], verdicts: list[Verdict], run_dir: Path,
         details: bool = False, notes: list[str] | None = None) -> None:  # fmt: skip
    """Print the report: what was shrunk, one row per check, the verdict, the run directory; `notes` are
    lines under the first (a replay's checkpoint and batch)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    lines = [f"bigtrain debug {recipe}: {description}", *(notes or [])]
    lines += ["changed: " + "; ".join(changes)] if changes else ["changed: nothing"]
    verdict = "all checks passed" if passed(verdicts) else "a check FAILED"
    if not console.is_terminal:
        print("\n".join(lines))
        for v in verdicts:
            print(f"{v.check:<7} {v.status:<5} {v.summary}")
        print(f"{verdict}; details in {run_dir / 'debug.json'}")
        if details:
            _print_details(verdicts, print)
        return
    for line in lines:
        console.print(line, markup=False)
    table = Table("check", "verdict", "finding", expand=False)
    for v in verdicts:
        table.add_row(v.check, f"[{STYLE.get(v.status, '')}]{v.status}[/]", v.summary)
    console.print(table)
    console.print(f"{verdict}; details in {run_dir / 'debug.json'}", markup=False)
    if details:
        _print_details(verdicts, lambda s: console.print(s, markup=False))


def _print_details(verdicts: list[Verdict], out: Any) -> None:
    """`--details`: the module/output-shape table, per-block gradient norms, the top operators."""
    for v in verdicts:
        if v.check == "shapes":
            out("module outputs (step 0):")
            for name, shape, params in v.details.get("modules", []):
                out(f"  {name:<40} {shape:<20} {params:>12,}")
        if v.check == "grads" and v.details.get("block_norms"):
            out("largest gradient norm per block (first steps):")
            for name, norm in v.details["block_norms"].items():
                out(f"  {name:<40} {norm:.3g}")
        if v.check == "speed" and v.details.get("top_ops"):
            out("top operators (self time over the profiled steps):")
            for name, ms, count in v.details["top_ops"]:
                out(f"  {name:<40} {ms:9.2f} ms {count:>6} calls")
