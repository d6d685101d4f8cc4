"""Names of runs and their directories: one path component from a recipe name or file, whatever the user
typed, and `runs/<name>/<stamp>` for a run that was given no directory."""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path

from bigtrain.errors import UserError

_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]+")
MAX_NAME = 100
"""Characters kept of a run name (a path component may hold 255 bytes; the time stamp follows it)."""
RUN_DIR_ENV = "BIGTRAIN_RUN_DIR"
"""Lightning re-runs the command line for each DDP rank it starts; they find the run directory here."""


def run_name(recipe: str) -> str:
    """`cnn/glyphs` -> `cnn-glyphs`, a recipe file path -> its stem; always one safe path component.

    Anything but letters, digits and `_.+-` becomes `-`, and leading dots go, so a name such as
    `../../x` (which a recipe file can also set) cannot lead out of `runs/`.
    """
    name = Path(recipe).stem if recipe.endswith((".yaml", ".yml")) else recipe
    name = _UNSAFE.sub("-", name).lstrip(".-")[:MAX_NAME].rstrip(".")
    return name or "run"


def fresh_run_dir(recipe: str, stamp: str | None = None, *, unique: bool = True) -> Path:
    """`runs/<run name>/<stamp>` under the current folder (stamp: the local time), with `-2`, `-3`, ...
    appended until no such directory exists when `unique`."""
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    base = Path("runs", run_name(recipe), stamp)  # a recipe file may set its own name: keep it in runs/
    path, n = base, 1
    while unique and path.exists():
        n += 1
        path = base.with_name(f"{stamp}-{n}")
    return path


def new_run_dir(recipe: str, given: str | None, *, must_be_new: bool) -> Path:
    """The run directory as an absolute path: `given`, or `runs/<recipe>/<time>` under the current folder."""
    if given:
        if any(ord(c) < 32 or ord(c) == 127 for c in given):
            raise UserError(f"--run-dir {given!r} contains a control character (newline, tab, ...)")
        path = Path(given).expanduser().absolute()
    else:
        path = fresh_run_dir(recipe).absolute()
    if must_be_new and path.exists() and any(path.iterdir()):
        raise UserError(f"run directory {path} already exists and is not empty; choose a new --run-dir")
    return path


def default_run_dir(name: str) -> str:
    """runs/<name>/<time> (or the directory an earlier rank chose), made unique."""
    if os.environ.get(RUN_DIR_ENV):
        return os.environ[RUN_DIR_ENV]
    job = os.environ.get("SLURM_JOB_ID")
    # Every rank of a SLURM job (and its requeued runs) shares the job's directory.
    path = fresh_run_dir(name, f"slurm-{job}" if job else None, unique=not job)
    os.environ[RUN_DIR_ENV] = str(path)
    return str(path)


_NEW_RUN_DIRS: list[Path] = []
"""Run directories this process found missing and is about to create (see `remove_failed_start`)."""
START_FILES = ("config.yaml", "hparams.yaml", ".bigtrain.lock", "events.out.tfevents.*")
"""What a run writes into its directory before training: all there is when it fails to start."""


def remove_failed_start() -> None:
    """Remove the run directories this process created, when the run failed before training started: only
    while they hold nothing but START_FILES (a checkpoint, metrics.json or anything else keeps them)."""
    while _NEW_RUN_DIRS:
        path = _NEW_RUN_DIRS.pop()
        try:
            entries = list(path.iterdir())
        except OSError:
            continue
        if all(e.is_file() and any(e.match(pattern) for pattern in START_FILES) for e in entries):
            for entry in entries:
                with contextlib.suppress(OSError):
                    entry.unlink()
            with contextlib.suppress(OSError):
                path.rmdir()


def keep_run_dirs() -> None:
    """Training has started: a failure from now on keeps the run directory, logs and all."""
    _NEW_RUN_DIRS.clear()


def make_run_dir(path: Path) -> None:
    """Create the run directory now, before any work: a UserError if it cannot be (read-only parent, a
    virtual file system such as /proc, a name longer than the file system allows)."""
    created: list[Path] = []
    try:
        created = [p for p in [path, *path.parents] if not p.exists()]
        _NEW_RUN_DIRS.extend(created[:1])
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".bigtrain-write-test-{os.getpid()}"  # one per rank: ranks run this at once
        probe.touch()  # root may mkdir where writing fails (e.g. under /proc), and the reverse
        probe.unlink()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise UserError(
            f"run directory {path} cannot be created or written: {reason}; choose another --run_dir"
        ) from err
    finally:
        # Only probed: the run creates it when it writes there, so a run refused before that (or a rank
        # that is not rank 0) leaves no empty directory behind.
        for folder in created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # empty ones only; another rank may have written there meanwhile
