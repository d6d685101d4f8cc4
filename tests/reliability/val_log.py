"""Test-only callback: every validation's step and metrics, appended to `<run>/validations.jsonl`.

Runs import it by name (`--trainer.callbacks+=val_log.ValLog`) with this folder on PYTHONPATH.
"""

from __future__ import annotations

import json
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer


class ValLog(Callback):
    """Appends {"step": N, "val/...": value, ...} after each validation (not the sanity check)."""

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        with open(Path(trainer.default_root_dir) / "validations.jsonl", "a") as f:
            f.write(json.dumps({"step": trainer.global_step, **metrics}) + "\n")
