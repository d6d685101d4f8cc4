"""Wall time of `bigtrain debug RECIPE --tiny` on every packaged recipe (one process each, run in turn).

    python -m benchmarks.debug_tiny [RECIPE ...]

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


def main(names: list[str]) -> int:
    """Time each recipe; the exit status is 1 when any debug run did not pass."""
    names = names or sorted(str(p.relative_to(RECIPES).with_suffix("")) for p in RECIPES.glob("*/*.yaml"))
    worst = 0
    with tempfile.TemporaryDirectory() as runs:
        for name in names:
            start, cpu = time.perf_counter(), _child_cpu()
            done = subprocess.run(
                [sys.executable, "-m", "bigtrain", "debug", name, "--tiny"], cwd=runs, capture_output=True
            )
            seconds, cpu = time.perf_counter() - start, _child_cpu() - cpu
            worst = max(worst, done.returncode)
            print(f"{name:<36} exit {done.returncode}  {seconds:6.1f} s wall  {cpu:6.1f} s CPU", flush=True)
    return 1 if worst else 0


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
