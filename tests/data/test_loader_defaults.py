"""DataLoader defaults: pinned memory on CUDA only, persistent workers that prefetch ahead."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Trainer

from bigtrain.data.base import PREFETCH_BATCHES
from bigtrain.data.text import TextDataModule


def _loaders(accelerator: str, workers: int):
    dm = TextDataModule(block_size=16, batch_size=4, num_workers=workers)
    dm.trainer = Trainer(accelerator=accelerator, devices=1, logger=False, enable_progress_bar=False)
    dm.setup("fit")
    return dm.train_dataloader(), dm.val_dataloader()


def test_cpu_loaders_do_not_pin_and_workers_persist_and_prefetch():
    for loader in _loaders("cpu", 2):
        assert not loader.pin_memory
        assert loader.persistent_workers and loader.prefetch_factor == PREFETCH_BATCHES > 2
    for loader in _loaders("cpu", 0):
        assert not loader.pin_memory and not loader.persistent_workers and loader.prefetch_factor is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_loaders_pin_memory():
    for loader in _loaders("gpu", 2):
        assert loader.pin_memory
        x, _ = next(iter(loader))
        assert x.is_pinned()
