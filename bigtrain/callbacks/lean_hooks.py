"""Lightning calls every callback at every hook, empty hooks too; this one spares the per-batch ones."""

from __future__ import annotations

from lightning.pytorch import Callback, LightningModule, Trainer

from bigtrain.lightning_compat import skip_unused_batch_hooks


class LeanHooks(Callback):
    """At setup, leaves each callback's per-batch hooks it does not override out of Lightning's dispatch.

    A run has a dozen callbacks and only a few act on each step; dispatching the others' empty hooks costs
    about 600 Python calls a step (`python -m benchmarks.call_counts`). What each callback does is unchanged.
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:  # noqa: D102
        # At setup every callback is attached, the model's own (`configure_callbacks`) included.
        skip_unused_batch_hooks(trainer.callbacks)
