"""What a LightningModule reaches through the trainer it is attached to."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningModule

from bigtrain.lightning_compat import attached_trainer


def attached_datamodule(module: LightningModule) -> Any | None:
    """The DataModule of the trainer the module is attached to, or None (e.g. in load_from_checkpoint)."""
    trainer = attached_trainer(module)
    return getattr(trainer, "datamodule", None) if trainer is not None else None
