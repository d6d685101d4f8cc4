"""Ctrl-C during `bigtrain fit`: every rank stops at the next step boundary, saves, writes metrics.json and
prints the command that resumes; that command continues exactly as an uninterrupted run (1 rank, DDP on 2)."""

from __future__ import annotations

import json
import random
import re
import shlex
import signal
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Trainer
from steplog import SendSignal, StepLog, Tiny

from bigtrain.callbacks.preemption import Preemption

ROOT = Path(__file__).resolve().parents[2]
PATHS = {"PYTHONPATH": f"{ROOT / 'tests' / 'cluster'}:{ROOT / 'tests' / 'distributed'}"}
STEPS = 10
QUICK = [
    "--recipe", "transformer/builtin-char", "--trainer.max_steps", str(STEPS),
    "--trainer.enable_progress_bar", "false", "--trainer.limit_val_batches", "2",
    "--data.train_samples", "512", "--data.batch_size", "16", "--data.num_workers", "0",
    "--trainer.accelerator", "cpu",
]  # fmt: skip


def _callbacks(tmp_path: Path, at: int | None, ranks: list[int]) -> Path:
    callbacks = [{"class_path": "recorder.Record"}]
    if at is not None:
        args = {"at": at, "signum": int(signal.SIGINT), "ranks": ranks}
        callbacks.append({"class_path": "steplog.SendSignal", "init_args": args})
    path = tmp_path / f"callbacks-{at}.yaml"
    path.write_text(yaml.safe_dump({"trainer": {"callbacks": callbacks}}))
    return path


def _losses(run: Path) -> list[float]:
    return json.loads((run / "losses.json").read_text())["train/loss"]


@pytest.mark.slow
@pytest.mark.parametrize("devices", [1, 2], ids=["one-rank", "ddp-2"])
def test_ctrl_c_saves_and_the_printed_command_resumes_exactly(devices, bigtrain_cmd, tmp_path):
    from safetensors.torch import load_file

    layout = ["--trainer.devices", str(devices)]
    layout += ["--trainer.strategy", "ddp" if devices > 1 else "single"]
    at = random.randint(2, STEPS - 2)
    full, run = tmp_path / "full", tmp_path / "run"
    whole = bigtrain_cmd("fit", *QUICK, *layout, "--config", str(_callbacks(tmp_path, None, [])),
                         "--run_dir", str(full), env=PATHS)  # fmt: skip
    assert whole.returncode == 0, whole.stderr[-3000:]

    signals = _callbacks(tmp_path, at, list(range(devices)))  # a terminal's Ctrl-C reaches every rank
    stopped = bigtrain_cmd("fit", *QUICK, *layout, "--config", str(signals), "--run_dir", str(run), env=PATHS)
    assert stopped.returncode == 130, (at, stopped.stderr[-3000:])
    line = re.search(r"^interrupted by SIGINT after step (\d+): saved (\S+); resume with: (.+)$",
                     stopped.stderr, re.M)  # fmt: skip
    assert line, stopped.stderr[-3000:]
    assert int(line.group(1)) == at and line.group(2) == f"{run}/checkpoints/preempt-step={at}.ckpt"
    assert json.loads((run / "metrics.json").read_text())["global_step"] == at
    assert line.group(3) == f"bigtrain fit --config {run}/config.yaml --ckpt_path auto"

    command = shlex.split(line.group(3))
    assert command[0] == "bigtrain"
    resumed = bigtrain_cmd(*command[1:], env=PATHS)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text())["global_step"] == STEPS
    assert _losses(run) == _losses(full)[at:], at  # no step trained twice, none skipped, same values
    expected = load_file(full / "weights.safetensors")
    got = load_file(run / "weights.safetensors")
    assert expected.keys() == got.keys() and all(torch.equal(got[k], v) for k, v in expected.items())


def test_sigterm_outside_slurm_is_an_interrupt(tmp_path, monkeypatch, capsys):
    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_NTASKS", "SLURM_JOB_NAME"):
        monkeypatch.delenv(name, raising=False)
    trainer = Trainer(default_root_dir=str(tmp_path), max_steps=8, accelerator="cpu", devices=1,
                      callbacks=[SendSignal(at=3, signum=signal.SIGTERM), StepLog(), Preemption()],
                      logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False)  # fmt: skip
    with pytest.raises(SystemExit) as stop:
        trainer.fit(Tiny())
    assert stop.value.code == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert "interrupted by SIGTERM after step 3" in err and "resume with:" in err
    assert (tmp_path / "checkpoints" / "preempt-step=3.ckpt").is_file()


def test_a_second_ctrl_c_aborts_at_once():
    callback = Preemption()
    try:
        callback._record(signal.SIGINT, None)  # the first only asks for a stop at the step's end
    except KeyboardInterrupt:  # escaping, it would end the whole test session instead of failing here
        pytest.fail("the first Ctrl-C aborted at once")
    assert callback.received == signal.SIGINT
    with pytest.raises(KeyboardInterrupt):
        callback._record(signal.SIGINT, None)
