"""Shared by the image-family tests (cnn, autoencoder): in-memory images, a quiet trainer, the digits."""

from __future__ import annotations

import gzip
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from tests.conftest import test_data_dir


class Images(pl.LightningDataModule):
    """Tensors in memory, the first fifth for validation, with the attributes an ImageDataModule exposes
    after setup(); `mean` and `std` are the normalisation the images carry, one value for every channel."""

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        num_classes: int,
        mean: float = 0.0,
        std: float = 1.0,
        batch_size: int = 32,
    ) -> None:
        super().__init__()
        n_val = len(x) // 5
        self.train_set = TensorDataset(x[n_val:], y[n_val:])
        self.val_set = TensorDataset(x[:n_val], y[:n_val])
        self.num_classes, self.channels, self.image_size = num_classes, x.shape[1], x.shape[-1]
        self.mean, self.std = (mean,) * self.channels, (std,) * self.channels
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        gen = torch.Generator().manual_seed(0)
        return DataLoader(self.train_set, self.batch_size, shuffle=True, drop_last=True, generator=gen)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, 64)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, 64)


def trainer(tmp_path: Path, **kwargs) -> pl.Trainer:
    """A CPU trainer in tmp_path without logger, checkpoints, progress bar, summary or sanity validation."""
    args = dict(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0,
    )  # fmt: skip
    return pl.Trainer(**(args | kwargs))


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """The shared 8x8 digits, shuffled with seed 0: images (N, 1, 8, 8) in [0, 1] and labels (N,).

    Skips the test when the data set is absent.
    """
    path = test_data_dir() / "digits" / "digits.csv.gz"
    if not path.exists():
        pytest.skip(f"digits data not found at {path}; set BIGTRAIN_TEST_DATA")
    with gzip.open(path, "rt") as f:
        rows = torch.tensor([[int(v) for v in line.split(",")] for line in f if line.strip()])
    rows = rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))]
    return rows[:, :64].float().view(-1, 1, 8, 8) / 16.0, rows[:, 64]
