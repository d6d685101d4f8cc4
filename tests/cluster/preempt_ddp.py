"""Run by test_cluster_preemption under torchrun: 2 DDP ranks, only rank 1 gets SIGUSR1 after step 4."""

from __future__ import annotations

import signal
import sys

from lightning.pytorch import Trainer
from steplog import SendSignal, StepLog, Tiny

from bigtrain.callbacks.preemption import Preemption

if __name__ == "__main__":
    root = sys.argv[1]
    trainer = Trainer(
        default_root_dir=root,
        max_steps=50,
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        callbacks=[SendSignal(at=4, signum=signal.SIGUSR1, ranks=(1,)), StepLog(), Preemption()],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Tiny())
