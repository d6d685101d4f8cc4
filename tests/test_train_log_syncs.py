"""Logging the training metrics reads nothing to the host on steps the loggers do not write.

Lightning turns every value logged with `prog_bar=True` into a Python number at the end of every batch (a
host sync per step on a GPU). bigtrain logs none that way; its bars read the losses when they draw. Counted
here: `.item()`, `.tolist()` and `.cpu()` called directly from Lightning's or bigtrain's code, per step,
away from the log steps, in a default `bigtrain fit` of each family with the non-finite guard off (its one
per-step read is covered by tests/reliability/test_step_syncs.py). The optimizer's own reads are torch's.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import lightning
import pytest
import torch

import bigtrain
from bigtrain.lightning_cli import run

STEPS, LOG_EVERY = 20, 10
QUIET_BATCHES = [b for b in range(1, STEPS - 1) if b % LOG_EVERY not in (LOG_EVERY - 1, 0)]
"""Not the first batch, nor one at or next to a log step, nor the last (the GAN's 20 steps are 10 batches)."""
OURS = (str(Path(lightning.__file__).parent), str(Path(bigtrain.__file__).parent))
RECIPES = ["cnn/glyphs", "transformer/builtin-char", "gan/glyphs"]


@pytest.fixture
def reads(monkeypatch) -> Counter:
    """{(batch, caller): host reads}, for reads made directly by Lightning's or bigtrain's code."""
    found: Counter = Counter()
    steps = [0]

    def counting(name: str, original):  # noqa: ANN001, ANN202
        def wrapper(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            caller = sys._getframe(1).f_code.co_filename
            if caller.startswith(OURS):
                found[(steps[0], f"{Path(caller).name}: {name}")] += 1
            return original(self, *args, **kwargs)

        return wrapper

    for name in ("item", "tolist", "cpu"):
        monkeypatch.setattr(torch.Tensor, name, counting(name, getattr(torch.Tensor, name)))
    found.steps, found.batches = steps, []  # the batch running and all batches, kept by BatchCounter
    return found


@pytest.mark.parametrize("recipe", RECIPES)
def test_no_host_read_from_logging_on_quiet_steps(tmp_path, reads, recipe, monkeypatch):
    from lightning.pytorch import Callback

    class BatchCounter(Callback):  # batches, not optimizer steps: the GAN steps twice per batch
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            reads.steps[0] = batch_idx
            reads.batches.append(batch_idx)

    monkeypatch.setattr(sys.modules[__name__], "BatchCounter", BatchCounter, raising=False)
    run("fit", ["--recipe", recipe, "--run_dir", str(tmp_path / "run"), "--trainer.max_steps", str(STEPS),
                "--trainer.log_every_n_steps", str(LOG_EVERY), "--trainer.limit_val_batches", "0",
                "--trainer.enable_progress_bar", "false", "--nonfinite.mode", "off",
                f"--trainer.callbacks+={__name__}.BatchCounter"])  # fmt: skip
    last = max(reads.batches)  # the final batch ends in the run's end (metrics.json): not a quiet one
    quiet: Counter = Counter()
    for (batch, what), n in reads.items():
        if batch in QUIET_BATCHES and batch < last:
            quiet[what] += n
    assert dict(quiet) == {}
