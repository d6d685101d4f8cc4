"""End to end on a real SLURM cluster (controller + emulated nodes n1, n2): submit, run, preempt, resume."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import QUICK, bigtrain, job_field, wait_for, wait_for_state
from steplog import read_steps

pytestmark = pytest.mark.cluster
MAX_STEPS = 20  # QUICK's trainer.max_steps
FINISHED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")


def submit(env: dict[str, str], jobs: list[str], recipe: str, run_dir: Path, nodes: int, per_node: int,
           *extra: str) -> str:  # fmt: skip
    """`bigtrain submit slurm` a quick CPU run; returns the job id (also appended to `jobs`)."""
    # n1 and n2 do not resolve to an address: the ranks meet on this host's loopback.
    result = bigtrain(
        env, "submit", "slurm", "--recipe", recipe, *QUICK, *extra, "--nodes", str(nodes),
        "--gpus-per-node", str(per_node), "--run-dir", str(run_dir), "--env", "MASTER_ADDR=127.0.0.1",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    job_id = re.search(r"submitted SLURM job (\d+)", result.stdout).group(1)
    jobs.append(job_id)
    assert f"run directory: {run_dir}" in result.stdout
    assert f"log: {run_dir}/slurm-{job_id}.out" in result.stdout
    return job_id


def finish(env: dict[str, str], job_id: str, run_dir: Path, timeout: float = 240) -> str:
    """Wait for the job to end; returns its log, failing with it unless the job COMPLETED."""
    state = wait_for_state(env, job_id, FINISHED, timeout)
    log = (run_dir / f"slurm-{job_id}.out").read_text()
    assert state == "COMPLETED", log
    return log


def ranks_seen(run_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(run_dir.glob("ranks-*.json"))]


@pytest.mark.slow
def test_two_nodes_one_rank_each(slurm_env, cancel_after, recipe, tmp_path):
    run = tmp_path / "run"
    job_id = submit(
        slurm_env, cancel_after, recipe, run, 2, 1
    )  # accelerator auto: the test cluster has no GPUs
    script = (run / "job.sbatch").read_text()
    assert "#SBATCH --nodes=2" in script and "gpus-per-node" not in script
    log = finish(slurm_env, job_id, run)

    assert f"no checkpoint in {run}/checkpoints: starting fresh" in log  # --ckpt_path auto, first run
    # bigtrain's Preemption callback handles the signals; Lightning's own requeue (saving inside the signal
    # handler) must be off.
    assert "SLURM auto-requeueing enabled" not in log
    assert json.loads((run / "metrics.json").read_text())["global_step"] == MAX_STEPS
    ranks = ranks_seen(run)
    assert [(r["global_rank"], r["node_rank"], r["world_size"]) for r in ranks] == [(0, 0, 2), (1, 1, 2)]
    for rank in (0, 1):
        assert read_steps(run / f"steps-rank{rank}.txt") == [list(range(1, MAX_STEPS + 1))]

    listed = bigtrain(slurm_env, "jobs")
    assert listed.returncode == 0, listed.stderr
    assert any(
        line.split()[:2] == [job_id, "COMPLETED"] and str(run) in line for line in listed.stdout.splitlines()
    )


@pytest.mark.slow
def test_one_node_two_tasks(slurm_env, cancel_after, recipe, tmp_path):
    run = tmp_path / "run"
    job_id = submit(slurm_env, cancel_after, recipe, run, 1, 2)
    finish(slurm_env, job_id, run)
    assert json.loads((run / "metrics.json").read_text())["global_step"] == MAX_STEPS
    ranks = ranks_seen(run)
    assert [(r["global_rank"], r["local_rank"], r["node_rank"]) for r in ranks] == [(0, 0, 0), (1, 1, 0)]


RECORD = ["--trainer.callbacks+=recorder.Record"]
"""Per-step losses (losses.json) and the final weights (weights.safetensors) of the run's last process."""


@pytest.mark.slow
def test_preempted_job_checkpoints_requeues_and_finishes_exactly(slurm_env, cancel_after, recipe, tmp_path):
    """Preempted mid-epoch, requeued and resumed, the job ends with the per-step losses and final weights
    of the same job run uninterrupted."""
    run = tmp_path / "run"
    # Slow steps (0.5 s each) leave time to signal the job mid-training.
    job_id = submit(slurm_env, cancel_after, recipe, run, 2, 1, "--trainer.callbacks.delay", "0.5", *RECORD)
    steps_file = run / "steps-rank0.txt"
    wait_for(
        lambda: steps_file.exists() and len(steps_file.read_text().split()) >= 5, 180, "training to start"
    )
    # What SLURM does before the time limit (#SBATCH --signal=USR1@90), without waiting for it.
    subprocess.run(["scancel", "--signal=USR1", job_id], env=slurm_env, check=True)

    # A requeued job waits about two minutes (BeginTime) before it may start again; start it now.
    wait_for(lambda: job_field(slurm_env, job_id, "Restarts") == "1", 120, f"job {job_id} to be requeued")
    wait_for_state(slurm_env, job_id, ("PENDING",), 60)
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], env=slurm_env, check=True)
    log = finish(slurm_env, job_id, run)

    saved = re.search(
        rf"preempted by SIGUSR1 after step (\d+): saved (\S+); requeued SLURM job {job_id}", log
    )
    assert saved, log
    step = int(saved.group(1))
    assert 0 < step < MAX_STEPS and saved.group(2) == f"{run}/checkpoints/preempt-step={step}.ckpt"
    # The same final step count as an uninterrupted run, and no step trained twice past the saved one.
    assert json.loads((run / "metrics.json").read_text())["global_step"] == MAX_STEPS
    for rank in (0, 1):
        first, second = read_steps(run / f"steps-rank{rank}.txt")
        assert first == list(range(1, step + 1)), first
        assert second == list(range(step + 1, MAX_STEPS + 1)), second
    assert {r["restart"] for r in ranks_seen(run)} == {1}

    full = tmp_path / "uninterrupted"
    finish(slurm_env, submit(slurm_env, cancel_after, recipe, full, 2, 1, *RECORD), full)
    from safetensors.torch import load_file

    expected = json.loads((full / "losses.json").read_text())["train/loss"]
    resumed = json.loads((run / "losses.json").read_text())["train/loss"]
    assert len(expected) == MAX_STEPS and resumed == expected[step:], (step, resumed, expected)
    weights = load_file(run / "weights.safetensors")
    assert all(torch.equal(weights[k], v) for k, v in load_file(full / "weights.safetensors").items())


def test_unknown_partition_is_one_line_and_exit_2(slurm_env, recipe, tmp_path):
    result = bigtrain(
        slurm_env, "submit", "slurm", "--recipe", recipe, "--nodes", "1", "--gpus-per-node", "1",
        "--partition", "gpu-large", "--run-dir", str(tmp_path / "run"),
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "unknown partition 'gpu-large'" in result.stderr and "debug" in result.stderr
    assert not (tmp_path / "run").exists()
