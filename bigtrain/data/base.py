"""What every bigtrain DataModule shares: the global batch, seeded sampling, loaders.

Randomness in the data path is a pure function of (seed, epoch, sample index), never of a global RNG or a
worker's state, so N ranks see exactly the samples one process would and a resumed run can replay the
order. `EpochSampler` yields `epoch * len(dataset) + index`; datasets recover both with `split_index` and
derive any per-sample randomness (augmentation, window jitter) from `sample_generator`.
"""

from __future__ import annotations

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from bigtrain.errors import UserError


class EpochSampler(DistributedSampler):
    """A seeded DistributedSampler (also for one process) whose indices carry the epoch."""

    def __iter__(self):  # noqa: D105
        n = len(self.dataset)  # type: ignore[arg-type]
        for index in super().__iter__():
            yield self.epoch * n + index


def split_index(i: int, n: int) -> tuple[int, int]:
    """(epoch, index) from an `EpochSampler` value for a dataset of length n."""
    return divmod(i, n)


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A torch.Generator that depends only on (seed, epoch, index)."""
    # A fixed odd-multiplier mix keeps nearby (epoch, index) pairs far apart in seed space.
    mixed = (seed * 1_000_003 + epoch) * 2_654_435_761 + index
    return torch.Generator().manual_seed(mixed % (2**63 - 1))


class BigtrainDataModule(LightningDataModule):
    """Base DataModule: `batch_size` is the global batch, split across the data-parallel ranks."""

    def __init__(self, *, batch_size: int, num_workers: int, seed: int) -> None:
        super().__init__()
        if batch_size < 1:
            raise UserError(f"data.batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise UserError(f"data.num_workers must be >= 0, got {num_workers}")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed

    def _ranks(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 1, 0
        return trainer.world_size, trainer.global_rank

    @property
    def per_device_batch_size(self) -> int:
        """The global batch divided by the number of data-parallel ranks."""
        world, _ = self._ranks()
        if self.batch_size % world:
            raise UserError(
                f"data.batch_size {self.batch_size} does not divide across {world} ranks; "
                f"use a multiple of {world}"
            )
        return self.batch_size // world

    def loader(self, dataset: Dataset, *, train: bool) -> DataLoader:
        """A DataLoader over `dataset` with the seeded EpochSampler and the per-device batch."""
        world, rank = self._ranks()
        sampler = EpochSampler(
            dataset, num_replicas=world, rank=rank, shuffle=train, seed=self.seed, drop_last=train
        )
        return DataLoader(
            dataset,
            batch_size=self.per_device_batch_size,
            sampler=sampler,
            drop_last=train,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )
