"""LeanHooks: Lightning no longer dispatches the per-batch hooks a callback leaves empty, and still calls the
ones it overrides (or sets on the instance)."""

from __future__ import annotations

from collections import Counter

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.profilers import Profiler
from torch.utils.data import DataLoader, TensorDataset

from bigtrain.callbacks.lean_hooks import LeanHooks
from bigtrain.callbacks.run_dir import default_callbacks
from bigtrain.lightning_compat import BATCH_HOOKS

STEPS = 3


class Actions(Profiler):
    """Counts the actions Lightning profiles: one `[Callback]<key>.<hook>` per callback hook it dispatches."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: Counter[str] = Counter()

    def start(self, action_name: str) -> None:  # noqa: D102
        self.seen[action_name] += 1

    def stop(self, action_name: str) -> None:  # noqa: D102
        pass


class Counting(Callback):
    def __init__(self) -> None:
        self.ends = 0

    def on_train_batch_end(self, *args) -> None:
        self.ends += 1


class Quiet(Callback):
    """Overrides no per-batch hook."""


class Net(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(*callbacks: Callback) -> Counter[str]:
    profiler = Actions()
    trainer = Trainer(
        max_steps=STEPS, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=list(callbacks), profiler=profiler,
    )  # fmt: skip
    data = TensorDataset(torch.randn(8, 4), torch.randn(8, 1))
    trainer.fit(Net(), DataLoader(data, batch_size=2))
    return profiler.seen


def _hooks_of(seen: Counter[str], cls: type) -> set[str]:
    names = {name.rsplit(".", 1)[-1] for name in seen if name.startswith(f"[Callback]{cls.__qualname__}")}
    return names & set(BATCH_HOOKS)


def test_empty_batch_hooks_are_not_dispatched_and_overridden_ones_still_run():
    counting, instance_hooked, calls = Counting(), Quiet(), []
    instance_hooked.on_train_batch_start = lambda *args: calls.append(1)  # set on the instance: kept
    seen = _fit(counting, Quiet(), instance_hooked, LeanHooks())
    assert counting.ends == STEPS and len(calls) == STEPS
    assert _hooks_of(seen, Counting) == {"on_train_batch_end"}
    assert _hooks_of(seen, Quiet) == {"on_train_batch_start"}  # only the instance's own
    assert _hooks_of(seen, LeanHooks) == set()
    assert seen["[Callback]Quiet.on_train_batch_start"] == STEPS


def test_without_lean_hooks_lightning_dispatches_every_empty_hook():
    """The comparison the test above relies on: Lightning calls empty hooks unless told otherwise."""
    seen = _fit(Counting(), Quiet())
    train_hooks = {h for h in BATCH_HOOKS if "validation" not in h}
    assert _hooks_of(seen, Quiet) == train_hooks
    assert seen["[Callback]Quiet.on_before_backward"] == STEPS


def test_every_run_gets_lean_hooks(tmp_path):
    for fitting in (True, False):
        made = default_callbacks(tmp_path, {"enable_progress_bar": False}, fitting=fitting)
        assert sum(isinstance(c, LeanHooks) for c in made) == 1


def test_a_bigtrain_fit_step_calls_no_empty_callback_hook():
    """Through `bigtrain fit` (the fixed-cost GPT): Callback's own empty hooks never run on a step."""
    from benchmarks import call_counts

    calls = call_counts.per_step_calls("bigtrain", call_counts.FIRST + 30)
    empty = {k: n for k, n in calls.items() if k.startswith("on_") and "pytorch/callbacks/callback.py" in k}
    assert empty == {}
    assert calls["on_train_batch_end (bigtrain/callbacks/final_step.py:19)"] == 1  # a hook in use still runs
