"""Fixtures for the cluster tests: a real SLURM cluster on this machine, and a quick recipe to submit."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CLUSTER_SCRIPT = REPO / ".ci" / "slurm-cluster.sh"
# The recipe the end-to-end tests submit (a name or a YAML file); any quick CPU recipe will do.
RECIPE = os.environ.get("BIGTRAIN_CLUSTER_RECIPE", "cnn/glyphs")
# A short CPU run of cnn/glyphs: few samples, no workers, no progress bar, and a callback that records
# what each rank trained.
QUICK = [
    "--trainer.max_steps", "20",
    "--trainer.enable_progress_bar", "false",
    "--trainer.log_every_n_steps", "5",
    "--trainer.limit_val_batches", "2",
    "--data.num_workers", "0",
    "--data.num_samples", "1024",
    "--trainer.callbacks+=steplog.StepLog",
]  # fmt: skip


def _cluster(env: dict[str, str], verb: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(CLUSTER_SCRIPT), verb], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="session")
def slurm_env(tmp_path_factory) -> dict[str, str]:
    """Environment for SLURM clients and for `bigtrain submit`: SLURM_CONF, PATH with this Python's bin."""
    if shutil.which("slurmctld") is None or shutil.which("munged") is None:
        pytest.skip("slurmctld/munged not installed (apt-get install slurmctld slurmd slurm-client munge)")
    if os.geteuid() != 0:
        pytest.skip("the test SLURM cluster runs its daemons as root (SlurmUser=root)")
    env = {**os.environ}
    started = _cluster(env, "status").returncode != 0  # reuse a cluster CI started with the same settings
    if started:
        env["BIGTRAIN_SLURM_DIR"] = str(tmp_path_factory.mktemp("slurm"))
        result = _cluster(env, "start")
        if result.returncode != 0:
            pytest.fail(f"could not start the test SLURM cluster: {result.stdout}{result.stderr}")
    conf = re.search(r"SLURM_CONF=(\S+)", _cluster(env, "env").stdout)
    assert conf, "slurm-cluster.sh env printed no SLURM_CONF"
    env["SLURM_CONF"] = conf.group(1)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    # steplog here, and the distributed tests' recorder (per-step losses, final weights) for exact resume.
    recorder = REPO / "tests" / "distributed"
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(recorder), env.get("PYTHONPATH", "")])
    yield env
    if started:
        _cluster(env, "stop")


@pytest.fixture(scope="session")
def recipe() -> str:
    """The recipe the cluster tests submit; skips when it is not there."""
    from bigtrain.errors import UserError

    try:
        from bigtrain.recipes import find

        find(RECIPE)
    except (ImportError, UserError) as err:
        pytest.skip(f"recipe {RECIPE} not available: {err}")
    return RECIPE


def bigtrain(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run the `bigtrain` command with `env`."""
    return subprocess.run(
        [sys.executable, "-m", "bigtrain", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def job_field(env: dict[str, str], job_id: str, name: str) -> str:
    """One field (JobState, Restarts, ...) of `scontrol show job`."""
    out = subprocess.run(
        ["scontrol", "show", "job", "-o", job_id], env=env, capture_output=True, text=True, check=True
    ).stdout
    match = re.search(rf"\b{name}=(\S+)", out)
    assert match, out
    return match.group(1)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    """Poll `predicate` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def wait_for_state(env: dict[str, str], job_id: str, states: tuple[str, ...], timeout: float) -> str:
    """Wait until the job is in one of `states`; returns that state."""
    return wait_for(
        lambda: (s := job_field(env, job_id, "JobState")) in states and s,
        timeout,
        f"job {job_id} in {states}",
    )


@pytest.fixture
def cancel_after(slurm_env):
    """A list to put job ids in; jobs still queued or running when the test ends are cancelled."""
    job_ids: list[str] = []
    yield job_ids
    if job_ids:
        subprocess.run(["scancel", *job_ids], env=slurm_env, capture_output=True, timeout=60)
