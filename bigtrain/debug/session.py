"""One debug run: the recipe's own classes through bigtrain's LightningCLI, shrunk, watched by the probe."""

from __future__ import annotations

import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bigtrain.debug.checks import (
    Verdict,
    data_verdict,
    family,
    grads_verdict,
    learn_fraction,
    learns_verdict,
    nan_verdict,
    shapes_verdict,
    speed_verdict,
)
from bigtrain.debug.overlap import train_val_overlap
from bigtrain.debug.probe import WARMUP_STEPS, DebugProbe
from bigtrain.debug.tensors import batch_problems
from bigtrain.errors import UserError
from bigtrain.lightning_cli import BigtrainCLI

_LIBRARY = re.compile(r"[/\\](torch|lightning)[/\\]")
DATA_BATCHES = 3
"""Batches read from the real loader: the first (start-up) and the rest (steady data time)."""


@dataclass
class Options:
    """What the command line asked for."""

    checks: tuple[str, ...]
    steps: int
    trace: bool = False


@dataclass
class Outcome:
    """What one debug run found."""

    verdicts: list[Verdict]
    run_dir: Path
    changes: list[str]
    description: str


class _Stop(Exception):
    """A data problem that would crash the step (labels out of range): end the run before it starts."""


class Repeat:
    """One batch, `n` times: a fixed batch to overfit (a list would read as several loaders to Lightning)."""

    def __init__(self, batch: Any, n: int) -> None:
        self.batch, self.n = batch, n

    def __iter__(self) -> Any:
        return iter([self.batch] * self.n)

    def __len__(self) -> int:
        return self.n


class Steps(Repeat):
    """The micro-batches of one optimizer step, each once (a replayed step with gradient accumulation)."""

    def __init__(self, batches: list[Any]) -> None:
        super().__init__(batches, len(batches))

    def __iter__(self) -> Any:
        return iter(self.batch)


class DebugCLI(BigtrainCLI):
    """Builds the recipe's Trainer, module and DataModule like `fit`, then runs the debug steps instead."""

    options: Options
    one_step = False
    """Step once through every batch `read_batches` returns (a replayed step's micro-batches)."""

    def prepare_trainer_config(self, config: dict[str, Any]) -> None:
        """Only the probe as a callback (bigtrain's checkpoints, progress and guards stay out of the way)."""
        from bigtrain.strategies import resolve_strategy

        config["default_root_dir"] = str(self.run_dir)
        trace = str(self.run_dir / "trace.json") if self.options.trace else None
        self.probe = DebugProbe(nan_hooks="nan" in self.options.checks, trace=trace)
        if "learns" in self.options.checks:
            self.probe.learn_fraction = learn_fraction(family(self.model))
        config["callbacks"] = [*(config.get("callbacks") or []), self.probe]
        config["strategy"] = resolve_strategy(
            config.get("strategy", "auto"), config, self.model, self.datamodule
        )

    def after_instantiate_classes(self) -> None:
        """bigtrain's pre-flight checks; a model whose meta-device trace fails is left to the real step,
        which fails the same way and is reported as the run's finding."""
        try:
            super().after_instantiate_classes()
        except UserError:
            raise
        except Exception:  # the host memory estimate traces the model; its error comes again below
            pass

    def run_subcommand(self, subcommand: str) -> None:
        """Read the fixed batch from the real loader, then fit on it with the probe watching."""
        self.data: dict[str, Any] | None = None
        self.error: str | None = None
        datamodule = self.datamodule
        original = datamodule.train_dataloader
        steps = self.options.steps

        def fixed() -> Any:
            batches, seconds = self.read_batches(original)
            rows, problems = batch_problems(batches[0], datamodule)
            self.data = {"rows": rows, "problems": problems, "seconds": seconds}
            if "data" in self.options.checks:
                self.data["overlap"] = train_val_overlap(datamodule)
            if any("outside" in p for p in problems):
                raise _Stop(problems[0])
            return Steps(batches) if self.one_step else Repeat(batches[0], steps)

        datamodule.train_dataloader = fixed  # the instance's own loader hook, only for this run
        self.probe.hold_lr = True
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                self.trainer.fit(self.model, datamodule=datamodule)
            except _Stop:
                pass
            except UserError:
                raise
            except Exception as err:  # the model's own fault: a finding of the run, not a crash of debug
                self.error = _anomaly(str(err), caught)
                if self.error is not None:
                    self.probe.seen.anomaly = self.error
                else:
                    self.error = _one_line(err)
        self.probe.finish(self.model)
        if "speed" in self.options.checks:
            self.probe.seen.planned_bytes = planned_bytes(self.model, datamodule, self.trainer.precision)

    def read_batches(self, loader: Any) -> tuple[list[Any], list[float]]:
        """The batches a debug run steps on (the first is the fixed batch), and the seconds each took;
        `loader` makes the recipe's own training loader."""
        return _read(loader(), DATA_BATCHES)


def planned_bytes(model: Any, datamodule: Any, precision: Any) -> int | None:
    """`bigtrain plan`'s estimate for one device at this run's batch and precision, or None."""
    from bigtrain.plan.facts import model_facts
    from bigtrain.plan.memory import ParallelLayout, estimate, precision_of

    try:
        facts = model_facts(model, datamodule)
        return estimate(facts, ParallelLayout("single", "single", 1, 1), precision_of(precision)).total
    except Exception:  # a side note: a model the planner cannot read still gets its report
        return None


def _read(loader: Any, n: int) -> tuple[list[Any], list[float]]:
    """Up to n batches of a loader and the seconds each took."""
    batches, seconds = [], []
    it = iter(loader)
    for _ in range(n):
        t = time.perf_counter()
        try:
            batches.append(next(it))
        except StopIteration:
            break
        seconds.append(time.perf_counter() - t)
    if not batches:
        raise _Stop("the training loader yielded no batch")
    return batches, seconds


def _anomaly(message: str, caught: list[Any]) -> str | None:
    """Anomaly detection's 'Function X returned nan values', with the forward line that made X."""
    if "returned nan" not in message and "returned inf" not in message:
        return None
    node = message.strip().splitlines()[0]
    for w in caught:
        text = str(w.message)
        if "Traceback of forward call" in text:
            frames = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("File ")]
            # The innermost frame outside torch and Lightning: the model's own line.
            frames = [f for f in frames if not _LIBRARY.search(f)] or frames
            if frames:
                return f"{node} (forward: {frames[-1]})"
    return node


def _one_line(err: BaseException) -> str:
    lines = [ln for ln in str(err).strip().splitlines() if ln.strip()]
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def verdicts(cli: DebugCLI, options: Options) -> list[Verdict]:
    """The report's rows for the checks asked for, in order; a run that crashed adds a `run` row."""
    seen = cli.probe.seen
    fam = family(cli.model)
    make = {
        "data": lambda: data_verdict(cli.data) if cli.data else Verdict("data", "FAIL", "no batch was read"),
        "shapes": lambda: shapes_verdict(seen),
        "grads": lambda: grads_verdict(seen),
        "learns": lambda: learns_verdict(seen, fam),
        "nan": lambda: nan_verdict(seen),
        "speed": lambda: speed_verdict(seen, cli.data),
    }
    rows = [make[name]() for name in options.checks]
    stopped = cli.data is not None and any("outside" in p for p in cli.data["problems"])
    if stopped:
        rows = [_skipped(r, ("data",), "not run: the data check failed") for r in rows]
    elif seen.anomaly:
        why = "not run: the first step's backward made NaN/Inf (see nan)"
        rows = [_skipped(r, ("data", "shapes", "nan"), why) for r in rows]
    if cli.error and not seen.anomaly:
        rows.append(Verdict("run", "FAIL", cli.error))
    return rows


def _skipped(row: Verdict, kept: tuple[str, ...], why: str) -> Verdict:
    return row if row.check in kept else Verdict(row.check, "skip", why)


def min_steps(checks: tuple[str, ...], steps: int) -> int:
    """Steps the run needs: all of `--steps` to judge learning, else enough to time a few steps."""
    if "learns" in checks:
        return max(steps, WARMUP_STEPS + 3)
    return WARMUP_STEPS + 3 if "speed" in checks else 1
