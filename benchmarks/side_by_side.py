"""Side by side: a raw PyTorch loop, plain Lightning and `bigtrain fit` on the same GPT and data.

    python -m benchmarks.side_by_side [--rounds 5] [--out benchmarks/results]

Each run is a fresh process (`benchmarks.contenders`), one thread each. The two runs compared are started
at the same time, each pinned to its own core, and the cores are swapped every round: this machine's
speed drifts by several percent from one minute to the next, which hits two runs at once alike. A
comparison is the median over rounds of each round's ratio. Measured:
- fixed per-step cost: the 1-layer 16-wide GPT at batch 2, plain Lightning against `bigtrain fit` (median
  step time from step 200 on, in CPU time of the process and in wall time); the raw loop runs alone, for
  reference;
- throughput of `transformer/builtin-char` and `cnn/glyphs` as packaged against a raw loop of the same
  model, optimizer and data: neither family has a `small` preset, so these are their quickstart sizes (the
  tiny presets: a 2-layer 64-wide GPT at batch 32, a 78k-parameter ResNet at batch 64);
- start-up: process start to the end of the first optimizer step, of every run above;
- the time `bigtrain fit` takes to report an unknown recipe.
On a machine with one core the pairs run one after the other.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.contenders import bench_env, run_pinned

PAIRS = [
    ("fixed", ("lightning", "bigtrain"), 1200),
    ("fixed", ("raw",), 1200),
    ("recipe", ("raw", "bigtrain"), 500),
    ("cnn", ("raw", "bigtrain"), 400),
]
"""(net, contenders run at once, steps) of each round."""
CASES = [(net, c) for net, together, _ in PAIRS for c in together]
COMPARED = {"fixed": ("lightning", "bigtrain"), "recipe": ("raw", "bigtrain"), "cnn": ("raw", "bigtrain")}
"""Per net, (the reference, bigtrain): measured at once, compared round by round."""
LABELS = {
    "fixed": "fixed cost, 1-layer 16-wide GPT, batch 2",
    "recipe": "transformer/builtin-char",
    "cnn": "cnn/glyphs",
}


def run_together(net: str, contenders: tuple[str, ...], steps: int, shift: int) -> dict[str, dict]:
    """Start the contenders at once, each pinned to its own core (the cores rotated by `shift`); their
    {"step_ms", "cpu_ms", "startup_s"}."""
    with tempfile.TemporaryDirectory() as tmp:
        commands = {
            c: [
                sys.executable,
                "-m",
                "benchmarks.contenders",
                c,
                "--net",
                net,
                "--steps",
                str(steps),
                "--out",
                f"{tmp}/{c}.json",
            ]  # fmt: skip
            for c in contenders
        }
        run_pinned(commands, shift, f"--net {net}")
        return {c: json.loads(Path(f"{tmp}/{c}.json").read_text()) for c in commands}


def typo_seconds() -> float:
    """Wall time of `bigtrain fit --recipe cnn/glyps` (an unknown recipe) to its one-line error."""
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "bigtrain", "fit", "--recipe", "cnn/glyps"]
    done = subprocess.run(cmd, env=bench_env(), capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    return time.perf_counter() - start


def machine() -> dict[str, str]:
    """Where and with what the numbers were measured."""
    import lightning
    import torch

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())  # fmt: skip
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": f"{cpu}, {os.cpu_count()} cores, one thread per process",
        "load average at start": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "commit": commit.strip(),
    }


def ratio(results: dict[tuple[str, str], list[dict]], net: str) -> float:
    """bigtrain's step time over its reference's (plain Lightning, or the raw loop), median of the rounds."""
    reference, ours = COMPARED[net]
    pairs = zip(results[(net, reference)], results[(net, ours)], strict=True)
    return statistics.median(b["step_ms"] / a["step_ms"] for a, b in pairs)


def table(results: dict[tuple[str, str], list[dict]], typos: list[float]) -> str:
    """The markdown table of medians over rounds, and the round-by-round comparisons."""

    def med(key: tuple[str, str], field: str) -> float:
        return statistics.median(r[field] for r in results[key])

    rounds = len(results[CASES[0]])
    lines = [
        "| run | CPU ms/step | vs raw loop | wall ms/step | vs raw loop | start-up to first step (s) |",
        "|---|---|---|---|---|---|",
    ]
    for net, contender in sorted(CASES, key=lambda c: (list(LABELS).index(c[0]), c[1] != "raw")):
        cpu, wall = med((net, contender), "cpu_ms"), med((net, contender), "step_ms")
        cpu_raw, wall_raw = med((net, "raw"), "cpu_ms"), med((net, "raw"), "step_ms")
        lines.append(
            f"| {LABELS[net]}: {contender} | {cpu:.2f} | {cpu / cpu_raw:.2f}x | {wall:.2f} | "
            f"{wall / wall_raw:.2f}x | {med((net, contender), 'startup_s'):.2f} |"
        )
    lines.append("")
    lines.append(
        f"Round by round, each pair at once (median of {rounds} rounds' ratios): bigtrain's fixed cost is "
        f"{ratio(results, 'fixed'):.3f}x plain Lightning's (goal <= 1); its throughput as a share of the raw "
        "loop's (goal >= 0.97): "
        + ", ".join(f"{LABELS[n]} {1 / ratio(results, n):.3f}" for n in ("recipe", "cnn"))
        + "."
    )
    lines.append(f"Unknown recipe reported in {statistics.median(typos):.2f} s (median of {len(typos)}).")
    return "\n".join(lines)


def measure(rounds: int) -> tuple[str, dict]:
    """Run the rounds; (the table, the raw results)."""
    results: dict[tuple[str, str], list[dict]] = {}
    typos = []
    for r in range(rounds):
        for net, together, steps in PAIRS:
            for contender, result in run_together(net, together, steps, shift=r).items():
                results.setdefault((net, contender), []).append(result)
                print(f"round {r + 1}: {net} {contender} {result}", flush=True)
        typos.append(typo_seconds())
    runs = {f"{net}/{c}": results[(net, c)] for net, c in CASES}
    return table(results, typos), {"runs": runs, "typo_s": typos}


def main() -> None:
    """Run the rounds, print the table, write the results file."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    info = machine()
    text, data = measure(args.rounds)
    print(text)
    head = "\n".join(f"- {k}: {v}" for k, v in info.items())
    body = f"# Side by side, {args.rounds} rounds\n\n{head}\n\n{text}\n\n```json\n"
    body += json.dumps(data, indent=1) + "\n```\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"side-by-side-{time.strftime('%Y-%m-%d-%H%M', time.gmtime())}.md").write_text(body)


if __name__ == "__main__":
    main()
