"""`make mutate`: mutation testing (mutmut) of the modules that guard correctness, with a kill rate each.

Each module is mutated in its own scratch copy of the repository (build/mutate/<name>), against the tests
that cover it; mutmut runs, for each mutant, only the tests that reached the mutated function. Too slow for
CI: run it as a benchmark and commit the summary it writes (benchmarks/results/mutate-<date>.md).

With --planted it also plants, one at a time, the hand-written bugs of benchmarks/mutate_planted.py and
says whether their tests caught each.

usage: python -m benchmarks.mutate [--modules batch manifest ...] [--planted] [--jobs N] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path

from benchmarks.mutate_equivalent import EQUIVALENT, UNREACHED
from benchmarks.mutate_planted import PLANTED, Plant

ROOT = Path(__file__).resolve().parent.parent
FAST = "not slow and not distributed and not cluster and not gpu"
"""The tests each mutant may run: in-process ones (a subprocess's coverage is invisible to mutmut)."""


@dataclass(frozen=True)
class Target:
    """One module to mutate and the test files that guard it."""

    source: str
    tests: tuple[str, ...]


TARGETS: dict[str, Target] = {
    "batch": Target("bigtrain/strategies/batch.py", ("tests/strategies/test_batch.py",)),
    "manifest": Target(
        "bigtrain/checkpoints/manifest.py", ("tests/reliability/test_checkpoint_manifests.py",)
    ),
    "discover": Target(
        "bigtrain/checkpoints/discover.py", ("tests/reliability/test_checkpoint_manifests.py",)
    ),
    "unpickle": Target("bigtrain/checkpoints/unpickle.py", ("tests/reliability/test_safe_load.py",)),
    "resume_state": Target(
        "bigtrain/callbacks/resume_state.py",
        (
            "tests/reliability/test_resume.py",
            "tests/reliability/test_loop_state.py",
            "tests/reliability/test_rng_state.py",
        ),
    ),
    "loaders": Target(
        "bigtrain/data/base.py",
        (
            "tests/reliability/test_resume.py",
            "tests/reliability/test_loop_state.py",
            "tests/data/test_images.py",
            "tests/data/test_plain_loader.py",
            "tests/distributed/test_strategies.py",
        ),
    ),
    "nonfinite": Target(
        "bigtrain/callbacks/nonfinite.py",
        (
            "tests/reliability/test_nonfinite.py",
            "tests/reliability/test_nonfinite_guard.py",
            "tests/reliability/test_nonfinite_ranks.py",
            "tests/reliability/test_step_syncs.py",
        ),
    ),
    "preemption": Target(
        "bigtrain/callbacks/preemption.py",
        (
            "tests/cluster/test_preemption_inprocess.py",
            "tests/cluster/test_cluster_preemption.py",
            "tests/cluster/test_interrupt.py",
        ),
    ),
    "parallelize": Target(
        "bigtrain/strategies/parallelize.py",
        ("tests/strategies/test_parallelize_inprocess.py", "tests/strategies/test_parallelize_options.py"),
    ),
}
"""name -> module and tests. test_hostile_checkpoints.py is left out: its real fits take up to 100 s a test
and would run for every mutant. The sharding plan (strategies/parallelize.py) is tested in one process over
torch's fake process group (rank 0 of a world of 1 to 4), which mutmut can trace; its multi-rank tests
(tests/distributed) launch processes it cannot."""

KILLED = {"killed", "timeout", "caught by type check"}
UNEXPLAINED = "NOT EXPLAINED: add a test that kills it, or say why it is equivalent"


@dataclass
class Outcome:
    """One module's mutants by mutmut's status, and the surviving ones' diffs."""

    name: str
    source: str
    counts: dict[str, int] = field(default_factory=dict)
    survivors: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        """Mutants that were tried (mutmut's `skipped` ones were not)."""
        return sum(n for status, n in self.counts.items() if status != "skipped")

    @property
    def killed(self) -> int:
        """Mutants some test failed on (or ran into the time limit)."""
        return sum(n for status, n in self.counts.items() if status in KILLED)

    @property
    def rate(self) -> float:
        """Killed / tried."""
        return self.killed / self.total if self.total else 0.0


def _workdir(name: str, target: Target) -> Path:
    """A scratch copy of the package, recipes and tests with a mutmut section for this target."""
    work = ROOT / "build" / "mutate" / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("bigtrain", "tests", "recipes"):
        shutil.copytree(ROOT / folder, work / folder, ignore=ignore)
    settings = {
        "source_paths": ["bigtrain"],
        "only_mutate": [target.source],
        "pytest_add_cli_args_test_selection": list(target.tests),
        "pytest_add_cli_args": ["-q", "-p", "no:cacheprovider", "-p", "no:xdist", "-m", FAST],
        "also_copy": ["recipes"],
        "max_stack_depth": -1,
    }
    # JSON's strings, lists and numbers are TOML's too.
    section = "\n[tool.mutmut]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
    (work / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text() + section)
    return work


def _mutmut(work: Path, *args: str) -> str:
    mutmut = Path(sys.executable).with_name("mutmut")
    done = subprocess.run([str(mutmut), *args], cwd=work, capture_output=True, text=True)
    if done.returncode not in (0, 1):  # 1: some mutants survived
        tail = (done.stdout + done.stderr)[-3000:]
        raise SystemExit(f"mutmut {' '.join(args)} failed in {work}:\n{tail}")
    return done.stdout


def run_target(name: str, target: Target, jobs: int) -> Outcome:
    """Mutate one module against its tests; the outcome by status, with the survivors' diffs."""
    work = _workdir(name, target)
    start = time.perf_counter()
    _mutmut(work, "run", "--max-children", str(jobs))
    outcome = Outcome(name, target.source, seconds=round(time.perf_counter() - start, 1))
    for line in _mutmut(work, "results", "--all", "true").splitlines():
        mutant, _, status = line.strip().rpartition(": ")
        if not mutant:
            continue
        outcome.counts[status] = outcome.counts.get(status, 0) + 1
        if status not in KILLED and status != "skipped":
            diff = _mutmut(work, "show", mutant)
            changed = [ln for ln in diff.splitlines() if re.match(r"^[-+](?![-+])", ln)]
            outcome.survivors[mutant] = "\n".join(changed)
    (work / "outcome.json").write_text(json.dumps(asdict(outcome)))
    return outcome


def saved_outcomes(names: list[str]) -> list[Outcome]:
    """The outcomes earlier runs left in build/mutate/<name>/outcome.json, for the modules that have one."""
    found = [ROOT / "build" / "mutate" / n / "outcome.json" for n in names]
    return [Outcome(**json.loads(p.read_text())) for p in found if p.is_file()]


def run_planted(names: list[str]) -> list[tuple[str, Plant, bool, float]]:
    """Plant each bug in one scratch copy (undone after), run its tests: (name, plant, caught, seconds)."""
    work = ROOT / "build" / "mutate" / "planted"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for folder in ("bigtrain", "tests", "recipes"):
        shutil.copytree(ROOT / folder, work / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", work / "pyproject.toml")
    env = {**os.environ, "PYTHONPATH": str(work)}
    results = []
    for name in names:
        plant = PLANTED[name]
        path = work / plant.path
        original = path.read_text()
        if original.count(plant.old) != 1:
            raise SystemExit(f"planted bug {name!r}: {plant.old!r} is not in {plant.path} exactly once")
        path.write_text(original.replace(plant.old, plant.new))
        start = time.perf_counter()
        cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p", "no:xdist"]
        done = subprocess.run([*cmd, *plant.tests], cwd=work, env=env, capture_output=True, text=True)
        path.write_text(original)
        caught = done.returncode == 1  # tests failed; 0 passed, others: could not run
        if done.returncode not in (0, 1):
            raise SystemExit(f"planted bug {name!r}: pytest exited {done.returncode}:\n{done.stdout[-3000:]}")
        results.append((name, plant, caught, time.perf_counter() - start))
        print(f"mutate: planted {name}: {'caught' if caught else 'NOT CAUGHT'}", flush=True)
    return results


def _versions() -> str:
    names = ("mutmut", "pytest", "torch", "lightning")
    return f"Python {platform.python_version()}, " + ", ".join(f"{n} {version(n)}" for n in names)


def planted_summary(results: list[tuple[str, Plant, bool, float]]) -> list[str]:
    """The planted bugs' table: what, where, caught or not, by which tests."""
    lines = [
        "",
        "## Planted bugs",
        "",
        "| bug | planted in | caught | by | time |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, plant, caught, seconds in results:
        tests = "<br>".join(f"`{t}`" for t in plant.tests)
        verdict = "yes" if caught else "**no**"
        lines.append(f"| {name} | `{plant.path}` | {verdict} | {tests} | {seconds:.0f} s |")
    return lines


def summary(outcomes: list[Outcome], skipped: list[str]) -> str:
    """The Markdown summary: kill rate per module, then every survivor with why it is equivalent."""
    lines = [
        f"# Mutation testing, {time.strftime('%Y-%m-%d')}",
        "",
        f"`make mutate` (mutmut). {_versions()}. Tests per mutant: those that reach the mutated function,",
        f'among the module\'s test files, `-m "{FAST}"`.',
        "",
        "| module | mutants | killed | survived | no tests | kill rate | time |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for o in outcomes:
        lines.append(
            f"| `{o.source}` | {o.total} | {o.killed} | {o.counts.get('survived', 0)} | "
            f"{o.counts.get('no tests', 0)} | {o.rate:.1%} | {o.seconds:.0f} s |"
        )
    if skipped:
        lines += ["", "Not run this time: " + ", ".join(f"`{TARGETS[n].source}`" for n in skipped) + "."]
    lines += ["", "The sharding plan (`bigtrain/strategies/parallelize.py`) runs against in-process tests"]
    lines += ["over torch's fake process group (rank 0 of up to 4 ranks): placements, shard shapes, dtypes,"]
    lines += ["not the values collectives fill; the multi-rank tests and the planted bugs below cover those."]
    for o in outcomes:
        if not o.survivors:
            continue
        lines += ["", f"## Survivors in `{o.source}`", ""]
        for mutant, diff in o.survivors.items():
            reason = EQUIVALENT.get(mutant) or (
                f"not killable here: {UNREACHED[mutant]}" if mutant in UNREACHED else UNEXPLAINED
            )
            lines += [f"- `{mutant}`: {reason}", "", "  ```diff", *(f"  {d}" for d in diff.splitlines())]
            lines += ["  ```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Run the chosen modules (default: all), print and write the summary."""
    parser = argparse.ArgumentParser(prog="make mutate", description=__doc__.splitlines()[0])
    parser.add_argument("--modules", nargs="+", choices=list(TARGETS), default=list(TARGETS))
    parser.add_argument("--jobs", type=int, default=1, help="mutants tested at once (default 1)")
    parser.add_argument("--planted", action="store_true", help="also plant the hand-written bugs")
    parser.add_argument("--only-planted", action="store_true", help="plant the hand-written bugs only")
    parser.add_argument("--plants", nargs="+", choices=list(PLANTED), help="only these planted bugs")
    parser.add_argument("--summarize", action="store_true", help="run nothing: summarise build/mutate/")
    parser.add_argument("--out", type=Path, default=None, help="summary file (default benchmarks/results/)")
    args = parser.parse_args(argv)
    outcomes = []
    modules = [] if args.only_planted or args.summarize else args.modules
    if args.summarize:
        outcomes = saved_outcomes(list(TARGETS))
        modules = [o.name for o in outcomes]
    for name in [] if args.summarize else modules:
        print(f"mutate: {TARGETS[name].source} ...", flush=True)
        outcome = run_target(name, TARGETS[name], args.jobs)
        kills = f"{outcome.killed}/{outcome.total} killed ({outcome.rate:.1%})"
        print(f"mutate: {outcome.source}: {kills}", flush=True)
        outcomes.append(outcome)
    skipped = [n for n in TARGETS if n not in modules]
    text = summary(outcomes, skipped)
    planted_file = ROOT / "build" / "mutate" / "planted.json"
    if args.planted or args.only_planted:
        # Merged with earlier results, so one plant can be run again alone (--plants NAME).
        saved = json.loads(planted_file.read_text()) if planted_file.is_file() else []
        before = {n: (c, s) for n, c, s in saved}
        before.update({n: (c, s) for n, _, c, s in run_planted(args.plants or list(PLANTED))})
        planted_file.write_text(json.dumps([(n, *before[n]) for n in PLANTED if n in before]))
    if planted_file.is_file() and (args.planted or args.only_planted or args.summarize):
        saved = [(n, PLANTED[n], c, s) for n, c, s in json.loads(planted_file.read_text()) if n in PLANTED]
        text += "\n".join(planted_summary(saved)) + "\n"
    out = args.out or ROOT / "benchmarks" / "results" / f"mutate-{time.strftime('%Y-%m-%d')}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
