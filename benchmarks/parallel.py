"""Two ranks on CPU (gloo): FSDP against DDP, and start-up of DDP against one process, through `bigtrain fit`.

    python -m benchmarks.parallel [--rounds 3] [--steps 80] [--out result.json]

Each round runs, in turn, `transformer/builtin-char` widened to a 3.2M-parameter GPT (4 layers, 256 wide, so
that sharding shows in memory) at a global batch of 8: on one process, then `--trainer.strategy ddp` and
`fsdp` on 2 ranks, one thread per rank. Every rank reports the median step time from step 20 on, its peak
RSS, its local bytes of parameters and optimizer state (FSDP holds half of each; RSS also counts the
runtime, and freed memory the allocator keeps), and its process age at the end of the first optimizer step
(start-up; for 2 ranks, rank 0's: the process the user started). The table shows medians over rounds.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer

from benchmarks.contenders import bench_env, process_age_s

WARMUP = 20
"""Steps left out of the step-time median."""
NET = ["--model.net.n_layer", "4", "--model.net.n_head", "4", "--model.net.n_embd", "256"]
RUNS = {
    "one process": ["--trainer.devices", "1"],
    "ddp, 2 ranks": ["--trainer.devices", "2", "--trainer.strategy", "ddp"],
    "fsdp, 2 ranks": ["--trainer.devices", "2", "--trainer.strategy", "fsdp"],
}
"""Each run's strategy arguments."""
SETUP = (
    "`transformer/builtin-char` widened to 4 layers, 256 wide (3.2M parameters), global batch 8, gloo, one "
    "thread per rank. ms/step: median from step 20 on; peak RSS counts the runtime too; params + optimizer "
    "state: this rank's local bytes; start-up: rank 0's process age at the end of the first optimizer step."
)
"""What the table's runs are, for the results file."""


class RankProbe(Callback):
    """Writes `<folder>/rank<R>.json`: median step ms, peak RSS, local state MiB and start-up seconds."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.starts: list[float] = []
        self.startup_s: float | None = None

    def on_train_batch_start(self, *args) -> None:  # noqa: ANN002, D102
        self.starts.append(time.perf_counter())

    def on_train_batch_end(self, *args) -> None:  # noqa: ANN002, D102
        if self.startup_s is None:
            self.startup_s = process_age_s()

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        kept = self.starts[WARMUP:]
        steps = [b - a for a, b in zip(kept, kept[1:], strict=False)]
        result = {
            "step_ms": 1e3 * statistics.median(steps),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "state_mib": local_state_bytes(pl_module, trainer.optimizers) / 2**20,
            "startup_s": self.startup_s,
        }
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(result))


def local_state_bytes(module: LightningModule, optimizers: list) -> int:
    """Bytes of this rank's parameters and optimizer state (a sharded tensor counts its local shard)."""
    import torch

    def local(t: torch.Tensor) -> torch.Tensor:
        return t.to_local() if hasattr(t, "to_local") else t

    tensors = list(module.parameters())
    tensors += [v for opt in optimizers for state in opt.state.values() for v in state.values()]
    return sum(local(t).numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def one_run(extra: list[str], steps: int) -> dict[int, dict]:
    """One `bigtrain fit` run in a fresh process; {rank: its probe's result}."""
    env = bench_env()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "bigtrain", "fit", "--recipe", "transformer/builtin-char", *NET,
               "--data.batch_size", "8", "--trainer.accelerator", "cpu", "--trainer.max_steps", str(steps),
               "--trainer.limit_val_batches", "0", "--model.sample_tokens", "0", "--run_dir", f"{tmp}/run",
               "--trainer.callbacks+=benchmarks.parallel.RankProbe", "--trainer.callbacks.folder", tmp,
               *extra]  # fmt: skip
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)  # noqa: S603 (our own CLI)
        if done.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
        return {int(p.stem[4:]): json.loads(p.read_text()) for p in sorted(Path(tmp).glob("rank*.json"))}


def measure(rounds: int, steps: int) -> dict[str, list[dict[int, dict]]]:
    """Every run once per round, in turn; {run: [{rank: result} per round]}."""
    results: dict[str, list[dict[int, dict]]] = {name: [] for name in RUNS}
    for r in range(rounds):
        for name, extra in RUNS.items():
            results[name].append(one_run(extra, steps))
            print(f"round {r + 1}: {name} {results[name][-1]}", flush=True)
    return results


def table(results: dict[str, list[dict[int, dict]]]) -> str:
    """Medians over rounds: per-rank step time and memory, and rank 0's start-up against one process."""

    def med(name: str, rank: int, field: str) -> float:
        return statistics.median(run[rank][field] for run in results[name])

    lines = [
        "| run | rank | ms/step | peak RSS (MiB) | params + optimizer state (MiB) | start-up (s) | vs one |",
        "|---|---|---|---|---|---|---|",
    ]
    alone = med("one process", 0, "startup_s")
    for name, runs in results.items():
        for rank in sorted(runs[0]):
            start = med(name, rank, "startup_s")  # a spawned rank's age starts late: rank 0's only
            startup = f"{start:.2f} | {start / alone:.2f}x" if rank == 0 else "- | -"
            step, rss, state = (med(name, rank, f) for f in ("step_ms", "peak_rss_mib", "state_mib"))
            lines.append(f"| {name} | {rank} | {step:.1f} | {rss:.0f} | {state:.1f} | {startup} |")
    return "\n".join(lines)


def main() -> None:
    """Run the rounds and print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--out", help="write the results here as JSON")
    args = parser.parse_args()
    results = measure(args.rounds, args.steps)
    print(table(results))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.exit(main())
