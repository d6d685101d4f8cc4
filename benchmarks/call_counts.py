"""Python calls per training step that is not a logging step: plain Lightning against `bigtrain fit`.

    python -m benchmarks.call_counts [--steps 400] [--top 40]

Each contender (`benchmarks.contenders`, the 1-layer 16-wide GPT at batch 2) runs in this process under
cProfile, switched on for whole loop iterations (from one `on_train_batch_start` to the next) after
warm-up, and only for steps whose metrics the loggers do not write. Call counts, unlike times, do not depend
on the machine's load: the table lists the functions whose calls per step differ between the two, most
extra calls first, which is where bigtrain's fixed per-step cost beyond Lightning's comes from.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import re
import sys
from collections import Counter
from pathlib import Path

import benchmarks.contenders as contenders

ROOT = f"{Path(__file__).resolve().parents[1]}/"
LOG_EVERY = 20
"""log_every_n_steps of both contenders."""
FIRST = 200
"""First step profiled (after warm-up)."""


class ProfilingClock(contenders.Clock):
    """The contenders' step clock, also switching a profiler on for the non-logging steps from FIRST on."""

    def __init__(self, last: int) -> None:
        super().__init__()
        self.last = last  # the run's final step ends in the loop's exit (saves, teardown): not profiled
        self.profile = cProfile.Profile()
        self.on = False
        self.steps = 0

    def step_started(self) -> None:  # noqa: D102
        if self.on:
            self.profile.disable()
            self.on = False
        step = len(self.times)  # the optimizer step this batch makes (no accumulation)
        super().step_started()
        if FIRST <= step < self.last and (step + 1) % LOG_EVERY:
            self.steps += 1
            self.on = True
            self.profile.enable()


def per_step_calls(contender: str, steps: int) -> Counter[str]:
    """{function: calls per profiled step} of one contender's run."""
    clock = ProfilingClock(last=steps - 1)
    contenders.CLOCK = clock
    getattr(contenders, contender)("fixed", steps)
    stats = pstats.Stats(clock.profile).stats  # type: ignore[attr-defined]
    counts: Counter[str] = Counter()
    for (file, line, name), (_, ncalls, *_rest) in stats.items():
        # Installed packages and the standard library by their import path, the project's files relative.
        where = re.sub(r".*/(site-packages|lib/python3\.\d+)/", "", file).removeprefix(ROOT)
        counts[f"{name} ({where}:{line})"] += ncalls / clock.steps
    return counts


def main() -> None:
    """Profile both contenders and print the functions whose calls per step differ most."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    plain = per_step_calls("lightning", args.steps)
    ours = per_step_calls("bigtrain", args.steps)
    totals = f"lightning {sum(plain.values()):.0f}, bigtrain {sum(ours.values()):.0f}"
    print(f"calls per non-logging step: {totals}")
    diff = {k: ours.get(k, 0.0) - plain.get(k, 0.0) for k in set(plain) | set(ours)}
    print("| calls/step bigtrain | lightning | difference | function |\n|---|---|---|---|")
    for name in sorted(diff, key=lambda k: -abs(diff[k]))[: args.top]:
        print(f"| {ours.get(name, 0):.1f} | {plain.get(name, 0):.1f} | {diff[name]:+.1f} | {name} |")


if __name__ == "__main__":
    sys.exit(main())
