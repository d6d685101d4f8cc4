"""Who shares what: the data-parallel size and rank of this process, and its rows of a global batch."""

from __future__ import annotations

from typing import Any

import torch

from bigtrain.lightning_compat import device_mesh


def data_parallel(trainer: Any | None) -> tuple[int, int]:
    """(data-parallel size, this rank's data-parallel rank): the sampler's num_replicas and rank.

    Ranks of one tensor-parallel group share a data-parallel rank: they must see the same batch.
    """
    if trainer is None:
        return 1, 0
    strategy = trainer.strategy
    mesh = device_mesh(strategy)
    if mesh is not None and "data_parallel" in (mesh.mesh_dim_names or ()):
        dp = mesh["data_parallel"]
        return dp.size(), dp.get_local_rank()
    if hasattr(strategy, "distributed_sampler_kwargs") and strategy.distributed_sampler_kwargs:
        kwargs = strategy.distributed_sampler_kwargs
        return int(kwargs["num_replicas"]), int(kwargs["rank"])
    return trainer.world_size, trainer.global_rank


def data_parallel_group(trainer: Any | None) -> Any | None:
    """The process group of this rank's data-parallel peers (None: the default group)."""
    if trainer is None:
        return None
    mesh = device_mesh(trainer.strategy)
    if mesh is not None and "data_parallel" in (mesh.mesh_dim_names or ()):
        return mesh["data_parallel"].get_group()
    return None


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
