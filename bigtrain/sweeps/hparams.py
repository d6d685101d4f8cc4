"""TensorBoard's HParams view: a run's config values next to its final metrics (instead of Lightning's
`hp_metric = -1` placeholder), so the points of a sweep can be compared there."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger

from bigtrain.callbacks.run_dir import scalar_metrics
from bigtrain.models.train_metrics import current_metrics

FINAL_PREFIX = "final/"
"""HParams metrics are scalars of their own: `final/val/loss` leaves the `val/loss` curve as it was."""


class HParamsLog(Callback):
    """At the end of fit, logs the run's config values and final metrics to every TensorBoard logger."""

    def __init__(self, params: dict[str, Any]) -> None:
        """`params`: the flat {key: value} of the run's config (flat_config)."""
        self.params = params

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        metrics = scalar_metrics(current_metrics(trainer))
        final = {f"{FINAL_PREFIX}{name}": value for name, value in metrics.items()}
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger) and final:
                logger.log_hyperparams(self.params, final, step=trainer.global_step)
                logger.save()
