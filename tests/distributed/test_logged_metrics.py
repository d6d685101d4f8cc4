"""Logged train metrics are the global batch's: the same in TensorBoard under single, ddp and fsdp.

Every family runs 10 batches from the same seed under `single` (1 process) and `ddp` / `fsdp` (2 gloo ranks,
each with half the global batch), logging every 2 steps to TensorBoard; the event files are read back and
every `train/` scalar at every logged step must agree within 1e-5 (relative). Before the reduction at log
steps, ddp logged rank 0's half (e.g. step 0's loss 4.1399 against 4.1417). A single-process fit checks the
other half of the contract: the reduction runs at logging steps only, never on the steps between.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from dist_helpers import FAMILIES, fit_args, launch, wait

from bigtrain.lightning_cli import run
from bigtrain.models import train_metrics

RTOL = 1e-5
BATCHES = 10
EVERY = 2
STRATEGIES = ("ddp", "fsdp")


def _args(family: str, run_dir: Path, *extra: str) -> list[str]:
    """The shared quick run, with the default TensorBoard logger and without the test-only recorder."""
    args = fit_args(family, run_dir, steps=BATCHES)
    args.remove("--trainer.callbacks+=recorder.Record")
    at = args.index("--trainer.logger")
    del args[at : at + 2]
    return [*args, "--trainer.log_every_n_steps", str(EVERY), "--throughput.enabled", "false", *extra]


def _scalars(run_dir: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    error = run_dir / "error.txt"
    assert not error.exists(), f"{run_dir.name} failed: {error.read_text()}"
    events = EventAccumulator(str(run_dir)).Reload()
    tags = [t for t in events.Tags()["scalars"] if t.startswith("train/")]
    return {t: {e.step: e.value for e in events.Scalars(t)} for t in tags}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Every family under single (1 process) and ddp / fsdp (2 ranks), logging to TensorBoard."""
    work = tmp_path_factory.mktemp("logged")
    one = {f"{f}-single": _args(f, work / f"{f}-single", "--trainer.strategy", "single") for f in FAMILIES}
    two = {
        f"{f}-{s}": _args(f, work / f"{f}-{s}", "--trainer.strategy", s, "--trainer.devices", "2")
        for f in FAMILIES
        for s in STRATEGIES
    }
    launches = [(launch(one, 1, work), 1), (launch(two, 2, work), 2)]
    for proc, nproc in launches:
        wait(proc, work, nproc)
    return work


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_train_scalars_are_the_global_batch_under_every_strategy(runs, family, strategy):
    ref, got = _scalars(runs / f"{family}-single"), _scalars(runs / f"{family}-{strategy}")
    loss = "train/d_loss" if family == "gan" else "train/loss"
    assert len(ref.get(loss, ())) == BATCHES // EVERY, (loss, ref)  # per step (epoch means come once)
    assert ref.keys() == got.keys(), (sorted(ref), sorted(got))
    worst = 0.0
    for tag, steps in ref.items():
        assert steps.keys() == got[tag].keys(), (tag, steps, got[tag])
        for step, value in steps.items():
            worst = max(worst, abs(got[tag][step] - value) / max(abs(value), 1e-12))
    print(f"{family} {strategy}: max rel diff of logged train scalars {worst:.2e}")
    assert worst <= RTOL


def test_train_metrics_are_reduced_at_logging_steps_only(tmp_path, monkeypatch):
    reduced_at: Counter = Counter()
    original = train_metrics.global_means

    def counting(strategy, values, size):  # noqa: ANN001, ANN202
        reduced_at[strategy.lightning_module.trainer.fit_loop.epoch_loop.batch_idx] += 1
        return original(strategy, values, size)

    monkeypatch.setattr(train_metrics, "global_means", counting)
    args = _args(
        "transformer", tmp_path / "run", "--trainer.max_steps", "12", "--trainer.log_every_n_steps", "5"
    )
    run("fit", args)
    assert dict(reduced_at) == {4: 1, 9: 1, 11: 1}  # the batches the loggers write: every 5th, and the last
