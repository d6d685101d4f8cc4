"""What every bigtrain DataModule shares: the global batch, seeded sampling, loaders.

Randomness in the data path is a pure function of (seed, epoch, sample index), never of a global RNG or a
worker's state, so N ranks see exactly the samples one process would and a resumed run can replay the
order. `EpochSampler` yields `epoch * len(dataset) + index`; datasets recover both with `split_index` and
derive any per-sample randomness (augmentation, window jitter) from `sample_generator`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import islice
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from bigtrain.errors import UserError
from bigtrain.strategies.batch import BatchSplit, data_parallel, split_batch, trainer_data_parallel

PREFETCH_BATCHES = 4
"""Batches each DataLoader worker prepares ahead (torch's default is 2)."""


class EpochSampler(DistributedSampler):
    """A seeded DistributedSampler (also for one process) whose indices carry the epoch.

    `skip` leaves out that many of this rank's indices at the start of the next pass only (a resumed epoch).
    """

    skip: int = 0

    def __iter__(self):  # noqa: D105
        n = len(self.dataset)  # type: ignore[arg-type]
        skip, self.skip = self.skip, 0
        for index in islice(super().__iter__(), skip, None):
            yield self.epoch * n + index


class ResumableDataLoader(DataLoader):
    """A DataLoader whose position in the epoch is part of the checkpoint (Lightning's fit loop saves the
    `state_dict()` of stateful train loaders and loads it into the new loader on resume).

    It counts the batches it has handed out this epoch. A resumed pass over the saved epoch starts after
    them, skipping their indices in the sampler (nothing skipped is loaded, augmented or sent to a worker).
    The pass starts at the first batch, once Lightning has set the sampler's epoch: if the saved epoch was
    already finished, Lightning has moved on to the next one and nothing is skipped.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._epoch = 0
        self._batches = 0
        self._resume: tuple[int, int] | None = None

    def state_dict(self) -> dict[str, int]:
        """The epoch of the current pass and the number of batches handed out in it."""
        return {"epoch": self._epoch, "batches": self._batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue the saved epoch after its handed-out batches on the next pass."""
        self._resume = (int(state["epoch"]), int(state["batches"]))

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        return self._pass()

    def _pass(self) -> Iterator[Any]:
        # A generator: this runs at the first batch, after Lightning's `set_epoch`, and only then starts
        # the workers, which draw indices at once.
        resume, self._resume = self._resume, None
        sampler = self.sampler
        self._epoch, self._batches = int(getattr(sampler, "epoch", 0)), 0
        if resume is not None and resume[0] == self._epoch and isinstance(sampler, EpochSampler):
            self._batches = resume[1]
            sampler.skip = resume[1] * self.batch_size  # type: ignore[operator]
        for batch in super().__iter__():
            self._batches += 1
            yield batch


def split_index(i: int, n: int) -> tuple[int, int]:
    """(epoch, index) from an `EpochSampler` value for a dataset of length n."""
    return divmod(i, n)


def sample_generator(
    seed: int, epoch: int, index: int, generator: torch.Generator | None = None
) -> torch.Generator:
    """A torch.Generator seeded from (seed, epoch, index) alone: `generator` if given (reseeded), else new."""
    # A fixed odd-multiplier mix keeps nearby (epoch, index) pairs far apart in seed space.
    mixed = (seed * 1_000_003 + epoch) * 2_654_435_761 + index
    # Reseeding one generator per batch costs a third less than making one per sample.
    return (generator or torch.Generator()).manual_seed(mixed % (2**63 - 1))


class ReadBatch(Sequence):
    """A batch read at once, seen as its samples: any collate function (torch's default, the user's own)
    gets the list of samples it expects, while `pass_batch` takes the tensors as read, with no per-sample
    work."""

    def __init__(self, tensors: tuple[torch.Tensor, ...]) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return tuple(t[i] for t in self.tensors)


class BatchDataset(Dataset):
    """A dataset that reads a whole batch at once: `get_batch(indices)` returns the collated batch.

    The DataLoader passes each batch's sampler values to `__getitems__` (torch's batched fetch). The loader
    made by `BigtrainDataModule.loader` takes the batch as read (`pass_batch`); a plain
    `DataLoader(dataset, batch_size=...)` collates its samples as usual. `__getitem__` is the one-sample
    view of the same batch, for code that reads samples one at a time.
    """

    def get_batch(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        """The collated batch of these sampler values."""
        raise NotImplementedError

    def __getitems__(self, indices: list[int]) -> ReadBatch:
        return ReadBatch(self.get_batch(indices))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        return tuple(t[0] for t in self.get_batch([i]))


def pass_batch(batch: ReadBatch) -> tuple[torch.Tensor, ...]:
    """The collate function of a BatchDataset's loader: its batch is collated already."""
    return batch.tensors


class BigtrainDataModule(LightningDataModule):
    """Base DataModule: `batch_size` is the global batch, split across the data-parallel ranks; each
    DataLoader it makes holds `dataloader_batch_size` rows a batch (see `bigtrain.strategies.batch`).

    With `micro_batch_size`, each rank loads its share in micro-batches and the trainer accumulates their
    gradients (`trainer.accumulate_grad_batches` = per-device batch / micro-batch), so the optimisation is
    the same at any micro-batch size (BatchNorm statistics apart: they cover one micro-batch).
    """

    def __init__(
        self, *, batch_size: int, num_workers: int, seed: int, micro_batch_size: int | None = None
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise UserError(f"data.batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise UserError(f"data.num_workers must be >= 0, got {num_workers}")
        if micro_batch_size is not None and micro_batch_size < 1:
            raise UserError(f"data.micro_batch_size must be >= 1 or null, got {micro_batch_size}")
        self.batch_size = batch_size
        """The global batch (`data.batch_size`); a DataLoader's batch is `dataloader_batch_size`."""
        self.num_workers = num_workers
        self.seed = seed
        self.micro_batch_size = micro_batch_size

    def _ranks(self) -> tuple[int, int]:
        """(data-parallel size, rank): the strategy's sampler settings; tensor-parallel peers share a rank."""
        return data_parallel(self.trainer)

    @property
    def batch_split(self) -> BatchSplit:
        """The global batch (`batch_size`) split over this run's data-parallel ranks, in micro-batches."""
        size, _ = self._ranks()
        return split_batch(self.batch_size, trainer_data_parallel(self.trainer, size), self.micro_batch_size)

    @property
    def per_device_batch_size(self) -> int:
        """Rows each data-parallel rank loads per optimizer step: the global batch / data-parallel ranks."""
        return self.batch_split.per_device

    @property
    def dataloader_batch_size(self) -> int:
        """Every DataLoader's `batch_size` (not this module's `batch_size`, the global batch): the micro-batch
        when one is set, else the per-device batch."""
        return self.batch_split.loader_batch

    def _accumulate(self) -> None:
        """Accumulate gradients over the micro-batches of each device's share of the global batch."""
        trainer, steps = self.trainer, self.batch_split.accumulation
        if trainer is None or self.micro_batch_size is None:
            return
        module = trainer.lightning_module
        if steps > 1 and module is not None and not module.automatic_optimization:
            raise UserError(
                f"data.micro_batch_size needs gradient accumulation, which {type(module).__name__} (manual "
                f"optimization) cannot do; leave it unset"
            )
        trainer.accumulate_grad_batches = steps

    def loader(self, dataset: Dataset, *, train: bool) -> DataLoader:
        """A DataLoader over `dataset`: the seeded EpochSampler, `dataloader_batch_size` rows a batch."""
        world, rank = self._ranks()
        sampler = EpochSampler(
            dataset, num_replicas=world, rank=rank, shuffle=train, seed=self.seed, drop_last=train
        )
        if train:
            self._accumulate()
        workers = self.num_workers
        return (ResumableDataLoader if train else DataLoader)(
            dataset,
            batch_size=self.dataloader_batch_size,
            sampler=sampler,
            drop_last=train,
            num_workers=workers,
            persistent_workers=workers > 0,
            # Workers keep this many batches each in flight, so a GPU step never waits for one.
            prefetch_factor=PREFETCH_BATCHES if workers > 0 else None,
            # Page-locked batches copy to a GPU asynchronously; on a CPU pinning would only cost.
            pin_memory=self._on_cuda(),
            collate_fn=pass_batch if isinstance(dataset, BatchDataset) else None,
            # Its own generator for the workers' base seed: starting an iterator leaves the global RNG alone.
            generator=torch.Generator().manual_seed(self.seed),
        )

    def _on_cuda(self) -> bool:
        # No device known (no trainer, or one that has no strategy device yet): not CUDA, so no pinning.
        device = getattr(getattr(self.trainer, "strategy", None), "root_device", None)
        return device is not None and device.type == "cuda"

    # What `bigtrain plan` asks the data: sizes without reading (or downloading) it where they are known.

    def data_sizes(self) -> dict[str, Any]:
        """The sizes a network is built from, also set as attributes; here by reading the data (`setup`)."""
        self.setup("fit")
        return {}

    def sample_shape(self) -> tuple[int, ...] | None:
        """The shape of one model input, e.g. (C, H, W) or (T,), once the sizes are known; None: unknown."""
        return None
