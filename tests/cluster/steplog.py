"""Test-only helpers: a callback that records what each rank trained, and a tiny model to train.

Cluster jobs import this module by name (`steplog.StepLog`) with this folder on PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class StepLog(Callback):
    """Appends every trained global step to `<dir>/steps-rank<R>.txt`; writes the ranks each process saw.

    Each fit appends a `start <step>` line first, so the attempts of a requeued job can be told apart.
    """

    def __init__(self, dirpath: str | None = None, delay: float = 0.0) -> None:
        """`dirpath`: where to write (default: the trainer's root dir); `delay`: seconds to sleep per step
        of a job's first attempt (a requeued SLURM job runs at full speed)."""
        self.dirpath = dirpath
        self.delay = delay

    def _folder(self, trainer: Trainer) -> Path:
        folder = Path(self.dirpath or trainer.default_root_dir)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _append(self, trainer: Trainer, line: str) -> None:
        with open(self._folder(trainer) / f"steps-rank{trainer.global_rank}.txt", "a") as f:
            f.write(line + "\n")

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        ranks = {
            "global_rank": trainer.global_rank,
            "local_rank": trainer.local_rank,
            "node_rank": trainer.node_rank,
            "world_size": trainer.world_size,
            "num_nodes": trainer.num_nodes,
            "restart": int(os.environ.get("SLURM_RESTART_COUNT", "0")),
        }
        (self._folder(trainer) / f"ranks-{trainer.global_rank}.json").write_text(json.dumps(ranks))
        self._append(trainer, f"start {trainer.global_step}")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: D102
        self._append(trainer, str(trainer.global_step))
        if self.delay and os.environ.get("SLURM_RESTART_COUNT", "0") == "0":
            time.sleep(self.delay)


def read_steps(path: Path) -> list[list[int]]:
    """The steps of each attempt (fit) recorded in a `steps-rank<R>.txt`."""
    attempts: list[list[int]] = []
    for line in path.read_text().splitlines():
        if line.startswith("start"):
            attempts.append([])
        elif line.strip():
            attempts[-1].append(int(line))
    return attempts


class Tiny(LightningModule):
    """A linear regression: enough to have an optimizer, gradients and a checkpoint."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):  # noqa: D102
        x, y = batch
        return nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):  # noqa: D102
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):  # noqa: D102
        g = torch.Generator().manual_seed(0)
        x = torch.randn(256, 4, generator=g)
        return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)


class SendSignal(Callback):
    """Sends `signum` to this process after global step `at` on the given ranks (a stand-in for SLURM)."""

    def __init__(self, at: int, signum: int = signal.SIGUSR1, ranks: tuple[int, ...] = (0,)) -> None:
        self.at, self.signum, self.ranks = at, signum, ranks

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: D102
        if trainer.global_step == self.at and trainer.global_rank in self.ranks:
            os.kill(os.getpid(), self.signum)
