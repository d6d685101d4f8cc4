"""A run that `max_steps` stops inside an epoch is validated and checkpointed at its end, for every family."""

from __future__ import annotations

import json

import pytest

# Built-in data, and a max_steps that ends the first epoch part-way (validation runs once an epoch).
CASES = {
    "cnn/glyphs": (["--data.num_samples", "1024", "--data.batch_size", "32"], 5, "val/acc"),
    "autoencoder/glyphs": (["--data.num_samples", "1024", "--data.batch_size", "32"], 5, "val/loss"),
    "gan/glyphs": (["--data.num_samples", "1024", "--data.batch_size", "32"], 6, "val/d_loss"),
    "rnn/builtin-char": (["--data.train_samples", "512", "--data.batch_size", "32"], 5, "val/loss"),
    "transformer/builtin-char": (["--data.train_samples", "512", "--data.batch_size", "32"], 5, "val/loss"),
}
COMMON = ["--trainer.enable_progress_bar", "false", "--trainer.limit_val_batches", "2"]
COMMON += ["--trainer.val_check_interval", "1.0", "--data.num_workers", "0", "--checkpoint.best", "null"]


@pytest.mark.parametrize("recipe", sorted(CASES))
def test_max_steps_inside_an_epoch_is_validated_and_checkpointed(recipe, bigtrain_cmd, tmp_path):
    extra, steps, metric = CASES[recipe]
    run = tmp_path / "run"
    result = bigtrain_cmd(
        "fit", "--recipe", recipe, *COMMON, *extra, "--trainer.max_steps", str(steps), "--run_dir", str(run)
    )
    assert result.returncode == 0, result.stderr[-2000:]
    saved = sorted(p.name for p in (run / "checkpoints").glob("*.ckpt") if not p.is_symlink())
    assert saved == [f"epoch=0-step={steps}.ckpt"], saved  # inside epoch 0, at the final step
    assert (run / "checkpoints" / "last.ckpt").resolve().name == f"epoch=0-step={steps}.ckpt"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_step"] == steps and metric in metrics, metrics
