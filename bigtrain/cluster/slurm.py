"""SLURM: the job script (rendered from job.sbatch.tmpl), cluster queries through sinfo, and sbatch."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from bigtrain.cluster.environment import socket_variables
from bigtrain.cluster.layout import Layout
from bigtrain.errors import UserError, unknown

TEMPLATE = "job.sbatch.tmpl"
COMMENT_PREFIX = "bigtrain:"
"""Job comments start with this and carry the run directory, so `bigtrain jobs` can find both."""
# SLURM's time formats: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS.
_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# What each #SBATCH value may hold. A directive line is read by sbatch, not by a shell, so quoting cannot
# protect it: a newline would end the directive block and put the rest of the value into the script.
_DIRECTIVE_VALUES = {
    "partition": (re.compile(r"^[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*$"), "names of letters, digits, '_.-'"),
    "account": (re.compile(r"^[A-Za-z0-9_.-]+$"), "letters, digits, '_.-'"),
    "qos": (re.compile(r"^[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*$"), "names of letters, digits, '_.-'"),
    "mem": (re.compile(r"^[0-9]+[KMGT]?$", re.IGNORECASE), "a number with an optional K, M, G or T"),
}
# A run directory is written into #SBATCH lines (--output, --comment) and srun lines: a plain path only.
_PLAIN_PATH = re.compile(r"^[A-Za-z0-9_./+,:@=-]+$")
MAX_SIGNAL_BEFORE = 65535
"""SLURM's limit for `--signal=SIG@TIME` (seconds)."""


@dataclass(frozen=True)
class SlurmJob:
    """Everything the job script says, besides the resolved config it points to."""

    layout: Layout
    run_dir: Path
    name: str
    partition: str | None = None
    account: str | None = None
    time: str | None = None
    qos: str | None = None
    cpus_per_task: int | None = None
    mem: str | None = None
    container_image: str | None = None
    container_mounts: tuple[str, ...] = ()
    socket_ifname: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    signal_before: int = 90
    launcher: str = "bigtrain"
    array_size: int = 0
    """A sweep: this many points, one array task each, in `<run_dir>/point-NNN/` (0: one plain job)."""
    array_parallel: int | None = None
    """At most this many array tasks at once (`--array=0-N%K`)."""

    @property
    def script_path(self) -> Path:
        """`<run_dir>/job.sbatch`."""
        return self.run_dir / "job.sbatch"

    @property
    def config_path(self) -> Path:
        """`<run_dir>/config.yaml`."""
        return self.run_dir / "config.yaml"

    def log_path(self, job_id: str | None = None) -> Path:
        """The job's log; `%j` is SLURM's placeholder for the job id (`%A_%a`: array job and task)."""
        return self.run_dir / f"slurm-{job_id or ('%A_%a' if self.array_size else '%j')}.out"


def time_seconds(value: str) -> int:
    """A SLURM time limit (`MM`, `HH:MM:SS`, `D-HH:MM`, ...) in seconds."""
    match = _TIME.fullmatch(value)
    if not match:
        raise UserError(f"--time {value!r} is not a SLURM time (HH:MM:SS, MM, D-HH:MM:SS)")
    days, *parts = match.groups()
    numbers = [int(p) for p in parts if p is not None]
    if days is not None:  # D-HH[:MM[:SS]]
        numbers += [0] * (3 - len(numbers))
        hours, minutes, seconds = numbers
    elif len(numbers) == 3:
        hours, minutes, seconds = numbers
    else:  # MM[:SS]
        hours, (minutes, seconds) = 0, (numbers + [0])[:2]
    return ((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds


def check_text(option: str, value: str) -> None:
    """Refuse control characters (newline, NUL, ...) in a value bound for a job script or command line."""
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise UserError(f"{option} {value!r} contains a control character (newline, tab, ...); not allowed")


def parse_env(items: list[str]) -> tuple[tuple[str, str], ...]:
    """`K=V` strings -> (K, V) pairs, refusing names a shell cannot export and control characters."""
    pairs = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not _ENV_NAME.fullmatch(name):
            raise UserError(f"--env {item!r} is not NAME=VALUE")
        check_text("--env", item)
        pairs.append((name, value))
    return tuple(pairs)


def _check_directives(job: SlurmJob) -> None:
    for option, (pattern, what) in _DIRECTIVE_VALUES.items():
        value = getattr(job, option)
        if value is not None and not pattern.fullmatch(value):
            raise UserError(f"--{option} {value!r} is not a SLURM {option}: use {what}")
    if not 1 <= job.signal_before <= MAX_SIGNAL_BEFORE:
        raise UserError(f"--signal-before must be 1 to {MAX_SIGNAL_BEFORE} seconds, got {job.signal_before}")
    if job.time is not None:
        time_seconds(job.time)


def check_job(job: SlurmJob) -> None:
    """Refuse settings that SLURM would reject late, or that could put anything else into the script."""
    if not _PLAIN_PATH.fullmatch(str(job.run_dir)):
        raise UserError(
            f"run directory {str(job.run_dir)!r} contains spaces, quotes or shell characters; SLURM job "
            "scripts need a plain path (letters, digits, '_./+,:@=-')"
        )
    _check_directives(job)
    socket_variables(job.socket_ifname)  # refuses a name that is no interface name
    for option, value in [
        ("--container-image", job.container_image),
        *(("--container-mounts", m) for m in job.container_mounts),
    ]:
        if value is not None:
            check_text(option, value)
    if job.array_size < 0 or (job.array_parallel is not None and job.array_parallel < 1):
        raise UserError(f"--parallel must be at least 1, got {job.array_parallel}")
    if job.cpus_per_task is not None and job.cpus_per_task < 1:
        raise UserError(f"--cpus-per-task must be >= 1, got {job.cpus_per_task}")
    if job.time is not None and time_seconds(job.time) <= 2 * job.signal_before:
        raise UserError(
            f"--time {job.time} leaves no room for the preemption signal {job.signal_before} s before "
            "the end; "
            "give a longer --time or a smaller --signal-before"
        )


def _launcher(job: SlurmJob) -> str:
    """The command srun runs on each rank (before `fit ...`)."""
    image = job.container_image
    if image and image.endswith(".sif"):  # Apptainer / Singularity image file
        nv = " --nv" if job.layout.accelerator == "gpu" else ""
        binds = ",".join([str(job.run_dir), *job.container_mounts])
        return f"apptainer exec{nv} --bind {shlex.quote(binds)} {shlex.quote(image)} {job.launcher}"
    return job.launcher


def _srun_options(job: SlurmJob) -> str:
    options = ["--kill-on-bad-exit=1"]
    if job.cpus_per_task is not None:
        # srun does not inherit --cpus-per-task from the allocation in every SLURM version.
        options.append(f"--cpus-per-task={job.cpus_per_task}")
    if job.container_image and not job.container_image.endswith(".sif"):  # pyxis / enroot
        mounts = ",".join([f"{job.run_dir}:{job.run_dir}", *job.container_mounts])
        options += [
            f"--container-image={shlex.quote(job.container_image)}",
            f"--container-mounts={shlex.quote(mounts)}",
        ]
    return " ".join(options)


def _directives(job: SlurmJob) -> list[str]:
    layout = job.layout
    lines = [
        f"--job-name=bigtrain-{job.name}",
        f"--nodes={layout.nodes}",
        f"--ntasks-per-node={layout.devices_per_node}",
    ]
    if layout.accelerator == "gpu":
        lines.append(f"--gpus-per-node={layout.devices_per_node}")
    optional = {
        "cpus-per-task": job.cpus_per_task,
        "mem": job.mem,
        "partition": job.partition,
        "account": job.account,
        "qos": job.qos,
        "time": job.time,
    }
    lines += [f"--{key}={value}" for key, value in optional.items() if value is not None]
    if job.array_size:  # one task per sweep point; a requeue requeues only the preempted task
        limit = f"%{job.array_parallel}" if job.array_parallel else ""
        lines.append(f"--array=0-{job.array_size - 1}{limit}")
    lines += [
        f"--signal=USR1@{job.signal_before}",  # to every rank: checkpoint, requeue, exit
        "--requeue",
        "--open-mode=append",  # a requeued job appends to the same log
        f"--output={job.log_path()}",
        f"--comment={COMMENT_PREFIX}{job.run_dir}",
    ]
    return [f"#SBATCH {line}" for line in lines]


def _exports(job: SlurmJob) -> list[str]:
    variables = [*socket_variables(job.socket_ifname).items(), *job.env]
    lines = [f"export {key}={shlex.quote(value)}" for key, value in variables]
    if job.array_size:
        # The task's point: the same point-NNN name as bigtrain.sweeps.state.point_name gives it.
        point = '"$(printf \'point-%03d\' "$SLURM_ARRAY_TASK_ID")"'
        lines.append(f"POINT_DIR={shlex.quote(str(job.run_dir))}/{point}")
    return lines


def render(job: SlurmJob) -> str:
    """The job script's text."""
    template = files("bigtrain.cluster").joinpath(TEMPLATE).read_text()
    values = {
        "script": str(job.script_path),
        "directives": "\n".join(_directives(job)),
        "exports": "\n".join(_exports(job)),
        "srun_options": _srun_options(job),
        "launcher": _launcher(job),
        "config": '"$POINT_DIR/config.yaml"' if job.array_size else shlex.quote(str(job.config_path)),
    }
    text = re.sub(r"\{\{(\w+)\}\}", lambda m: values[m.group(1)], template)
    return re.sub(r"\n{3,}", "\n\n", text)


def default_launcher() -> str:
    """`bigtrain` when it is on PATH (the job inherits PATH), else this Python running the package."""
    if shutil.which("bigtrain"):
        return "bigtrain"
    return f"{shlex.quote(sys.executable)} -m bigtrain"


def _run(command: list[str]) -> subprocess.CompletedProcess[str] | None:
    """Run a SLURM client command; None when it is not installed or does not answer."""
    if shutil.which(command[0]) is None:
        return None
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        return None


def check_partition(partition: str) -> None:
    """Refuse a partition the cluster does not have (skipped when sinfo cannot tell)."""
    result = _run(["sinfo", "-h", "-o", "%R"])
    if result is None or result.returncode != 0:
        return
    names = {line.strip() for line in result.stdout.splitlines() if line.strip()}
    for name in partition.split(","):  # sbatch takes a comma-separated list of partitions
        if names and name not in names:
            raise unknown("partition", name, names)


def cluster_has_gpus(partition: str | None) -> bool | None:
    """Whether the partition's nodes have GPUs (generic resources named gpu); None when sinfo cannot tell."""
    command = ["sinfo", "-h", "-o", "%G"] + (["-p", partition] if partition else [])
    result = _run(command)
    if result is None or result.returncode != 0 or not result.stdout.strip():
        return None
    return "gpu" in result.stdout


def sbatch(script: Path) -> str:
    """Submit `script`; returns the job id."""
    exe = shutil.which("sbatch")
    if exe is None:
        raise UserError("sbatch not found on PATH: run this on a SLURM login node, or use --dry-run")
    result = subprocess.run([exe, "--parsable", str(script)], capture_output=True, text=True, check=False)
    lines = (result.stderr or result.stdout).strip().splitlines()
    if result.returncode != 0:
        raise UserError(
            f"sbatch refused the job: {lines[-1] if lines else f'exit status {result.returncode}'}"
        )
    return result.stdout.strip().split(";")[0]
