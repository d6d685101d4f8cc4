"""`make bench`: the benchmarks that fit this machine, printed and written to benchmarks/results/.

Everywhere: `benchmarks.side_by_side` (a raw loop, plain Lightning and `bigtrain fit`, alternated: fixed
per-step cost, recipe throughput, start-up, the time to report an unknown recipe), about 10 minutes on 2
CPU cores. On a CUDA machine also the GPT-2 124M/350M throughput grid (see `make gpu-check`).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import torch


def main() -> None:
    """Run the side-by-side suite, and the GPU throughput grid where there is a GPU."""
    results = Path(__file__).parent / "results"
    code = subprocess.call([sys.executable, "-m", "benchmarks.side_by_side", "--out", str(results)])
    if torch.cuda.is_available():
        args = ["--device", "cuda", "--presets", "gpt2-124m", "gpt2-350m", "--context", "1024"]
        args += ["--batch", "16", "--out", str(results / time.strftime("%Y-%m-%d"))]
        code = code or subprocess.call([sys.executable, "-m", "benchmarks.throughput", *args])
    sys.exit(code)


if __name__ == "__main__":
    main()
