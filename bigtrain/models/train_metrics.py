"""Train metrics logged per step: the global batch's values, reduced across ranks only at logging steps.

A rank's loss is the mean over its share of the global batch. At a step the loggers write (every
`log_every_n_steps`), each rank's values are weighted by its share's size and summed across ranks in one
collective, so TensorBoard shows the same numbers under single, ddp and fsdp. On the steps in between
nothing is reduced: those values only reach the progress bar (this rank's share), and a collective there
would cost a host sync on every step (see DESIGN.md, "How a step should cost").

None is logged with Lightning's `prog_bar`: Lightning turns progress-bar values into Python numbers at the
end of every batch, a host sync on every step. bigtrain's bars read the training losses from
`trainer.callback_metrics` instead, when they draw (`bigtrain.callbacks.progress`).
"""

from __future__ import annotations

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.strategies import Strategy

from bigtrain.lightning_compat import attached_trainer, logs_this_batch


def global_means(strategy: Strategy, values: dict[str, torch.Tensor], size: int) -> dict[str, torch.Tensor]:
    """Batch-size-weighted means over every rank of scalar values, in one collective."""
    parts = [v.detach().float().reshape(()) * size for v in values.values()]
    weight = torch.tensor(float(size), device=parts[0].device)
    total = strategy.reduce(torch.stack([*parts, weight]), reduce_op="sum")
    means = total[:-1] / total[-1]
    return dict(zip(values, means.unbind(), strict=True))


def log_train(module: LightningModule, values: dict[str, torch.Tensor], size: int) -> None:
    """Log `train/<name>` per step: the global batch's value at logging steps, this rank's in between."""
    trainer = attached_trainer(module)
    if values and trainer is not None and logs_this_batch(trainer):
        values = global_means(trainer.strategy, values, size)
    for name, value in values.items():
        module.log(
            f"train/{name}",
            value.detach(),
            on_step=True,
            on_epoch=False,
            prog_bar=False,
            batch_size=size,
        )
