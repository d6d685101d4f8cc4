"""When a rank dies or hangs, the others stop at once with one line naming it, instead of hanging.

A collective that loses a peer fails on the surviving ranks: at once when the peer's process is gone (its
connections close), or after the strategy's `timeout_s` when it hangs. Lightning would then tear down,
which can itself wait on the broken process group. `PeerWatch` runs first (`on_exception`): each surviving
rank checks in at the rendezvous store under this failure's key, waits a few seconds for the others, and
the lowest one that checked in prints which ranks did not (when the store's host, rank 0, is gone, that
is the answer). A rank that launched the others on its node (Lightning's launcher) sees at once which of
them exited, and says so without waiting. Every survivor then leaves with exit status 1 without touching
the process group. The checkpoints saved before stay valid; rerun with `--ckpt_path auto` to continue.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from datetime import timedelta
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from bigtrain.lightning_compat import stop_child_process_observer
from bigtrain.torch_compat import default_store

EXIT_PEER_LOST = 1
POLL_S = 0.5
"""How often a launching rank checks its launched ranks."""
GRACE_S = 10.0
"""How long survivors wait for each other at the store (bounded by the collective timeout)."""

_MARKERS = ("connection closed by peer", "connection reset by peer", "timed out waiting", "gloo", "nccl")
"""Words of the backends' errors for a lost peer (gloo's `Timed out waiting 10000ms for recv operation`)."""


def is_peer_failure(err: BaseException) -> bool:
    """Whether an exception is a collective failing for want of a peer (a dead, hung or unreachable rank)."""
    if isinstance(err, torch.distributed.DistError):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and any(marker in text for marker in _MARKERS)


def _first_line(err: BaseException) -> str:
    """The error's first line without the backend's `[source file:line]` prefix, at most 160 characters."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    line = re.sub(r"^\[[^\]]*\]\s*", "", lines[0]) if lines else type(err).__name__
    return line[:160]


def missing_ranks(store: Any, rank: int, world: int, key: str, grace_s: float) -> tuple[list[int], bool]:
    """Check in under `key` and wait up to grace_s for the others: (ranks that did not, whether this rank
    is the lowest that did). Raises when the store cannot be reached."""
    store.set(f"{key}/{rank}", "1")
    deadline = time.monotonic() + grace_s
    while True:
        arrived = [r for r in range(world) if store.check([f"{key}/{r}"])]
        if len(arrived) == world or time.monotonic() >= deadline:
            return [r for r in range(world) if r not in arrived], rank == min(arrived)
        time.sleep(0.2)


def _plural(ranks: list[int]) -> str:
    return f"rank {ranks[0]}" if len(ranks) == 1 else "ranks " + ", ".join(map(str, ranks))


_report_lock = threading.Lock()


def _stop(trainer: Trainer, who: str, saw: str | None, *, report: bool = True) -> None:
    """Print the one line (once per process, if `report`), kill the local ranks still running, and exit."""
    if _report_lock.acquire(blocking=False):  # only the first of the watcher and the training thread
        detail = f" (rank {trainer.global_rank} saw: {saw})" if saw else ""
        message = (
            f"{who} at step {trainer.global_step}; the other ranks stop here, resume with --ckpt_path auto"
        )
        if report:
            print(f"bigtrain: error: {message}{detail}", file=sys.stderr, flush=True)
        for proc in _local_procs(trainer):
            if proc.poll() is None:
                proc.kill()  # they would wait on the broken process group until the timeout
        for logger in trainer.loggers:
            logger.finalize("failed")
        sys.stdout.flush()
        # Not SystemExit: Lightning's teardown would wait on the broken process group. (os._exit is public
        # API despite its underscore.)
        os._exit(EXIT_PEER_LOST)
    time.sleep(3600)  # the other thread is reporting and exits the process


def _local_procs(trainer: Trainer) -> list[subprocess.Popen]:
    """The processes Lightning's launcher started for this node's other ranks (only in local rank 0)."""
    return list(getattr(getattr(trainer.strategy, "launcher", None), "procs", None) or [])


def _dead_local_ranks(trainer: Trainer) -> list[tuple[int, int]]:
    """(global rank, exit status) of this node's launched ranks that exited with an error."""
    first = trainer.node_rank * trainer.num_devices
    polled = [(first + i + 1, proc.poll()) for i, proc in enumerate(_local_procs(trainer))]
    return [(rank, code) for rank, code in polled if code]


def _died(dead: list[tuple[int, int]], world: int) -> str:
    codes = ", ".join(f"signal {-c}" if c < 0 else f"exit status {c}" for _, c in dead)
    return f"{_plural([r for r, _ in dead])} of {world} died ({codes})"


class PeerWatch(Callback):
    """Names a dead or hung rank and stops the others (see the module doc)."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """In a rank that launched others on its node: watch them in place of Lightning's observer."""
        if not _local_procs(trainer):
            return
        stop_child_process_observer()
        threading.Thread(target=self._watch, args=(trainer,), name="bigtrain-peer-watch", daemon=True).start()

    def _watch(self, trainer: Trainer) -> None:
        while not (dead := _dead_local_ranks(trainer)):
            time.sleep(POLL_S)
        time.sleep(4 * POLL_S)  # an error every rank raised (a bad setting) ends this process on its own
        _stop(trainer, _died(dead, trainer.world_size), None)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:  # noqa: D102
        world = trainer.world_size
        if world < 2 or not torch.distributed.is_initialized() or not is_peer_failure(exception):
            return
        saw = _first_line(exception)
        if dead := _dead_local_ranks(trainer):
            _stop(trainer, _died(dead, world), saw)
        grace = min(GRACE_S, float(getattr(trainer.strategy, "timeout_s", GRACE_S)))
        try:
            store = default_store()
            store.set_timeout(timedelta(seconds=grace))
            key = f"bigtrain/peer-failure/{trainer.global_step}"
            missing, lowest = missing_ranks(store, trainer.global_rank, world, key, grace)
        except Exception:  # noqa: BLE001 (the store lives in rank 0's process: unreachable means it is gone)
            _stop(trainer, f"rank 0 of {world} did not answer (it hosts the rendezvous: died or hangs)", saw)
        who = (
            f"{_plural(missing)} of {world} did not arrive (died or hangs)"
            if missing
            else "a collective failed"
        )
        # The lowest rank that arrived speaks; the others leave quietly.
        _stop(trainer, who, saw, report=lowest)
