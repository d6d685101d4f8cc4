"""One run per directory: the launching process of global rank 0 holds `<run>/.bigtrain.lock` while it fits.

A second `fit` into the same directory would interleave checkpoints, `config.yaml` and `metrics.json`, and a
later `--ckpt_path auto` could resume the other run's weights. The lock names its holder (pid, host, SLURM
job); one whose process is gone on this host, or that a requeued run of the same SLURM job left, is stale
and is taken over.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
from pathlib import Path
from typing import Any

from bigtrain.errors import UserError

LOCK_FILE = ".bigtrain.lock"


def launches_rank_zero() -> bool:
    """Whether this process is global rank 0 as launched (torchrun, srun), not a rank Lightning started."""
    rank = os.environ.get("RANK") or os.environ.get("SLURM_PROCID") or "0"
    return rank == "0" and os.environ.get("LOCAL_RANK", "0") == "0"


def _holder() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "slurm_job": os.environ.get("SLURM_JOB_ID")}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def _stale(held: dict[str, Any]) -> bool:
    """Whether the holder is certainly gone: its pid is dead on this host, or it was this SLURM job."""
    me = _holder()
    if held.get("slurm_job") and held.get("slurm_job") == me["slurm_job"]:
        return True  # a requeued job restarting: the earlier attempt is over
    return held.get("host") == me["host"] and not _alive(int(held.get("pid", 0)))


def acquire(run_dir: Path) -> Path:
    """Take the run directory's lock, or refuse in one line naming who holds it; released at exit."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                held = json.loads(path.read_text() or "{}")
            except (OSError, ValueError):
                held = {}
            if held and not _stale(held):
                raise UserError(
                    f"run directory {run_dir} is in use by another bigtrain run (pid {held.get('pid')} on "
                    f"{held.get('host')}); give another --run_dir, or wait for it to finish (if it is gone, "
                    f"remove {path})"
                ) from None
            path.unlink(missing_ok=True)  # stale: its holder is gone
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(_holder(), f)
        atexit.register(release, path)
        return path
    raise UserError(f"cannot take the lock {path}: another run keeps creating it")


def release(path: Path) -> None:
    """Give the lock back (only our own: a lock another process took over stays)."""
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def holder(run_dir: Path) -> dict[str, Any] | None:
    """Who holds the run directory's lock now (None when nobody does, or the holder is gone)."""
    try:
        held = json.loads((run_dir / LOCK_FILE).read_text() or "{}")
    except (OSError, ValueError):
        return None
    return held if isinstance(held, dict) and held and not _stale(held) else None
