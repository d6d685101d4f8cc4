"""This user's bigtrain SLURM jobs with their state and run directory, from squeue and sacct."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

from bigtrain.cluster.slurm import COMMENT_PREFIX
from bigtrain.errors import UserError

JOB_NAME_PREFIX = "bigtrain-"


@dataclass(frozen=True)
class Job:
    """One row of `bigtrain jobs`."""

    job_id: str
    name: str
    state: str
    elapsed: str
    run_dir: str


def _query(command: list[str]) -> list[list[str]] | None:
    """`|`-separated rows of a SLURM client's output; None when it is missing or fails (no accounting)."""
    if shutil.which(command[0]) is None:
        return None
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        return None
    if result.returncode != 0:
        return None
    return [line.split("|") for line in result.stdout.splitlines() if line.strip()]


def _run_dir(comment: str) -> str:
    return comment[len(COMMENT_PREFIX) :] if comment.startswith(COMMENT_PREFIX) else "-"


def from_squeue(user: str) -> list[Job] | None:
    """Jobs squeue knows (queued, running, and recently finished ones)."""
    rows = _query(["squeue", "-h", "-u", user, "--states=all", "-o", "%i|%j|%T|%M|%k"])
    if rows is None:
        return None
    return [Job(r[0], r[1], r[2], r[3], _run_dir("|".join(r[4:]))) for r in rows if len(r) >= 5]


def from_sacct(user: str, days: int = 7) -> list[Job] | None:
    """Jobs in SLURM's accounting database started in the last `days` days, where accounting is enabled."""
    fields = "JobID,JobName%200,State,Elapsed,Comment%1000"
    # Without --starttime sacct shows only jobs since midnight.
    window = f"--starttime=now-{int(days)}days"
    rows = _query(["sacct", "-X", "-n", "-P", "-u", user, window, f"--format={fields}"])
    if rows is None:
        return None
    return [Job(r[0], r[1], r[2], r[3], _run_dir("|".join(r[4:]))) for r in rows if len(r) >= 5]


def list_jobs(user: str, days: int = 7) -> list[Job]:
    """bigtrain jobs of `user`, from sacct and squeue (squeue's view wins for jobs in both)."""
    queued, accounted = from_squeue(user), from_sacct(user, days)
    if queued is None and accounted is None:
        raise UserError("neither squeue nor sacct answered: run `bigtrain jobs` on a SLURM login node")
    jobs = {job.job_id: job for job in (accounted or []) + (queued or [])}
    mine = [j for j in jobs.values() if j.name.startswith(JOB_NAME_PREFIX) or j.run_dir != "-"]
    return sorted(mine, key=lambda job: (len(job.job_id), job.job_id))


def format_table(jobs: list[Job]) -> str:
    """Aligned columns: JOBID STATE ELAPSED RUN_DIR."""
    rows = [("JOBID", "STATE", "ELAPSED", "RUN_DIR")]
    rows += [(j.job_id, j.state, j.elapsed, j.run_dir) for j in jobs]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join([*(row[i].ljust(widths[i]) for i in range(3)), row[3]]) for row in rows]
    return "\n".join(lines)
