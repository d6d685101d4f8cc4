"""`bigtrain jobs` against the test cluster's own squeue and sacct (its slurmdbd and MariaDB)."""

from __future__ import annotations

import getpass
import os
import re

import pytest
from conftest import wait_for
from test_cluster_slurm import finish, submit

from bigtrain.cluster.jobs import from_sacct, from_squeue
from bigtrain.commands import jobs
from bigtrain.errors import UserError


def _accounting(env: dict[str, str]) -> bool:
    with open(env["SLURM_CONF"]) as conf:
        return "accounting_storage/slurmdbd" in conf.read()


@pytest.mark.cluster
@pytest.mark.slow
def test_sacct_lists_a_finished_job_with_its_run_dir(slurm_env, cancel_after, recipe, tmp_path, monkeypatch):
    if not _accounting(slurm_env):
        if os.environ.get("CI"):
            pytest.fail("the test cluster runs without accounting: install slurmdbd and mariadb-server")
        pytest.skip("the test cluster has no accounting (slurmdbd, mariadb-server not installed)")
    run = tmp_path / "run"
    job_id = submit(slurm_env, cancel_after, recipe, run, 1, 1, "--trainer.max_steps", "5")
    finish(slurm_env, job_id, run)
    for key in ("SLURM_CONF", "PATH"):
        monkeypatch.setenv(key, slurm_env[key])
    user = getpass.getuser()

    def accounted():
        return [j for j in from_sacct(user) or [] if j.job_id == job_id and j.state == "COMPLETED"]

    # slurmctld hands the job's end to slurmdbd a moment after squeue shows it.
    (job,) = wait_for(accounted, 60, f"sacct to show job {job_id} COMPLETED")
    assert job.name.startswith("bigtrain-") and job.run_dir == str(run)
    assert re.fullmatch(r"(\d+-)?\d\d:\d\d:\d\d", job.elapsed), job.elapsed
    # squeue agrees while it still shows the finished job (MinJobAge).
    assert [(j.state, j.run_dir) for j in from_squeue(user) or [] if j.job_id == job_id] == [
        ("COMPLETED", str(run))
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--days", "0"], "--days must be between 1 and 3660, got 0"),
        (["--user=--format=x"], "--user: not a user name: '--format=x'"),
        (["--user", "a b"], "--user: not a user name: 'a b'"),
    ],
)
def test_jobs_options_are_checked_before_slurm_is_asked(args, message, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no SLURM client: the check must come first
    with pytest.raises(UserError) as err:
        jobs.main(args)
    assert str(err.value) == message
