"""The per-device arithmetic of `bigtrain plan`: precision, layouts, estimates and the recommendation.

The formulas are in `bigtrain.plan`'s docstring; the model facts they start from come from
`bigtrain.plan.facts`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bigtrain.errors import UserError
from bigtrain.plan.facts import ModelFacts, fill_data_sizes, model_facts
from bigtrain.strategies.batch import DataParallel, split_batch, split_ranks

GIB = 2**30
HEADROOM = 0.9
"""Share of a device's memory the estimate may fill."""
DEFAULT_MEMORY = 80 * GIB
"""Device memory assumed without --device-memory or a CUDA device: a data-centre GPU."""
BITS = {"64": 8, "32": 4, "16": 2, "bf16": 2}
SHORT_PRECISION = {"16": "16-mixed", "bf16": "bf16-mixed", "32": "32-true", "64": "64-true"}


@dataclass(frozen=True)
class Precision:
    """Bytes per stored parameter (the fp32 master under mixed precision) and per activation."""

    param: int
    compute: int
    name: str


def precision_of(trainer_precision: Any = None, mixed_precision: Any = None) -> Precision:
    """Precision from Lightning's `trainer.precision` and an FSDP mixed-precision option (e.g. 'bf16')."""
    text = str(trainer_precision if trainer_precision is not None else "32-true")
    text = SHORT_PRECISION.get(text, text).replace("transformer-engine", "bf16-mixed")
    head, _, mode = text.partition("-")
    if head not in BITS or mode not in ("true", "mixed"):
        raise UserError(
            f"trainer.precision '{text}' is not one of 64-true, 32-true, 16-mixed, bf16-mixed, ..."
        )
    compute = BITS[head]
    param = 4 if mode == "mixed" else compute
    if isinstance(mixed_precision, dict):
        mixed_precision = mixed_precision.get("param_dtype")
    if mixed_precision and str(mixed_precision).lower() in ("bf16", "bfloat16", "fp16", "float16", "16"):
        compute, text = 2, f"{text} + fsdp {mixed_precision}"
    return Precision(param=param, compute=compute, name=text)


@dataclass(frozen=True)
class ParallelLayout:
    """One way to run that the planner compares: a strategy over `ranks` devices, dp data-parallel x tp
    tensor-parallel (not `bigtrain.cluster.layout.Layout`, the node and device counts of a submitted run)."""

    name: str
    strategy: str
    ranks: int
    dp: int
    tp: int = 1
    checkpointing: bool = False


@dataclass(frozen=True)
class Estimate:
    """Estimated bytes per device of one layout."""

    layout: ParallelLayout
    batch: int
    params: int
    grads: int
    optimizer: int
    activations: int
    other: int
    note: str = ""

    @property
    def total(self) -> int:
        """Every component together."""
        return self.params + self.grads + self.optimizer + self.activations + self.other

    @property
    def states(self) -> int:
        """Parameters, gradients and optimizer state: what the memory test measures."""
        return self.params + self.grads + self.optimizer

    def fits(self, memory: int) -> bool:
        """Whether the total stays within the usable share of `memory`."""
        return not self.note and self.total <= HEADROOM * memory


@dataclass(frozen=True)
class Recommendation:
    """The cheapest layout that fits (or the smallest one, with fits False), as strategy settings."""

    strategy: str
    tensor_parallel_size: int
    activation_checkpointing: bool
    fits: bool
    reason: str
    estimate: Estimate


def layouts(facts: ModelFacts, nodes: int, devices_per_node: int) -> list[ParallelLayout]:
    """The layouts to compare: one device, DDP, FSDP (with and without checkpointing), FSDP x TP."""
    world = nodes * devices_per_node
    out = [ParallelLayout("single", "single", 1, 1)]
    if world > 1:
        out += [
            ParallelLayout("ddp", "ddp", world, world),
            ParallelLayout("fsdp", "fsdp", world, world),
            ParallelLayout("fsdp + AC", "fsdp", world, world, checkpointing=True),
        ]
        for t in facts.tp_degrees:
            if t <= devices_per_node and devices_per_node % t == 0:
                dp = split_ranks(world, t, nodes=nodes).size
                out.append(ParallelLayout(f"fsdp x TP{t}", "fsdp", world, dp, t))
                out.append(ParallelLayout(f"fsdp x TP{t} + AC", "fsdp", world, dp, t, checkpointing=True))
    return out


def _per_device_batch(facts: ModelFacts, layout: ParallelLayout) -> tuple[int, str]:
    """(rows one DataLoader batch holds, why the batch cannot split as configured or '')."""
    ranks = DataParallel(layout.dp, layout.tp)
    try:
        return split_batch(facts.global_batch, ranks, facts.micro_batch).loader_batch, ""
    except UserError as err:
        batch = facts.global_batch // layout.dp
        return (min(batch, facts.micro_batch) if facts.micro_batch else batch), str(err)


def estimate(facts: ModelFacts, layout: ParallelLayout, precision: Precision) -> Estimate:
    """Estimated bytes per device of `layout` (see the module docstring for the formulas)."""
    P, tp, dp = facts.params, layout.tp, layout.dp
    local = P if layout.strategy != "fsdp" else (facts.tp_params / tp + P - facts.tp_params) / dp
    batch, note = _per_device_batch(facts, layout)
    if layout.strategy == "fsdp":
        gathered = facts.root_params + 2 * facts.max_block_params / tp
        other = gathered * (precision.compute + precision.param)
    else:
        other = P * precision.param if layout.strategy == "ddp" else 0
        other += P * precision.compute if precision.compute != precision.param else 0
    return Estimate(
        layout=layout,
        batch=max(batch, 1),
        params=round(local * precision.param),
        grads=round(local * precision.param),
        optimizer=round(local * precision.param * facts.states),
        activations=round(facts.activations(max(batch, 1), precision.compute, tp, layout.checkpointing)),
        other=round(other),
        note=note,
    )


def choose(estimates: list[Estimate], memory: int) -> Recommendation:
    """The cheapest estimate that fits (single only on one device), else the smallest one."""
    world = max(e.layout.ranks for e in estimates)
    candidates = [e for e in estimates if (e.layout.strategy == "single") == (world == 1)]
    fitting = [e for e in candidates if e.fits(memory)]
    best = fitting[0] if fitting else min(candidates, key=lambda e: e.total)
    room = f"{size_text(HEADROOM * memory)} usable of {size_text(memory)}"
    if fitting:
        reason = f"{best.layout.name} needs {size_text(best.total)} per device ({room})"
    else:
        reason = f"nothing fits ({room}); the smallest, {best.layout.name}, needs {size_text(best.total)}"
    strategy = best.layout.strategy
    return Recommendation(strategy, best.layout.tp, best.layout.checkpointing, bool(fitting), reason, best)


def recommend(
    model: Any,
    datamodule: Any = None,
    *,
    num_nodes: int = 1,
    devices_per_node: int = 1,
    precision: Any = "32-true",
    mixed_precision: Any = None,
    device_memory: int | None = None,
    tensor_parallel: bool = True,
) -> Recommendation:
    """The layout `strategy: auto` should use for this model and data on num_nodes x devices_per_node
    (`tensor_parallel` False: among the layouts without tensor parallelism only)."""
    if datamodule is not None:
        fill_data_sizes(datamodule)
    facts = model_facts(model, datamodule)
    prec = precision_of(precision, mixed_precision)
    memory = device_memory or default_device_memory()
    candidates = [
        lay for lay in layouts(facts, num_nodes, devices_per_node) if tensor_parallel or lay.tp == 1
    ]
    return choose([estimate(facts, lay, prec) for lay in candidates], memory)


def default_device_memory() -> int:
    """The first CUDA device's memory, else DEFAULT_MEMORY."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory
    return DEFAULT_MEMORY


def size_text(n: float) -> str:
    """Bytes as GiB (from 1 GiB) or MiB, for the table and the recommendation."""
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / 2**20:.1f} MiB"
