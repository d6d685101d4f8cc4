"""`make bench`: the benchmarks that fit this machine, in one run, printed and written to one results file.

    python -m benchmarks.run [--rounds 5] [--nanogpt-steps 2000] [--shakespeare DIR] [--out DIR]

Everywhere, each part compares runs side by side: two runs compared start at the same time on their own
cores (swapped every round), or alternate run by run:
- `benchmarks.side_by_side`: a raw loop, plain Lightning and `bigtrain fit`: fixed per-step cost, the
  throughput of the transformer and cnn quickstart recipes, start-up, the time to report an unknown recipe;
- `benchmarks.nanogpt`: nanoGPT's baby GPT for 2,000 steps, `bigtrain fit` against a plain loop (skipped
  with one line when Tiny Shakespeare is not found);
- `benchmarks.parallel`: FSDP against DDP on 2 ranks (step time, memory), and DDP's start-up against one
  process;
- `benchmarks.startup`: every packaged recipe this machine can step, the time to its first optimizer step
  through `bigtrain fit` against a plain Lightning script of the same module, data and trainer settings.
The file `benchmarks/results/bench-<date>.md` holds the machine, date, versions, load average at the start,
the tables and the raw numbers. On a CUDA machine the GPT-2 124M/350M throughput grid follows (see `make
gpu-check`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks import nanogpt, parallel, side_by_side, startup


def sections(args: argparse.Namespace) -> tuple[list[str], dict]:
    """Each part's markdown, and every raw result."""
    texts, data = [], {}
    table, data["side_by_side"] = side_by_side.measure(args.rounds)
    texts.append(f"## Side by side, {args.rounds} rounds\n\n{table}")
    folder = nanogpt.shakespeare_dir(args.shakespeare)
    if folder is None:
        texts.append("## nanoGPT protocol\n\nSkipped: no Tiny Shakespeare input.txt (--shakespeare DIR or "
                     "BIGTRAIN_TEST_DATA).")  # fmt: skip
    else:
        data["nanogpt"] = nanogpt.measure(folder, args.nanogpt_steps, args.nanogpt_rounds)
        texts.append(f"## nanoGPT protocol\n\n{nanogpt.table(data['nanogpt'], args.nanogpt_steps)}")
    data["parallel"] = parallel.measure(args.parallel_rounds, args.parallel_steps)
    texts.append(
        f"## Two ranks on CPU, {args.parallel_rounds} rounds alternated\n\n{parallel.SETUP}\n\n"
        f"{parallel.table(data['parallel'])}\n\nGoal: DDP's start-up (rank 0) within 1.5x one process's."
    )
    root = Path(args.shakespeare).parent if args.shakespeare else startup.default_data()
    data["startup"] = startup.measure(startup.recipes(root), args.startup_rounds, root)
    texts.append(
        f"## Start-up per recipe, {args.startup_rounds} rounds alternated\n\n{startup.SETUP}\n\n"
        f"{startup.table(data['startup'])}"
    )
    return texts, data


def main() -> None:
    """Run every part, print the tables, write the results file; then the GPU grid where there is a GPU."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5, help="side-by-side rounds")
    parser.add_argument("--nanogpt-rounds", type=int, default=2)
    parser.add_argument("--parallel-rounds", type=int, default=3)
    parser.add_argument("--startup-rounds", type=int, default=3)
    parser.add_argument("--nanogpt-steps", type=int, default=2000)
    parser.add_argument("--parallel-steps", type=int, default=80)
    parser.add_argument("--shakespeare", help="folder with Tiny Shakespeare's input.txt")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    info = side_by_side.machine()  # before any run: the load average at the start
    start = time.perf_counter()
    texts, data = sections(args)
    info["duration"] = f"{(time.perf_counter() - start) / 60:.1f} min"
    head = "\n".join(f"- {k}: {v}" for k, v in info.items())
    body = "\n\n".join([f"# make bench\n\n{head}", *texts])
    print(body, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw = json.dumps(data, indent=1, default=str)
    (out / f"bench-{time.strftime('%Y-%m-%d-%H%M', time.gmtime())}.md").write_text(
        f"{body}\n\n```json\n{raw}\n```\n"
    )
    code = 0
    if torch.cuda.is_available():
        grid = ["--device", "cuda", "--presets", "gpt2-124m", "gpt2-350m", "--context", "1024"]
        grid += ["--batch", "16", "--out", str(out / time.strftime("%Y-%m-%d"))]
        code = subprocess.call([sys.executable, "-m", "benchmarks.throughput", *grid])
    sys.exit(code)


if __name__ == "__main__":
    main()
