"""Who shares what: the data-parallel size and rank of this process, and its rows of a global batch; and
the end of a run's process group (`release_process_group`)."""

from __future__ import annotations

from typing import Any

import torch

from bigtrain.strategies.batch import data_parallel, data_parallel_mesh

__all__ = ["data_parallel", "data_parallel_group", "global_randn", "rank_rows", "release_process_group"]


def data_parallel_group(trainer: Any | None) -> Any | None:
    """The process group of this rank's data-parallel peers (None: the default group)."""
    dp = data_parallel_mesh(trainer)
    return None if dp is None else dp.get_group()


def rank_rows(global_rows: torch.Tensor, trainer: Any | None) -> torch.Tensor:
    """This rank's rows of a tensor drawn for the whole global batch.

    A DistributedSampler gives rank r the positions r, r + N, r + 2N, ... of the shuffled order, so the
    union of the ranks' b-th batches is one process's b-th batch and rank r holds its rows r::N. Per-sample
    randomness drawn for the global batch and sliced the same way gives N ranks exactly what one process sees.
    """
    size, rank = data_parallel(trainer)
    return global_rows[rank::size]


def global_randn(n_local: int, *shape: int, seed: int, step: int, trainer: Any | None) -> torch.Tensor:
    """Normal noise (n_local, *shape): this rank's rows of a draw for the global batch from (seed, step).

    Every rank draws the same global tensor and keeps its rows (see `rank_rows`), so 1 or N ranks train on
    the same noise; the draw depends on nothing else, so a resumed run draws it again.
    """
    size, _ = data_parallel(trainer)
    # An odd-multiplier mix keeps (seed, step) pairs apart and away from plain `manual_seed(seed)` streams.
    mixed = ((seed + 0x5EED) * 1_000_003 + step) * 2_654_435_761
    gen = torch.Generator().manual_seed(mixed % (2**63 - 1))
    return rank_rows(torch.randn(n_local * size, *shape, generator=gen), trainer)


def release_process_group() -> None:
    """Destroy the process group a finished run leaves behind (Lightning keeps it for the next fit), and
    DTensor's caches of the run's device meshes, which hold its groups. Left to interpreter shutdown, gloo's
    threads can die mid-teardown and abort a finished run (exit -6, "terminate called without an active
    exception")."""
    import gc

    import torch.distributed as dist

    from bigtrain.torch_compat import forget_device_meshes

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        forget_device_meshes()
        gc.collect()
