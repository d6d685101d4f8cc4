"""The end of a run is validated and checkpointed, also when `max_steps` stops it inside an epoch."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer


class FinalStep(Callback):
    """At the step that reaches `max_steps`, ask the trainer to stop there.

    Lightning ends the epoch at `max_steps` without validating unless `val_check_interval` happens to divide
    the step, so the last stretch of training would reach neither the validation metrics (`metrics.json`) nor
    a checkpoint. A stop request makes Lightning run validation at this batch (when the run validates), and
    the checkpoint callbacks then save this step: after validation, or at the end of the epoch.
    """

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Request the stop at the final optimizer step."""
        if 0 < trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True
