"""Fault injection: SIGKILL one of 2 ranks mid-training; the survivor names it and exits; `auto` resumes.

Three runs of a tiny GPT on 2 CPU ranks (gloo, Lightning's own launcher): uninterrupted for 16 steps (U);
killed by SIGKILL of rank 1 once the step-8 checkpoint is complete (K); K continued with `--ckpt_path auto`
to step 16. The continued run must equal U from its checkpoint on: the same per-step losses and the same
final weights, bit for bit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bigtrain.checkpoints.discover import find_resume_checkpoint
from bigtrain.checkpoints.manifest import manifest_path

HERE = Path(__file__).resolve().parent
RECORDER = HERE.parent / "distributed"
STEPS = 16
TIMEOUT_S = 30
GPT = [
    "fit", "--recipe", "transformer/builtin-char", "--data.batch_size", "8", "--data.block_size", "32",
    "--model.sample_tokens", "0", "--model.optim.warmup_steps", "2", "--model.optim.decay_steps", "50",
    "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
    "--trainer.strategy.timeout_s", str(TIMEOUT_S), "--trainer.limit_val_batches", "0",
    "--trainer.num_sanity_val_steps", "0", "--trainer.enable_progress_bar", "false", "--trainer.logger",
    "false", "--checkpoint.every_n_steps", "4", "--trainer.callbacks+=recorder.Record",
]  # fmt: skip


def _bigtrain(run: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env["PYTHONPATH"] = os.pathsep.join([str(RECORDER), env.get("PYTHONPATH", "")])
    env.pop("BIGTRAIN_RUN_DIR", None)
    cmd = [sys.executable, "-m", "bigtrain", *GPT, "--run_dir", str(run), *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def _child(pid: int) -> int:
    """The one process Lightning's launcher started for rank 1."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert len(children) == 1, children
    environ = Path(f"/proc/{children[0]}/environ").read_bytes().split(b"\0")
    assert b"LOCAL_RANK=1" in environ
    return int(children[0])


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds rank 1's process through /proc")
def test_killed_rank_is_named_and_auto_resume_matches_the_uninterrupted_run(tmp_path):
    full = _bigtrain(tmp_path / "U", "--trainer.max_steps", str(STEPS))
    killed = _bigtrain(tmp_path / "K", "--trainer.max_steps", "200")
    step8 = manifest_path(tmp_path / "K" / "checkpoints" / "epoch=0-step=8.ckpt")
    deadline = time.monotonic() + 600
    while not step8.exists():
        assert killed.poll() is None and time.monotonic() < deadline, killed.communicate()[1][-3000:]
        time.sleep(0.1)
    os.kill(_child(killed.pid), 9)
    killed_at = time.monotonic()
    code, err = _finish(killed, timeout=TIMEOUT_S + 30)
    took = time.monotonic() - killed_at
    line = [x for x in err.splitlines() if x.startswith("bigtrain: error:")]
    print(f"survivor exited {took:.1f} s after the kill with {code}: {line}")
    assert code == 1 and took < TIMEOUT_S, err[-3000:]
    assert len(line) == 1 and line[0].startswith("bigtrain: error: rank 1 of 2 died"), err[-3000:]
    assert "resume with --ckpt_path auto" in line[0]

    code, err = _finish(full)
    assert code == 0, err[-3000:]
    start = torch.load(find_resume_checkpoint(tmp_path / "K"), weights_only=True)["global_step"]
    assert 8 <= start < STEPS
    code, err = _finish(_bigtrain(tmp_path / "K", "--trainer.max_steps", str(STEPS), "--ckpt_path", "auto"))
    assert code == 0, err[-3000:]

    from safetensors.torch import load_file

    expected = json.loads((tmp_path / "U" / "losses.json").read_text())["train/loss"]
    resumed = json.loads((tmp_path / "K" / "losses.json").read_text())["train/loss"]
    print(f"resumed from step {start}: {resumed}")
    assert resumed == expected[start:]
    weights = load_file(tmp_path / "K" / "weights.safetensors")
    for name, value in load_file(tmp_path / "U" / "weights.safetensors").items():
        assert torch.equal(weights[name], value), name


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds rank 1's process through /proc")
def test_hung_rank_is_named_after_the_collective_timeout(tmp_path):
    """SIGSTOP rank 1: rank 0's collective times out after timeout_s; rank 1 never checks in at the store."""
    timeout_s = 10
    hung = _bigtrain(
        tmp_path / "H", "--trainer.max_steps", "200", "--trainer.strategy.timeout_s", str(timeout_s)
    )
    step4 = manifest_path(tmp_path / "H" / "checkpoints" / "epoch=0-step=4.ckpt")
    deadline = time.monotonic() + 600
    while not step4.exists():
        assert hung.poll() is None and time.monotonic() < deadline, hung.communicate()[1][-3000:]
        time.sleep(0.1)
    os.kill(_child(hung.pid), 19)  # SIGSTOP: alive, but never arrives
    stopped_at = time.monotonic()
    code, err = _finish(hung, timeout=120)
    took = time.monotonic() - stopped_at
    line = [x for x in err.splitlines() if x.startswith("bigtrain: error:")]
    print(f"rank 0 exited {took:.1f} s after rank 1 stopped, with {code}: {line}")
    # The collective waits timeout_s, then the survivors wait for each other at the store (up to 10 s).
    assert code == 1 and timeout_s <= took < timeout_s + 10 + 20, err[-3000:]
    assert len(line) == 1 and line[0].startswith("bigtrain: error: rank 1 of 2 did not arrive"), err[-3000:]
