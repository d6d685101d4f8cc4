"""Start-up time: from the start of the process to the end of the first optimizer step.

It covers what a user waits through before training runs: Python and torch imports, parsing the recipe,
building the model and data, forming the process group and the first step itself (with its warm-up and,
under `compile`, compilation). It is logged once as `perf/startup_s` to the loggers (at the first step) and
to `metrics.json`. Every rank measures its own; rank 0's is the one written.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

_commands_built = 0
"""How many StartupTime callbacks this process made: only the first command starts with the process."""


def process_age_s() -> float | None:
    """Seconds since this process started (from Linux's /proc, 10 ms resolution), or None elsewhere."""
    try:
        stat = Path("/proc/self/stat").read_text()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime; the name may hold spaces
        return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


class StartupTime(Callback):
    """Measures `perf/startup_s`: process start (or, for a later fit in the same process, the moment this
    callback is made) to the end of the first optimizer step of the fit."""

    def __init__(self) -> None:
        global _commands_built
        age = process_age_s() if _commands_built == 0 else None
        _commands_built += 1
        self.started = time.monotonic() - (age or 0.0)
        self.seconds: float | None = None
        self._first_step: int | None = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        self._first_step = trainer.global_step

    def on_train_batch_end(  # noqa: D102
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.seconds is not None or trainer.global_step == self._first_step:
            return  # measured already, or a micro-batch that only accumulated
        self.seconds = time.monotonic() - self.started
        for logger in trainer.loggers:
            logger.log_metrics({"perf/startup_s": self.seconds}, step=trainer.global_step)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        if self.seconds is not None:
            # Lightning's results never hold this name, so it stays for metrics.json.
            trainer.callback_metrics["perf/startup_s"] = torch.tensor(self.seconds, dtype=torch.float64)
