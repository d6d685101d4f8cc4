"""Wall time of one bigtrain command on every packaged recipe (one process each, run in turn).

    python -m benchmarks.per_recipe debug [RECIPE ...]     # `bigtrain debug RECIPE --tiny` (60 s goal)
    python -m benchmarks.per_recipe check [RECIPE ...]     # `bigtrain recipes check RECIPE` (10 s goal)

Prints one line per recipe: the exit status, the wall seconds from start to exit (start-up included) and
the CPU seconds the run used (user + system; on a busy shared machine the closer guide to an idle one).
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


COMMANDS = {"debug": ["debug", "{}", "--tiny"], "check": ["recipes", "check", "{}"]}


def main(command: str, names: list[str]) -> int:
    """Time each recipe; the exit status is 1 when any run did not pass."""
    names = names or sorted(str(p.relative_to(RECIPES).with_suffix("")) for p in RECIPES.glob("*/*.yaml"))
    worst = 0
    with tempfile.TemporaryDirectory() as runs:
        for name in names:
            start, cpu = time.perf_counter(), _child_cpu()
            done = subprocess.run(
                [sys.executable, "-m", "bigtrain", *(a.format(name) for a in COMMANDS[command])],
                cwd=runs,
                capture_output=True,
            )
            seconds, cpu = time.perf_counter() - start, _child_cpu() - cpu
            worst = max(worst, done.returncode)
            print(f"{name:<36} exit {done.returncode}  {seconds:6.1f} s wall  {cpu:6.1f} s CPU", flush=True)
    return 1 if worst else 0


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: python -m benchmarks.per_recipe {{{'|'.join(COMMANDS)}}} [RECIPE ...]")
    sys.exit(main(sys.argv[1], sys.argv[2:]))
