"""Run several `bigtrain fit` commands in one process (or one torchrun launch), to pay start-up once.

usage: python run_fits.py SPEC.json            (one process)
       torchrun --nproc-per-node N run_fits.py SPEC.json

SPEC.json is {name: [bigtrain fit arguments]}. Each fit goes through the real command line (LightningCLI,
recipe expansion, the strategy setting); every rank runs the same fits in the same order, so the process
group formed by the first is reused by the rest. A fit that ends with a UserError leaves its one-line
message in `<run_dir>/error.txt` (every rank fails alike) and the next fit runs.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from bigtrain.errors import UserError
from bigtrain.lightning_cli import run
from bigtrain.strategies.mesh import release_process_group


def _run_dir(args: list[str]) -> Path:
    return Path(args[args.index("--run_dir") + 1])


def main(spec_path: str) -> None:
    """Run every fit of the spec in order."""
    # oneDNN picks its convolution algorithm by batch size on some CPUs (seen on AVX-512 ones): a batch split
    # over 2 ranks then rounds differently from the whole batch at ~1e-7 a step, which Adam's normalised
    # update grows to 8e-5 in the CNN's weights after 20 steps. The equivalence tests check bigtrain's
    # arithmetic (samplers, batch split, synced statistics, gradient averaging), so they use ATen's own
    # kernels, which round the same way at any batch size here (6e-6).
    torch.backends.mkldnn.enabled = False
    spec: dict[str, list[str]] = json.loads(Path(spec_path).read_text())
    for name, args in spec.items():
        start = time.perf_counter()
        try:
            run("fit", args)
        except UserError as err:
            _run_dir(args).mkdir(parents=True, exist_ok=True)
            (_run_dir(args) / "error.txt").write_text(str(err))
        (_run_dir(args) / "seconds.txt").write_text(f"{time.perf_counter() - start:.2f}")
        print(f"run_fits: {name} done", file=sys.stderr, flush=True)
    release_process_group()  # as `bigtrain fit` does when its run ends


if __name__ == "__main__":
    main(sys.argv[1])
