"""20 steps of each family on a CUDA GPU under `torch.cuda.set_sync_debug_mode`: bigtrain's callbacks force
no device sync on a step, except the non-finite guard's one flag read in `stop`/`skip` mode, and none with
`--nonfinite.mode off`.

The mode is "warn", not "error": Lightning and torchmetrics may sync in code that is not bigtrain's (their
logging, argument validation), and each warning names the Python line that synced, so only bigtrain's
callbacks are held to it here.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from bigtrain.lightning_cli import run

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

CALLBACKS = str(Path(__file__).resolve().parents[2] / "bigtrain" / "callbacks")
RECIPES = {
    "cnn/glyphs": ["--data.num_samples", "1600"],
    "rnn/builtin-char": [],
    "transformer/builtin-char": [],
    "autoencoder/glyphs": ["--data.num_samples", "1600"],
    "gan/glyphs": ["--data.num_samples", "1600"],
}


def _syncs_in_callbacks(tmp_path: Path, recipe: str, *extra: str) -> list[str]:
    args = ["--recipe", recipe, "--run_dir", str(tmp_path / "run"), "--trainer.accelerator", "gpu"]
    args += ["--trainer.max_steps", "20", "--trainer.log_every_n_steps", "50"]
    args += ["--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run("fit", [*args, *RECIPES[recipe], *extra])
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return [
        f"{Path(w.filename).name}:{w.lineno}"
        for w in caught
        if "synchroniz" in str(w.message) and w.filename.startswith(CALLBACKS)
    ]


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_callbacks_do_not_sync_on_a_step(tmp_path, recipe):
    assert _syncs_in_callbacks(tmp_path, recipe, "--nonfinite.mode", "off") == []


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_the_guard_reads_one_flag_per_optimizer_step(tmp_path, recipe):
    where = set(_syncs_in_callbacks(tmp_path, recipe))
    assert len(where) <= 1 and all(w.startswith("nonfinite.py:") for w in where), where
