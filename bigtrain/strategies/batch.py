"""The data-parallel arithmetic: how many data-parallel ranks a run has, and how its global batch splits.

One place for it, so the submit command (before the queue), the CLI (before any rank starts), FSDP's device
mesh, every rank's DataModule and the planner agree, and say the same thing when the counts do not fit.
`data.batch_size` is the global batch: each of the dp data-parallel ranks loads `global / dp` rows per
optimizer step (the per-device batch), in micro-batches with gradient accumulation when
`data.micro_batch_size` is set. Ranks of one tensor-parallel group share a data-parallel rank.

Nothing here imports torch or Lightning, so the cluster code can use it without their start-up cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bigtrain.errors import UserError


@dataclass(frozen=True)
class DataParallel:
    """A run's ranks as `size` data-parallel x `tp` tensor-parallel, with the node and device counts when
    known (they only make the error messages say how the count came about)."""

    size: int
    """Data-parallel ranks: the global batch splits into this many shares."""
    tp: int = 1
    """Tensor-parallel degree: ranks of one group load the same share."""
    nodes: int | None = None
    devices_per_node: int | None = None

    @property
    def world(self) -> int:
        """Every rank: data-parallel x tensor-parallel."""
        return self.size * self.tp

    def __str__(self) -> str:
        """`24 data-parallel ranks (6 node(s) x 8 device(s) = 48 ranks / tensor_parallel_size 2)`."""
        parts = []
        if self.nodes is not None and self.devices_per_node is not None:
            parts.append(f"{self.nodes} node(s) x {self.devices_per_node} device(s)")
        if self.tp > 1:
            parts.append(f"{self.world} ranks / tensor_parallel_size {self.tp}")
        return f"{self.size} data-parallel ranks" + (f" ({' = '.join(parts)})" if parts else "")


@dataclass(frozen=True)
class BatchSplit:
    """How one optimizer step's global batch splits across the data-parallel ranks."""

    global_batch: int
    """`data.batch_size`: rows per optimizer step over all ranks."""
    per_device: int
    """Rows each data-parallel rank contributes per optimizer step."""
    loader_batch: int
    """Rows in one DataLoader batch: the micro-batch when one is set, else the per-device batch."""

    @property
    def accumulation(self) -> int:
        """DataLoader batches (micro-batches) whose gradients make one optimizer step."""
        return self.per_device // self.loader_batch


def _near(values: list[int], value: int) -> str:
    """The valid values just below and above `value`, as `a or b`."""
    below = [v for v in values if v < value][-1:]
    above = [v for v in values if v > value][:1]
    return " or ".join(str(v) for v in below + above)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def split_ranks(
    world: int, tp: int = 1, given_dp: int | None = None, *, nodes: int | None = None
) -> DataParallel:
    """`world` ranks (on `nodes` nodes, if known) as data-parallel x `tp`; UserError when they do not fit."""
    devices = world // nodes if nodes else None
    counts = f"{nodes} node(s) x {devices} device(s)" if nodes else "trainer.num_nodes x trainer.devices"
    if tp < 1:
        raise UserError(f"trainer.strategy.tensor_parallel_size must be >= 1, got {tp}")
    if given_dp is not None and given_dp < 1:
        raise UserError(f"trainer.strategy.data_parallel_size must be >= 1 or unset, got {given_dp}")
    if world % tp:
        raise UserError(
            f"trainer.strategy.tensor_parallel_size {tp} does not divide the {world} ranks ({counts}); "
            f"use a divisor of {world} such as {_near(_divisors(world), tp)}"
        )
    if given_dp is not None and given_dp * tp != world:
        raise UserError(
            f"trainer.strategy.data_parallel_size {given_dp} x tensor_parallel_size {tp} must equal the "
            f"{world} ranks ({counts}); leave data_parallel_size unset to use {world // tp}"
        )
    return DataParallel(world // tp, tp, nodes, devices)


def split_batch(global_batch: int, dp: DataParallel | int, micro_batch: int | None = None) -> BatchSplit:
    """The global batch split over `dp` data-parallel ranks, in micro-batches; UserError when it does not."""
    dp = dp if isinstance(dp, DataParallel) else DataParallel(dp)
    if global_batch < 1:
        raise UserError(f"data.batch_size must be >= 1, got {global_batch}")
    if micro_batch is not None and micro_batch < 1:
        raise UserError(f"data.micro_batch_size must be >= 1 or null, got {micro_batch}")
    if global_batch % dp.size:
        lower = global_batch - global_batch % dp.size
        examples = " or ".join(str(v) for v in (lower, lower + dp.size) if v > 0)
        raise UserError(
            f"data.batch_size {global_batch} (the global batch) does not divide across {dp}; "
            f"use a multiple of {dp.size} such as {examples}, or other counts"
        )
    per_device = global_batch // dp.size
    if micro_batch is None or micro_batch == per_device:
        return BatchSplit(global_batch, per_device, per_device)
    if per_device % micro_batch:
        raise UserError(
            f"data.micro_batch_size {micro_batch} does not divide the per-device batch {per_device} "
            f"(data.batch_size {global_batch} / {dp}); use a divisor of {per_device} such as "
            f"{_near(_divisors(per_device), micro_batch)}, or leave it unset"
        )
    return BatchSplit(global_batch, per_device, micro_batch)


def device_mesh(trainer: Any | None) -> Any | None:
    """The strategy's device mesh once it is set up (FSDP, tensor parallel), else None."""
    if trainer is None:
        return None
    from bigtrain.lightning_compat import device_mesh as strategy_mesh  # only with a trainer: Lightning is in

    return strategy_mesh(trainer.strategy)


def data_parallel_mesh(trainer: Any | None) -> Any | None:
    """The data-parallel dimension of the strategy's device mesh, or None without one."""
    mesh = device_mesh(trainer)
    if mesh is not None and "data_parallel" in (mesh.mesh_dim_names or ()):
        return mesh["data_parallel"]
    return None


def data_parallel(trainer: Any | None) -> tuple[int, int]:
    """(data-parallel size, this rank's data-parallel rank): the sampler's num_replicas and rank.

    Ranks of one tensor-parallel group share a data-parallel rank: they must see the same batch.
    """
    if trainer is None:
        return 1, 0
    dp = data_parallel_mesh(trainer)
    if dp is not None:
        return dp.size(), dp.get_local_rank()
    try:
        kwargs = trainer.strategy.distributed_sampler_kwargs
    except (AttributeError, RuntimeError):  # none on one device; a mesh strategy's raises before setup
        kwargs = None
    if kwargs:
        return int(kwargs["num_replicas"]), int(kwargs["rank"])
    return trainer.world_size, trainer.global_rank


def trainer_data_parallel(trainer: Any | None, size: int) -> DataParallel:
    """`size` data-parallel ranks of the trainer's run, with its node and device counts when it has them."""
    nodes, devices = getattr(trainer, "num_nodes", None), getattr(trainer, "num_devices", None)
    if not (isinstance(nodes, int) and isinstance(devices, int)) or (nodes * devices) % size:
        return DataParallel(size)
    return DataParallel(size, nodes * devices // size, nodes, devices)
