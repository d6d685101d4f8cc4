"""`bigtrain verify-resume RECIPE`: does a run stopped mid-epoch and resumed equal the uninterrupted run?

Three runs of the real `bigtrain fit` command, each a fresh process: N steps uninterrupted; the same run
stopped after step K with a checkpoint, as if its job had ended there; and the same command again with
`--ckpt_path auto` in that run directory, as a requeued job resumes, to step N. Every training batch's
losses and the final weights of the first and the last must be identical, bit for bit. Users run it on
their own recipe (and overrides) before a long job, with the strategy and devices they will use.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bigtrain
from bigtrain.commands.args import OneLineParser
from bigtrain.errors import UserError

USAGE = """\
usage: bigtrain verify-resume RECIPE [--steps N] [--stop-at K] [--dir DIR] [--resume-args ARGS] [overrides]

Trains RECIPE (a recipe name or a config file) N optimizer steps without a stop, then again stopping after
step K with a checkpoint, then resumes that run (--ckpt_path auto) in a new process to step N. Exit status 0
when every batch's training losses and the final weights are identical, 1 when not (the first differing
step and weight tensor are named), 2 for a usage error.

  --steps N          optimizer steps of the run (default 20)
  --stop-at K        stop after the first batch that reaches step K, 1 <= K < N (default: a mid-epoch
                     step near N/2)
  --dir DIR          keep the runs and their logs here (default: a temporary folder, removed when exact)
  --resume-args ARGS extra `bigtrain fit` arguments for the resumed run only, in one quoted string (e.g.
                     "--data.num_workers 2": check that the setting may change across a resume)
  overrides          any `bigtrain fit` options, passed to all three runs (e.g. --trainer.strategy ddp)
"""

OWN = {"--steps", "--stop-at", "--dir", "--resume-args"}
# Set by verify-resume for each run; a user value would make the three runs something else.
RESERVED = ("--trainer.max_steps", "--trainer.max_epochs", "--run_dir", "--ckpt_path", "--recipe")
RECORD = "bigtrain.callbacks.record"


@dataclass
class Options:
    """The parsed command line."""

    recipe: str
    steps: int = 20
    stop_at: int | None = None
    dir: str | None = None
    resume_args: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)


def _whole(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"needs a whole number, got '{value}'") from None


def parser() -> OneLineParser:
    """verify-resume's own options; the options it does not know are `bigtrain fit` overrides."""
    # USAGE is the help (main prints it): a later --help is a fit override, as any other unknown option.
    p = OneLineParser(prog="bigtrain verify-resume", add_help=False)
    p.add_argument("recipe")
    p.add_argument("--steps", type=_whole, default=20)
    p.add_argument("--stop-at", type=_whole)
    p.add_argument("--dir")
    p.add_argument("--resume-args", type=shlex.split, default=[])
    return p


def _attach_values(argv: list[str]) -> list[str]:
    """`--opt VALUE` as `--opt=VALUE` for verify-resume's own options.

    Their value is always the next word, even one that starts with '-' (`--resume-args --data.seed=1`),
    which argparse would otherwise take for an option.
    """
    joined, i = [], 0
    while i < len(argv):
        if argv[i] in OWN:
            if i + 1 >= len(argv):
                raise UserError(f"verify-resume {argv[i]} needs a value")
            joined.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            joined.append(argv[i])
            i += 1
    return joined


def parse(argv: list[str]) -> Options:
    """Options from the command line; the options verify-resume does not know are fit overrides."""
    if argv[:1] == ["--recipe"]:  # as `bigtrain fit` spells it
        argv = argv[1:]
    if not argv or argv[0].startswith("-"):
        raise UserError("verify-resume needs a recipe first: bigtrain verify-resume RECIPE [options]")
    args, overrides = parser().parse_known_args(_attach_values(argv))
    for arg in overrides:
        name = arg.partition("=")[0]
        if name in RESERVED:
            raise UserError(f"verify-resume sets {name} itself; use --steps / --stop-at instead")
    opts = Options(args.recipe, args.steps, args.stop_at, args.dir, args.resume_args, overrides)
    if opts.steps < 2:
        raise UserError(f"verify-resume --steps must be >= 2, got {opts.steps}")
    if opts.stop_at is not None and not 1 <= opts.stop_at < opts.steps:
        raise UserError(f"verify-resume --stop-at must be between 1 and {opts.steps - 1}, got {opts.stop_at}")
    return opts


def checked_recipe_args(recipe: str) -> list[str]:
    """`--recipe NAME` or `--config FILE`, checked now: an unknown name or a missing YAML file fails here.

    Unlike `bigtrain.plan.recipe_args`, which lets `bigtrain fit` report either, this fails before the
    first of the three runs starts.
    """
    path = Path(recipe)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise UserError(f"verify-resume: config file {recipe} does not exist")
        return ["--config", str(path)]
    from bigtrain.recipes import find

    find(recipe)  # an unknown name fails here, with suggestions
    return ["--recipe", recipe]


def fit(run_dir: Path, args: list[str], log: Path) -> float:
    """Run `bigtrain fit ARGS --run_dir RUN_DIR` in a new process; its seconds. A failure raises."""
    env = {k: v for k, v in os.environ.items() if k != "BIGTRAIN_RUN_DIR"}
    package_root = str(Path(bigtrain.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "bigtrain", "fit", *args, "--run_dir", str(run_dir)]
    start = time.monotonic()
    with open(log, "w") as out:
        code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env, check=False).returncode
    if code == 0:
        return time.monotonic() - start
    lines = log.read_text(errors="replace").splitlines()
    errors = [line for line in lines if line.startswith("bigtrain: error: ")]
    if code == 2 and errors:
        raise UserError(errors[-1].removeprefix("bigtrain: error: "))
    tail = "\n".join(lines[-25:])
    raise RunFailed(f"`bigtrain fit` exited with status {code} (log: {log}):\n{tail}")


class RunFailed(Exception):
    """One of the three runs did not finish."""


def load_run(run_dir: Path) -> dict[str, Any]:
    """What `RecordSteps` wrote in a run directory (steps.json, plus its weights under "tensors")."""
    from safetensors.torch import load_file

    from bigtrain.callbacks.record import STEPS_FILE, WEIGHTS_FILE

    record = json.loads((run_dir / STEPS_FILE).read_text())
    record["tensors"] = load_file(str(run_dir / WEIGHTS_FILE))
    return record


def choose_stop(steps: list[dict[str, Any]], total: int) -> int:
    """A step near total/2 that ends a batch in the middle of an epoch (the last step if none does)."""
    ends = {s["step"]: s for s in steps}  # the batch that made each step (the last of its micro-batches)
    mid = [step for step, s in ends.items() if 0 < step < total and s["batch"] < s["batches"] - 1]
    if not mid:
        return max(step for step in ends if step < total)
    return min(mid, key=lambda step: (abs(step - total / 2), step))


def _where(entry: dict[str, Any]) -> str:
    return f"step {entry['step']} (epoch {entry['epoch']}, batch {entry['batch'] + 1} of {entry['batches']})"


def first_loss_difference(full: list[dict], stopped: list[dict], resumed: list[dict]) -> str | None:
    """Where the per-batch losses of the two runs first differ, in words; None when they never do."""
    from bigtrain.callbacks.record import same_float

    joined = stopped + resumed
    for i, (a, b) in enumerate(zip(full, joined, strict=False)):
        part = "stopped run, before the stop" if i < len(stopped) else "resumed run"
        if (a["step"], a["epoch"], a["batch"]) != (b["step"], b["epoch"], b["batch"]):
            return f"uninterrupted run at {_where(a)}, {part} at {_where(b)}"
        common = sorted(a["losses"].keys() & b["losses"].keys())
        if not common:
            return f"no training loss recorded by both runs at {_where(a)}"
        for name in common:
            x, y = a["losses"][name], b["losses"][name]
            if not same_float(x, y):
                return f"{_where(a)}, {name}: {x!r} uninterrupted vs {y!r} ({part})"
    if len(full) != len(joined):
        return f"the uninterrupted run trained {len(full)} batches, stopped + resumed {len(joined)}"
    return None


def weight_difference(full: dict[str, Any], resumed: dict[str, Any]) -> tuple[int, str | None]:
    """(number of tensors compared, the first differing tensor in module order in words or None)."""
    a, b, order = full["tensors"], resumed["tensors"], full["weights"]
    if a.keys() != b.keys():
        only = sorted(a.keys() - b.keys()) or sorted(b.keys() - a.keys())
        return len(a), f"the runs have different weight tensors (e.g. {only[0]})"
    differ = [name for name in order if not a[name].equal(b[name])]
    if not differ:
        return len(a), None
    first = differ[0]
    gap = (
        (a[first].double() - b[first].double()).abs().max().item()
        if a[first].shape == b[first].shape
        else None
    )
    size = (
        f"max |difference| {gap:.3g}"
        if gap is not None
        else f"shape {tuple(a[first].shape)} vs {tuple(b[first].shape)}"
    )
    return len(a), f"{len(differ)} of {len(a)} weight tensors differ, first {first} ({size})"


def _phase(label: str, run_dir: Path, args: list[str], record: Path, log: Path, extra: list[str]) -> dict:
    print(f"  {label} ...", end=" ", flush=True)
    # The recorder before `extra`: its callbacks run first, so it has the stop step when StopAtStep exits.
    recorder = [f"--trainer.callbacks+={RECORD}.RecordSteps", "--trainer.callbacks.dirpath", str(record)]
    seconds = fit(run_dir, [*args, *recorder, *extra], log)
    result = load_run(record)
    print(f"{seconds:.1f} s", flush=True)
    return result


def _stop_note(entry: dict[str, Any]) -> str:
    last = entry["batch"] == entry["batches"] - 1
    return f"{_where(entry)}: {'the end of the epoch, not mid-epoch' if last else 'mid-epoch'}"


def _validation_note(full: dict[str, Any], resumed: dict[str, Any]) -> str:
    if not full["validated_after"]:
        return "validation: did not run within these steps"
    return (
        f"validation: ran after steps {full['validated_after']} uninterrupted, {resumed['validated_after']} "
        "in the resumed run (it never moves the training RNG)"
    )


def _runs(opts: Options, root: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The uninterrupted, the stopped and the resumed run's records."""
    base = [*checked_recipe_args(opts.recipe), *opts.overrides, "--trainer.max_epochs", "-1"]
    base += ["--trainer.max_steps", str(opts.steps), "--trainer.enable_progress_bar", "false"]
    label = f"1/3 uninterrupted, {opts.steps} steps"
    full = _phase(label, root / "uninterrupted", base, root / "uninterrupted", root / "uninterrupted.log", [])
    if full["steps"][-1]["step"] != opts.steps:
        raise RunFailed(f"the uninterrupted run ended at step {full['steps'][-1]['step']}, not {opts.steps}")
    stop = opts.stop_at if opts.stop_at is not None else choose_stop(full["steps"], opts.steps)
    # The interrupted run: stopped after step `stop`, then the same command again with `--ckpt_path auto`
    # in the same run directory, as a preempted job is resumed.
    run = root / "interrupted"
    stopper = [f"--trainer.callbacks+={RECORD}.StopAtStep", "--trainer.callbacks.step", str(stop)]
    label = f"2/3 stopped after step {stop}"
    stopped = _phase(label, run, base, root / "record-stopped", root / "stopped.log", stopper)
    at = stopped["steps"][-1]
    print(f"      checkpoint after {_stop_note(at)}", flush=True)
    label = f"3/3 resumed (--ckpt_path auto) from step {at['step']} to {opts.steps}"
    args = [*base, "--ckpt_path", "auto"]
    # --resume-args changes the resumed run on purpose (to see whether the resume stays exact with them).
    extra = [*opts.resume_args, "--resume_check", "false"] if opts.resume_args else []
    resumed = _phase(label, run, args, root / "record-resumed", root / "resumed.log", extra)
    if not resumed["steps"]:
        raise RunFailed("the resumed run trained no batch")
    return full, stopped, resumed


def resumed_where_stopped(stopped: list[dict], resumed: list[dict]) -> str | None:
    """None when the resumed run's first batch is the one after the stop; else what happened, in words."""
    at, first = stopped[-1], resumed[0]
    after = (at["epoch"], at["batch"] + 1) if at["batch"] + 1 < at["batches"] else (at["epoch"] + 1, 0)
    if (first["epoch"], first["batch"]) == after:
        return None
    return f"the resumed run began at {_where(first)}, not with the batch after the stop at {_where(at)}"


def verify(opts: Options, root: Path) -> bool:
    """Run the three runs under `root` and print the verdict; whether the resume was exact."""
    print(f"verify-resume {opts.recipe}: {opts.steps} steps, in {root}", flush=True)
    full, stopped, resumed = _runs(opts, root)
    print(_validation_note(full, resumed))
    where = resumed_where_stopped(stopped["steps"], resumed["steps"])
    if where is not None:
        print(f"resume is NOT exact: {where}")
        return False
    losses = first_loss_difference(full["steps"], stopped["steps"], resumed["steps"])
    count, weights = weight_difference(full, resumed)
    if losses is None and weights is None:
        batches = len(full["steps"])
        print(
            f"resume is exact: {opts.steps} steps, losses of {batches} batches and {count} weight tensors ",
            end="",
        )
        print("identical")
        return True
    print("resume is NOT exact:")
    print(f"  losses: {losses or 'identical'}")
    print(f"  weights: {weights or f'all {count} tensors identical'}")
    return False


def main(argv: list[str]) -> int:
    """`bigtrain verify-resume`: 0 when the resume is exact, 1 when it is not, 2 for a usage error."""
    if argv and argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    opts = parse(argv)
    if opts.dir is not None:
        root = Path(opts.dir)
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise UserError(f"verify-resume --dir {root} is not an empty folder; give a new or empty one")
        root.mkdir(parents=True, exist_ok=True)
    else:
        root = Path(tempfile.mkdtemp(prefix="bigtrain-verify-resume-"))
    exact, keep = False, opts.dir is not None
    try:
        exact = verify(opts, root)
        keep = keep or not exact
    except RunFailed as err:
        print(f"\nverify-resume: a run failed: {err}", file=sys.stderr)
        keep = True
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
        elif opts.dir is None:
            print(f"the runs are kept in {root}", file=sys.stderr)
    return 0 if exact else 1
