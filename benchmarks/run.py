"""`make bench`: the benchmarks that fit this machine, printed and written to benchmarks/results/.

On a CUDA machine it runs the GPT-2 124M/350M throughput grid (see `make gpu-check`); on a CPU it runs the
same code at CPU scale (the tiny and baby presets, context 256), eager and compiled side by side in one run,
so the ratio is what to read on a noisy shared machine, not the absolute numbers.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import torch


def main() -> None:
    """Run the throughput benchmark at the scale this machine affords."""
    out = Path(__file__).parent / "results" / time.strftime("%Y-%m-%d")
    if torch.cuda.is_available():
        args = ["--device", "cuda", "--presets", "gpt2-124m", "gpt2-350m"]
        args += ["--context", "1024", "--batch", "16"]
    else:
        args = ["--device", "cpu", "--presets", "tiny", "baby", "--context", "256", "--batch", "8"]
        args += ["--dtype", "fp32", "--steps", "10", "--warmup", "3"]
    cmd = [sys.executable, "-m", "benchmarks.throughput", *args, "--out", str(out)]
    sys.exit(subprocess.call(cmd))


if __name__ == "__main__":
    main()
