"""What a run prints: plain progress lines without a terminal, step counts, validation metrics, no warnings a
user cannot act on, honest fast_dev_run, help pages and strategy suggestions."""

from __future__ import annotations

from types import SimpleNamespace
from unittest import mock

import pytest
import torch

from bigtrain.callbacks.progress import ProgressLog, StepProgressBar, bounded_by_steps, val_metrics
from bigtrain.errors import UserError
from bigtrain.strategies import resolve_strategy
from tests.conftest import run_bigtrain

QUICK = ("fit", "--recipe", "cnn/glyphs", "--data.num_samples", "256", "--trainer.log_every_n_steps", "1")
SHOWN = {
    "val/loss": 2.5,
    "val/ppl": 12.0,
    "val/acc": 0.5,
    "val/psnr": 20.0,
    "val/d_loss": 1.0,
    "val/g_loss": 2.0,
}


def test_quickstart_without_a_terminal_prints_plain_lines_and_no_warnings(tmp_path):
    run = run_bigtrain(
        *QUICK,
        *("--trainer.max_steps", "4", "--progress.every_n_steps", "2", "--run_dir", str(tmp_path / "r")),
        env={"PYTHONWARNINGS": ""},  # as a user has it: the helper's `ignore` would hide what is looked for
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr.strip() == ""  # no warnings, no hints, no deprecations
    lines = run.stdout.splitlines()
    steps = [line for line in lines if line.startswith("step ")]
    assert [line.split(" |")[0] for line in steps] == ["step 2/4", "step 4/4"]
    assert all("loss " in s and "lr " in s and "samples/s" in s and "eta " in s for s in steps)
    assert any(line.startswith("validation at step 4: val/acc ") and "val/loss " in line for line in lines)
    assert "Tip:" not in run.stdout and "it/s" not in run.stdout  # no product tip, no end-of-run bar
    assert lines[-1].endswith("(metrics.json, config.yaml, checkpoints/)")


def test_fast_dev_run_writes_no_checkpoint_and_names_only_what_exists(tmp_path):
    run_dir = tmp_path / "r"
    run = run_bigtrain(*QUICK, "--trainer.fast_dev_run", "true", "--run_dir", str(run_dir))
    assert run.returncode == 0, run.stderr
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "config.yaml").exists()
    assert run.stdout.splitlines()[-1] == f"run directory: {run_dir} (metrics.json)"


@pytest.mark.slow
@pytest.mark.distributed
def test_two_rank_ddp_prints_no_future_warning(tmp_path):
    run = run_bigtrain(
        *QUICK,
        *("--trainer.max_steps", "3", "--trainer.strategy", "ddp", "--trainer.devices", "2"),
        *("--trainer.accelerator", "cpu", "--run_dir", str(tmp_path / "r")),
        env={"PYTHONWARNINGS": ""},
    )
    assert run.returncode == 0, run.stderr
    assert "Warning" not in run.stderr and "deprecated" not in run.stderr, run.stderr


def _trainer(**kw):
    base = {"max_steps": -1, "max_epochs": 3, "num_training_batches": 75, "accumulate_grad_batches": 1}
    return SimpleNamespace(**{**base, **kw})


def test_steps_bound_the_run_when_max_steps_ends_it_first():
    assert not bounded_by_steps(_trainer())
    assert bounded_by_steps(_trainer(max_steps=2000, max_epochs=-1))
    assert bounded_by_steps(_trainer(max_steps=100, max_epochs=3))  # 100 < 3 x 75
    assert not bounded_by_steps(_trainer(max_steps=1000, max_epochs=3))


def test_step_bar_counts_steps_and_shows_each_familys_val_metrics():
    bar = StepProgressBar()
    bar.progress, bar.train_progress_bar_id = mock.Mock(), 0
    bar._show_steps(_trainer(max_steps=2000, max_epochs=-1, global_step=120))
    bar.progress.update.assert_called_once_with(0, total=2000, completed=120, description="step")
    metrics = {**{k: torch.tensor(v) for k, v in SHOWN.items()}, "val/bpc": torch.tensor(3.0)}
    trainer = SimpleNamespace(callback_metrics=metrics, progress_bar_metrics={"train/loss": 2.0}, loggers=[])
    assert val_metrics(trainer) == SHOWN
    assert bar.get_metrics(trainer, None) == {"train/loss": 2.0, **SHOWN}


def test_progress_log_prints_every_n_steps_and_validation(capsys):
    log = ProgressLog(every_n_steps=2)
    optim = SimpleNamespace(param_groups=[{"lr": 0.003}])
    trainer = _trainer(max_steps=4, global_step=0, is_global_zero=True, current_epoch=0, optimizers=[optim])
    trainer.estimated_stepping_batches, trainer.sanity_checking = 4, False
    trainer.datamodule = SimpleNamespace(batch_size=64)
    trainer.callback_metrics = {"train/loss": torch.tensor(2.25), "val/acc": torch.tensor(0.5)}
    log.on_train_start(trainer, None)
    for step in (1, 2, 3, 4):
        trainer.global_step = step
        log.on_train_batch_end(trainer, None)
    log.on_validation_start(trainer, None)
    log.on_validation_end(trainer, None)
    out = capsys.readouterr().out.splitlines()
    assert [line.split(" | ")[:4] for line in out[:2]] == [
        ["step 2/4", "epoch 0", "loss 2.25", "lr 0.003"],
        ["step 4/4", "epoch 0", "loss 2.25", "lr 0.003"],
    ]
    assert out[2] == "validation at step 4: val/acc 0.5"


def test_unknown_strategy_suggests_the_nearest_and_lists_bigtrains():
    with pytest.raises(UserError) as err:
        resolve_strategy("dpp", {"accelerator": "cpu", "devices": 1})
    assert str(err.value).startswith(
        "unknown strategy 'dpp'; did you mean 'ddp'? (valid: auto, ddp, fsdp, single"
    )
    assert resolve_strategy("ddp_spawn", {"accelerator": "cpu", "devices": 1}) == "ddp_spawn"  # Lightning's


def _help(*args: str) -> str:
    run = run_bigtrain("fit", *args)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_recipe_help_lists_model_and_data_options_presets_and_ckpt_path_auto():
    out = _help("--recipe", "cnn/glyphs", "--help")
    assert "--model.net.width" in out and "--data.num_samples" in out
    assert "--model.net.preset: one of tiny, resnet18" in out
    assert "`auto` resumes" in " ".join(out.split())


@pytest.mark.parametrize(
    "args", [("--trainer.strategy", "fsdp", "--help"), ("--trainer.strategy.help", "fsdp")]
)
def test_strategy_help_shows_the_strategys_options(args):
    assert "--trainer.strategy.tensor_parallel_size" in _help(*args)


def test_step_bar_reads_the_training_losses_itself_at_most_every_refresh():
    """Lightning's bar reads logged losses to the host every step; this one reads them when it redraws."""
    bar = StepProgressBar()
    trainer = SimpleNamespace(callback_metrics={}, progress_bar_metrics={}, loggers=[])
    trainer.callback_metrics = {"train/d_loss": torch.tensor(0.5), "train/g_loss": torch.tensor(2.0)}
    trainer.callback_metrics["train/d_real"] = torch.tensor(0.7)  # not a loss: not shown
    assert bar.get_metrics(trainer, None) == {"train/d_loss": 0.5, "train/g_loss": 2.0}
    trainer.callback_metrics["train/d_loss"] = torch.tensor(0.25)
    assert bar.get_metrics(trainer, None)["train/d_loss"] == 0.5  # within train_refresh_s: not read again
    bar.train_refresh_s = 0.0
    assert bar.get_metrics(trainer, None)["train/d_loss"] == 0.25
