"""`--checkpoint.best`: the one best checkpoint by a validation metric, `best-step=N.ckpt`, in either mode.

A real run validates every 2 steps; a callback records each validation's metrics, and the checkpoint kept
must be the one at the step whose metric was best (lowest for `min`, highest for `max`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

ENV = {"PYTHONPATH": str(Path(__file__).resolve().parent)}
QUICK = [
    "--recipe", "transformer/builtin-char", "--trainer.enable_progress_bar", "false",
    "--data.train_samples", "256", "--data.batch_size", "32", "--data.num_workers", "0",
    "--trainer.max_steps", "8", "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "2",
    "--model.sample_tokens", "0", "--trainer.callbacks+=val_log.ValLog",
]  # fmt: skip


def _validations(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "validations.jsonl").read_text().splitlines()]


def _best(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").glob("best-*.ckpt"))


@pytest.mark.parametrize(
    ("flags", "metric", "pick"),
    [
        ([], "val/loss", min),  # `auto`: the transformer's own metric, val/loss, lowest
        (["--checkpoint.best", "val/loss", "--checkpoint.best_mode", "max"], "val/loss", max),
    ],
)
def test_the_best_checkpoint_is_the_best_validation(bigtrain_cmd, tmp_path, flags, metric, pick):
    run = tmp_path / "run"
    done = bigtrain_cmd("fit", *QUICK, *flags, "--run_dir", str(run), env=ENV)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = _validations(run)
    assert [v["step"] for v in seen] == [2, 4, 6, 8]
    values = [v[metric] for v in seen]
    assert len(set(values)) == len(values), values  # a clear winner either way
    step = pick(seen, key=lambda v: v[metric])["step"]
    assert _best(run) == [f"best-step={step}.ckpt"], (values, _best(run))
    saved = torch.load(run / "checkpoints" / f"best-step={step}.ckpt", weights_only=True, map_location="cpu")
    assert saved["global_step"] == step


def test_best_null_keeps_none(bigtrain_cmd, tmp_path):
    run = tmp_path / "run"
    done = bigtrain_cmd("fit", *QUICK, "--checkpoint.best", "null", "--run_dir", str(run), env=ENV)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _best(run) == [] and len(_validations(run)) == 4
