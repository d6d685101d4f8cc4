"""Side by side, alternated: a raw PyTorch loop, plain Lightning and `bigtrain fit` on the same GPT and data.

    python -m benchmarks.side_by_side [--rounds 3] [--out benchmarks/results]

Each run is a fresh process (`benchmarks.contenders`); every round runs each contender once, in turn, so
machine noise hits them alike; the table shows the median over rounds. Measured:
- fixed per-step cost: the 1-layer 16-wide GPT at batch 2 (median step time from step 200 on, in CPU time
  of the process and in wall time);
- throughput of `transformer/builtin-char` and `cnn/glyphs` as packaged against a raw loop of the same
  model, optimizer and data: neither family has a `small` preset, so these are their quickstart sizes (the
  tiny presets: a 2-layer 64-wide GPT at batch 32, a 78k-parameter ResNet at batch 64);
- start-up: process start to the end of the first optimizer step, of every run above;
- the time `bigtrain fit` takes to report an unknown recipe.
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

CASES = [
    ("fixed", "raw", 1200),
    ("fixed", "lightning", 1200),
    ("fixed", "bigtrain", 1200),
    ("recipe", "raw", 500),
    ("recipe", "bigtrain", 500),
    ("cnn", "raw", 400),
    ("cnn", "bigtrain", 400),
]
"""(net, contender, steps) of each run of a round."""
THROUGHPUT = ("recipe", "cnn")
"""The recipes whose throughput is compared (wall time)."""
LABELS = {
    "fixed": "fixed cost, 1-layer 16-wide GPT, batch 2",
    "recipe": "transformer/builtin-char",
    "cnn": "cnn/glyphs",
}


def _env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    return env


def one_run(net: str, contender: str, steps: int) -> dict:
    """Run one contender in a fresh process; its {"step_ms", "cpu_ms", "startup_s"}."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "benchmarks.contenders", contender, "--net", net, "--steps", str(steps)]
        done = subprocess.run([*cmd, "--out", str(out)], env=_env(), capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
        return json.loads(out.read_text())


def typo_seconds() -> float:
    """Wall time of `bigtrain fit --recipe cnn/glyps` (an unknown recipe) to its one-line error."""
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "bigtrain", "fit", "--recipe", "cnn/glyps"]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
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


def table(results: dict[tuple[str, str], list[dict]], typos: list[float]) -> str:
    """The markdown table of medians over rounds."""

    def med(key: tuple[str, str], field: str) -> float:
        return statistics.median(r[field] for r in results[key])

    lines = [
        "| run | CPU ms/step | vs raw loop | wall ms/step | vs raw loop | start-up to first step (s) |",
        "|---|---|---|---|---|---|",
    ]
    for net, contender, _ in CASES:
        cpu, wall = med((net, contender), "cpu_ms"), med((net, contender), "step_ms")
        cpu_raw, wall_raw = med((net, "raw"), "cpu_ms"), med((net, "raw"), "step_ms")
        what = LABELS[net]
        lines.append(
            f"| {what}: {contender} | {cpu:.2f} | {cpu / cpu_raw:.2f}x | {wall:.2f} | {wall / wall_raw:.2f}x "
            f"| {med((net, contender), 'startup_s'):.2f} |"
        )
    lines.append("")
    shares = [
        f"{LABELS[n]} {med((n, 'raw'), 'step_ms') / med((n, 'bigtrain'), 'step_ms'):.3f}" for n in THROUGHPUT
    ]
    lines.append(f"bigtrain's throughput as a share of the raw loop's (goal >= 0.97): {', '.join(shares)}.")
    lines.append(f"Unknown recipe reported in {statistics.median(typos):.2f} s (median of {len(typos)}).")
    return "\n".join(lines)


def measure(rounds: int) -> tuple[str, dict]:
    """Run the rounds; (the table, the raw results)."""
    results: dict[tuple[str, str], list[dict]] = {}
    typos = []
    for r in range(rounds):
        for net, contender, steps in CASES:
            results.setdefault((net, contender), []).append(one_run(net, contender, steps))
            print(f"round {r + 1}: {net} {contender} {results[(net, contender)][-1]}", flush=True)
        typos.append(typo_seconds())
    runs = {f"{net}/{c}": results[(net, c)] for net, c, _ in CASES}
    return table(results, typos), {"runs": runs, "typo_s": typos}


def main() -> None:
    """Run the rounds, print the table, write the results file."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    info = machine()
    text, data = measure(args.rounds)
    print(text)
    head = "\n".join(f"- {k}: {v}" for k, v in info.items())
    body = f"# Side by side, {args.rounds} rounds alternated\n\n{head}\n\n{text}\n\n```json\n"
    body += json.dumps(data, indent=1) + "\n```\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"side-by-side-{time.strftime('%Y-%m-%d-%H%M', time.gmtime())}.md").write_text(body)


if __name__ == "__main__":
    main()
