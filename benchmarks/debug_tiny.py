"""Wall time of `bigtrain debug RECIPE --tiny` on every packaged recipe (one process each, run in turn).

    python -m benchmarks.debug_tiny [RECIPE ...]

Prints one line per recipe: the exit status and the seconds from start to exit (start-up included).
"""

from __future__ import annotations

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
            start = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "bigtrain", "debug", name, "--tiny"], cwd=runs, capture_output=True
            )
            seconds = time.perf_counter() - start
            worst = max(worst, done.returncode)
            print(f"{name:<36} exit {done.returncode}  {seconds:6.1f} s", flush=True)
    return 1 if worst else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
