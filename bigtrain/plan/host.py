"""Does a CPU run fit this machine? Checked before any rank starts, so that 64 ranks on 2 cores, or a batch
size far too large (which grows until the kernel kills the process), end in one line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.pytorch.accelerators import CPUAccelerator

from bigtrain.errors import UserError
from bigtrain.plan.facts import fill_data_sizes, model_facts, plannable_network
from bigtrain.plan.memory import ParallelLayout, estimate, precision_of, size_text
from bigtrain.strategies.batch import split_ranks


def check_host(trainer: Any, model: Any, datamodule: Any) -> None:
    """Refuse, before any rank starts, a CPU run with more processes than cores or steps beyond memory."""
    _check_cpu_devices(trainer)
    _check_cpu_memory(trainer, model, datamodule)


def _check_cpu_devices(trainer: Any) -> None:
    """Refuse more CPU ranks than this machine has cores when Lightning would start them itself: each rank is
    a process that fights the others for a core (64 on a 2-core machine start, then crawl). Ranks that a
    launcher (torchrun, srun) already started are the user's explicit choice."""
    if not isinstance(trainer.accelerator, CPUAccelerator) or _launched_externally():
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if trainer.num_devices > cores:
        raise UserError(
            f"trainer.devices {trainer.num_devices} asks for {trainer.num_devices} CPU processes but this "
            f"machine has {cores} core(s); use --trainer.devices {cores} or fewer"
        )


def _check_cpu_memory(trainer: Any, model: Any, datamodule: Any) -> None:
    """On CPUs every rank of this node shares the host's memory: refuse a step that cannot fit in it."""
    if isinstance(trainer.accelerator, CPUAccelerator):
        ranks = trainer.num_nodes * trainer.num_devices
        check_host_memory(model, datamodule, trainer.strategy, trainer.precision, trainer.num_devices, ranks)


def _launched_externally() -> bool:
    """Whether this process is one rank of a job that torchrun, srun or Lightning itself started."""
    return any(name in os.environ for name in ("LOCAL_RANK", "WORLD_SIZE", "SLURM_NTASKS"))


def available_memory() -> int | None:
    """Bytes this process may still allocate: MemAvailable, or the cgroup's limit when lower; None unknown."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        free = int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None
    for limit, used in (("memory.max", "memory.current"), ("memory/memory.limit_in_bytes", None)):
        try:
            cap = int(Path("/sys/fs/cgroup", limit).read_text())
            taken = int(Path("/sys/fs/cgroup", used).read_text()) if used else 0
        except (OSError, ValueError):  # no such file, or "max"
            continue
        free = min(free, max(cap - taken, 0))
    return free


def check_host_memory(
    model: Any, datamodule: Any, strategy: Any, precision: Any, local_ranks: int, ranks: int
) -> None:
    """UserError when `local_ranks` processes of one step's estimated bytes exceed the available memory."""
    if plannable_network(model, datamodule) is None:
        return
    free = available_memory()
    if free is None:
        return
    fill_data_sizes(datamodule)
    facts = model_facts(model, datamodule)
    name = {"FSDP": "fsdp", "DDP": "ddp"}.get(type(strategy).__name__, "single")
    tp = int(getattr(strategy, "tensor_parallel_size", 1) or 1) if name == "fsdp" else 1
    dp = split_ranks(ranks, tp, getattr(strategy, "data_parallel_size", None)).size
    layout = ParallelLayout(name, name, ranks, dp, tp, bool(getattr(strategy, "activation_checkpointing", 0)))
    need = estimate(facts, layout, precision_of(precision, getattr(strategy, "mixed_precision", None))).total
    if need * local_ranks > free:
        each = f" ({local_ranks} processes of {size_text(need)})" if local_ranks > 1 else ""
        raise UserError(
            f"one training step needs about {size_text(need * local_ranks)}{each} at data.batch_size "
            f"{facts.global_batch} but this machine has {size_text(free)} available; use a smaller "
            f"data.batch_size or set data.micro_batch_size"
        )
