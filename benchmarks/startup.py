"""Start-up per recipe: time to the end of the first optimizer step, `bigtrain fit` against plain Lightning.

    python -m benchmarks.startup [RECIPE ...] [--rounds 3] [--shakespeare DIR]

For each packaged recipe, two fresh processes, alternated round by round:
- `bigtrain fit --recipe R`, as a user runs it (its callbacks, checks, logger and checkpointing);
- a plain Lightning script doing the same: the recipe's own LightningModule and LightningDataModule
  classes with the recipe's values, fitted by a plain `Trainer` with the recipe's trainer settings and
  Lightning's defaults otherwise (its logger, checkpointing, model summary). The values are resolved
  before the clock starts and handed over as JSON, as a script would have them written out.
Both stop after one optimizer step. The figure is the process's age when that step ends: interpreter,
imports, parsing, data set-up and any sanity validation included. Goal: bigtrain within 0.5 s of plain.

Recipes sized for GPU clusters (the FSDP ones, 350M+ parameters) are left out: one step of them does not
fit this machine's time. Recipes on Tiny Shakespeare or the UCI digits read them from `--data DIR`, else
`$BIGTRAIN_TEST_DATA` (`tinyshakespeare/input.txt`, `digits/digits.csv.gz`), and are left out without.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.contenders import bench_env, process_age_s

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
GOAL_S = 0.5
SETUP = (
    "Each recipe this machine can step (no FSDP-sized ones; Shakespeare and digits ones need local data): "
    "`bigtrain fit --recipe R` against a plain Lightning script of the recipe's own module, data and trainer "
    "settings (Lightning's defaults otherwise), one fresh process each, one thread. Start-up: the process's "
    "age when the first optimizer step ends; median of the rounds. Goal: within 0.5 s of plain Lightning."
)
PLAIN_TRAINER_SKIP = {"callbacks", "logger", "plugins", "default_root_dir", "max_steps", "max_epochs"}
"""Trainer settings the plain script leaves at Lightning's defaults (bigtrain's own objects, or set here)."""


LOCAL_DATA = {"shakespeare": "tinyshakespeare/input.txt", "digits": "digits/digits.csv.gz"}
"""Recipes whose name holds the key read this file under the data folder."""


def data_args(recipe: str, data: Path) -> list[str] | None:
    """The overrides that point a recipe at the local copy of its data ([] for built-in data; None when the
    copy is missing)."""
    for key, file in LOCAL_DATA.items():
        if key in recipe:
            path = data / file
            if not path.is_file():
                return None
            folder = path.parent if key == "shakespeare" else path
            return ["--data.path", str(folder), "--data.download", "false"]
    return []


def default_data() -> Path:
    """$BIGTRAIN_TEST_DATA, else the shared data folder beside the project."""
    return Path(os.environ.get("BIGTRAIN_TEST_DATA", ROOT.parent / "shared" / "data"))


def recipes(data: Path) -> list[str]:
    """The packaged recipes one CPU step can run (no FSDP-sized ones) with their data at hand."""
    names = sorted(str(p.relative_to(RECIPES).with_suffix("")) for p in RECIPES.glob("*/*.yaml"))
    return [n for n in names if "fsdp" not in n and data_args(n, data) is not None]


def _first_step_class():  # noqa: ANN202
    """The probe callback: writes the process age when the first optimizer step ends (made on demand, so
    that the parent process never imports Lightning)."""
    from lightning.pytorch import Callback

    class FirstStepProbe(Callback):
        def __init__(self, out: str | None = None) -> None:
            self.out = out or os.environ["BIGTRAIN_STARTUP_OUT"]
            self.done = False

        def on_train_batch_end(self, trainer, *args) -> None:  # noqa: ANN001, ANN002, D102
            if not self.done and trainer.global_step >= 1:
                self.done = True
                Path(self.out).write_text(json.dumps({"startup_s": process_age_s()}))

    return FirstStepProbe


def __getattr__(name: str):  # noqa: ANN202
    """`benchmarks.startup.FirstStepProbe`, made on demand (named in `bigtrain fit` arguments)."""
    if name == "FirstStepProbe":
        return _first_step_class()
    raise AttributeError(name)


def plain_spec(recipe: str, extra: list[str]) -> dict:
    """The recipe's model, data and plain trainer settings, resolved once, before any clock starts."""
    from bigtrain.lightning_cli import resolve

    config = resolve("fit", ["--recipe", recipe, *extra])
    trainer = {
        k: v
        for k, v in config["trainer"].items()
        if v is not None and k not in PLAIN_TRAINER_SKIP and not isinstance(v, (dict, list))
    }
    return {
        "seed": config["seed_everything"],
        "model": config["model"],
        "data": config["data"],
        "trainer": trainer,
    }


def plain(spec_file: str, out: str) -> None:
    """The plain Lightning script: build the recipe's classes, fit one step with a plain Trainer."""
    spec = json.loads(Path(spec_file).read_text())
    import lightning.pytorch as pl

    def build(part: dict):  # noqa: ANN202
        module, _, name = part["class_path"].rpartition(".")
        return getattr(importlib.import_module(module), name)(**part["init_args"])

    pl.seed_everything(spec["seed"])
    with tempfile.TemporaryDirectory() as root:
        trainer = pl.Trainer(**spec["trainer"], max_steps=1, default_root_dir=root,
                             callbacks=[_first_step_class()(out)])  # fmt: skip
        trainer.fit(build(spec["model"]), datamodule=build(spec["data"]))


def one_run(contender: str, recipe: str, extra: list[str], spec_file: str) -> float:
    """One fresh process; its age when the first step ended (s)."""
    env = bench_env()
    with tempfile.TemporaryDirectory() as tmp:
        out = f"{tmp}/startup.json"
        if contender == "plain":
            cmd = [sys.executable, "-m", "benchmarks.startup", "--plain", spec_file, "--probe-out", out]
        else:
            env["BIGTRAIN_STARTUP_OUT"] = out
            cmd = [sys.executable, "-m", "bigtrain", "fit", "--recipe", recipe, *extra,
                   "--trainer.max_steps", "1", "--run_dir", f"{tmp}/run",
                   "--trainer.callbacks+=benchmarks.startup.FirstStepProbe"]  # fmt: skip
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp)  # noqa: S603 (ours)
        if done.returncode or not Path(out).is_file():
            raise SystemExit(f"start-up, {contender} {recipe} failed:\n{done.stderr[-3000:]}")
        return json.loads(Path(out).read_text())["startup_s"]


def measure(names: list[str], rounds: int, data: Path) -> dict[str, dict[str, list[float]]]:
    """{recipe: {contender: [seconds per round]}}, the contenders' order swapped every round."""
    results: dict[str, dict[str, list[float]]] = {n: {"plain": [], "bigtrain": []} for n in names}
    with tempfile.TemporaryDirectory() as specs:
        files = {}
        for name in names:
            files[name] = f"{specs}/{name.replace('/', '_')}.json"
            Path(files[name]).write_text(json.dumps(plain_spec(name, data_args(name, data))))
        for r in range(rounds):
            for name in names:
                order = ("plain", "bigtrain") if r % 2 == 0 else ("bigtrain", "plain")
                for contender in order:
                    seconds = one_run(contender, name, data_args(name, data), files[name])
                    results[name][contender].append(seconds)
                print(f"round {r + 1}: {name} { {c: v[-1] for c, v in results[name].items()} }", flush=True)
    return results


def table(results: dict[str, dict[str, list[float]]]) -> str:
    """Markdown: the median of each, and bigtrain's difference, per recipe."""
    lines = [
        "| recipe | plain Lightning (s) | bigtrain fit (s) | difference (s) | within 0.5 s |",
        "|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        plain_s, ours = statistics.median(runs["plain"]), statistics.median(runs["bigtrain"])
        ok = "yes" if ours - plain_s <= GOAL_S else "**no**"
        lines.append(f"| {name} | {plain_s:.2f} | {ours:.2f} | {ours - plain_s:+.2f} | {ok} |")
    return "\n".join(lines)


def main() -> None:
    """Measure and print the table (or, with --plain, be the plain contender)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("recipes", nargs="*")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", help="folder with tinyshakespeare/ and digits/ (else $BIGTRAIN_TEST_DATA)")
    parser.add_argument("--plain", help=argparse.SUPPRESS)
    parser.add_argument("--probe-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain:
        plain(args.plain, args.probe_out)
        return
    data = Path(args.data) if args.data else default_data()
    results = measure(args.recipes or recipes(data), args.rounds, data)
    print(table(results))


if __name__ == "__main__":
    sys.exit(main())
