"""Train metrics: the global batch's values, reduced across ranks and logged only at logging steps.

A rank's loss is the mean over its share of the global batch. At a step the loggers write (every
`log_every_n_steps`), each rank's values are weighted by its share's size and summed across ranks in one
collective, so TensorBoard shows the same numbers under single, ddp and fsdp. On the steps in between
nothing is reduced and nothing goes through Lightning's `self.log` (a collective there would cost a host
sync on every step, and a log call alone costs more than the rest of a small step: see DESIGN.md, "How a
step should cost"). So `trainer.callback_metrics` (and a checkpoint `monitor`) hold the training values of
the last logging step, the same on every rank.

The latest step's values are kept on the module all the same (this rank's share between logging steps):
`current_metrics(trainer)` is `callback_metrics` with them, for what reads the run as it goes (progress
bar and log lines, `metrics.json`, `verify-resume`'s record). None is logged with Lightning's `prog_bar`:
Lightning turns progress-bar values into Python numbers at the end of every batch, a host sync per step.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.strategies import Strategy

from bigtrain.lightning_compat import attached_trainer, logs_this_batch


def global_means(strategy: Strategy, values: dict[str, torch.Tensor], size: int) -> dict[str, torch.Tensor]:
    """Batch-size-weighted means over every rank of scalar values, in one collective."""
    parts = [v.detach().float().reshape(()) * size for v in values.values()]
    weight = torch.tensor(float(size), device=parts[0].device)
    total = strategy.reduce(torch.stack([*parts, weight]), reduce_op="sum")
    means = total[:-1] / total[-1]
    return dict(zip(values, means.unbind(), strict=True))


LATEST = "_bigtrain_train_values"
"""The module attribute holding the latest step's {"train/<name>": value}."""


def log_train(module: LightningModule, values: dict[str, torch.Tensor], size: int) -> None:
    """Keep `train/<name>` of this step; log them (the global batch's values) at logging steps."""
    trainer = attached_trainer(module)
    logs = trainer is None or logs_this_batch(trainer)
    if values and trainer is not None and logs:
        values = global_means(trainer.strategy, values, size)
    latest = {f"train/{name}": value.detach() for name, value in values.items()}
    setattr(module, LATEST, latest)
    if not logs:
        return
    for name, value in latest.items():
        module.log(name, value, on_step=True, on_epoch=False, prog_bar=False, batch_size=size)


def current_metrics(trainer: Trainer) -> dict[str, Any]:
    """`trainer.callback_metrics` with the latest step's training values (the former hold the last logging
    step's)."""
    module = getattr(trainer, "lightning_module", None)
    return {**trainer.callback_metrics, **getattr(module, LATEST, {})}
