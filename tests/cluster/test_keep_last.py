"""`--checkpoint.keep_last K` keeps exactly the K newest checkpoints, with `last.ckpt` linking the newest,
also across restarts: the checkpoint a run resumed from (a regular or a preemption one) goes once no policy
keeps it, and `last.ckpt` is replaced, never versioned (`last-v1.ckpt`)."""

from __future__ import annotations

import signal
from pathlib import Path

import yaml

QUICK = [
    "--recipe", "transformer/builtin-char", "--trainer.enable_progress_bar", "false",
    "--trainer.limit_val_batches", "1", "--data.train_samples", "256", "--data.batch_size", "32",
    "--data.num_workers", "0", "--checkpoint.every_n_steps", "2", "--checkpoint.best", "null",
    "--checkpoint.keep_last", "2",
]  # fmt: skip
ENV = {"PYTHONPATH": str(Path(__file__).resolve().parent)}


def _left(run: Path) -> tuple[list[str], str]:
    folder = run / "checkpoints"
    files = sorted(p.name for p in folder.iterdir())
    return files, (folder / "last.ckpt").resolve().name


def _expect(*names: str) -> list[str]:
    return sorted([*names, *(f"{n}.manifest.json" for n in names), "last.ckpt"])


def test_keep_last_holds_across_restarts(bigtrain_cmd, tmp_path):
    run = tmp_path / "run"
    first = bigtrain_cmd("fit", *QUICK, "--trainer.max_steps", "6", "--run_dir", str(run), env=ENV)
    assert first.returncode == 0, first.stderr[-2000:]
    assert _left(run) == (_expect("epoch=0-step=4.ckpt", "epoch=0-step=6.ckpt"), "epoch=0-step=6.ckpt")

    again = bigtrain_cmd("fit", *QUICK, "--trainer.max_steps", "12", "--ckpt_path", "auto",
                         "--run_dir", str(run), env=ENV)  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    assert _left(run) == (_expect("epoch=1-step=10.ckpt", "epoch=1-step=12.ckpt"), "epoch=1-step=12.ckpt")


def test_a_preemption_checkpoint_goes_once_the_resumed_run_saves(bigtrain_cmd, tmp_path):
    run = tmp_path / "run"
    send = {"class_path": "steplog.SendSignal", "init_args": {"at": 3, "signum": int(signal.SIGUSR1)}}
    signals = tmp_path / "signal.yaml"
    signals.write_text(yaml.safe_dump({"trainer": {"callbacks": [send]}}))
    stopped = bigtrain_cmd("fit", *QUICK, "--trainer.max_steps", "8", "--config", str(signals),
                           "--run_dir", str(run), env=ENV)  # fmt: skip
    assert stopped.returncode == 75, stopped.stderr[-2000:]  # saved, not requeued: no SLURM here
    assert _left(run)[0] == _expect("epoch=0-step=2.ckpt", "preempt-step=3.ckpt")

    resumed = bigtrain_cmd("fit", *QUICK, "--trainer.max_steps", "8", "--ckpt_path", "auto",
                           "--run_dir", str(run), env=ENV)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _left(run) == (_expect("epoch=0-step=6.ckpt", "epoch=0-step=8.ckpt"), "epoch=0-step=8.ckpt")
