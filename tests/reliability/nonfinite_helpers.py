"""Test-only callbacks for the non-finite guard tests, loaded by `bigtrain fit` subprocesses.

`--trainer.callbacks+=nonfinite_helpers.PoisonBatch --trainer.callbacks.step K` fills the inputs of the
batch of optimizer step K with NaN; `RecordWeights` saves the weights after chosen steps, so a test can
compare a checkpoint with the state after step K-1 from the same run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer


class PoisonBatch(Callback):
    """Fill the floating-point tensors of the batch of optimizer step `step` (from 1) with `value`."""

    def __init__(self, step: int, value: float = float("nan"), rank: int | None = None) -> None:
        self.step = step
        self.value = value
        self.rank = rank  # None: every rank

    def on_train_batch_start(  # noqa: D102
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.rank not in (None, trainer.global_rank):
            return
        if trainer.global_step + 1 == self.step:
            for tensor in batch if isinstance(batch, (list, tuple)) else [batch]:
                if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
                    tensor.fill_(self.value)


class RecordWeights(Callback):
    """Save `state_dict()` after each of the optimizer steps `steps` to `<folder>/step<k>-rank<r>.pt`."""

    def __init__(self, folder: str, steps: list[int]) -> None:
        self.folder = Path(folder)
        self.steps = set(steps)

    def on_train_batch_end(  # noqa: D102
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step in self.steps:
            self.folder.mkdir(parents=True, exist_ok=True)
            state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
            torch.save(state, self.folder / f"step{trainer.global_step}-rank{trainer.global_rank}.pt")


class PoisonShard(Callback):
    """At optimizer step `step`, after backward, put a NaN in this rank's shard of one gradient: the first
    parameter (optimizer order) whose shard here is not empty on rank 1, the last such one on rank 0. Each
    rank writes the name of the parameter it poisoned to `<folder>/poisoned-rank<r>.txt`."""

    def __init__(self, step: int, folder: str) -> None:
        self.step = step
        self.folder = Path(folder)

    def on_after_backward(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        if trainer.global_step + 1 != self.step:
            return
        params = [p for group in trainer.optimizers[0].param_groups for p in group["params"]]
        grads = [(p, p.grad) for p in params if p.grad is not None]
        local = [(p, g.to_local() if hasattr(g, "to_local") else g) for p, g in grads]
        shards = [(p, g) for p, g in local if g.numel()]
        param, shard = shards[-1] if trainer.global_rank == 0 else shards[0]
        with torch.no_grad():
            shard.view(-1)[0] = float("nan")
        name = next(n for n, p in pl_module.named_parameters() if p is param)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"poisoned-rank{trainer.global_rank}.txt").write_text(name)
