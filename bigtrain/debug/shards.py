"""What a sharding plan did to a network: its FSDP units, each parameter's shard, blocks it missed, and
tensor-parallel dimensions that do not divide."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.filesize import decimal as size_text
from torch import nn

ROOT = "(root)"
"""The name the report gives the root FSDP unit (the network itself)."""


@dataclass(frozen=True)
class Shard:
    """One parameter on one rank: its full and local shapes, how it is placed, and its local bytes."""

    name: str
    unit: str
    shape: tuple[int, ...]
    local: tuple[int, ...]
    placements: str
    bytes: int


def unit_names(net: nn.Module) -> list[str]:
    """The names of the network's FSDP units (`fully_shard` modules), the root as ''."""
    from torch.distributed.fsdp import FSDPModule

    return [name for name, module in net.named_modules() if isinstance(module, FSDPModule)]


def own_class(module: nn.Module) -> type:
    """The module's own class (`fully_shard` swaps in a subclass named `FSDP<name>`)."""
    from torch.distributed.fsdp import FSDPModule

    return next(c for c in type(module).__mro__ if not issubclass(c, FSDPModule))


def class_name(module: nn.Module) -> str:
    """The name of the module's own class."""
    return own_class(module).__name__


def owner(param_name: str, units: list[str]) -> str:
    """The unit that manages a parameter: the innermost unit whose module contains it."""
    inside = [u for u in units if u == "" or param_name.startswith(u + ".")]
    return max(inside, key=len) if inside else ""


def shards(net: nn.Module) -> list[Shard]:
    """Every parameter of a sharded network with its unit, full and local shapes and local bytes."""
    from torch.distributed.tensor import DTensor

    units = unit_names(net)
    out = []
    for name, p in net.named_parameters():
        local = p.to_local() if isinstance(p, DTensor) else p
        placements = ", ".join(str(x) for x in p.placements) if isinstance(p, DTensor) else "replicated"
        unit = owner(name, units)
        out.append(
            Shard(name, unit or ROOT, tuple(p.shape), tuple(local.shape), placements,
                  local.numel() * local.element_size())
        )  # fmt: skip
    return out


def missed_blocks(net: nn.Module) -> list[tuple[str, str]]:
    """(block, unit holding its parameters) for each block the plan missed.

    The rule: a module in a ModuleList or Sequential is a block the plan missed when a sibling of the same
    class is a block that `blocks()` returns (so it is its own FSDP unit) but it is not one itself, and its
    parameters fall to an enclosing unit (the root, or a sub-network), which gathers them at every step.
    """
    units = unit_names(net)
    planned = {id(b) for b in net.blocks()} if callable(getattr(net, "blocks", None)) else set()
    found = []
    for prefix, container in net.named_modules():
        if not isinstance(container, (nn.ModuleList, nn.Sequential)):
            continue
        items = list(container.named_children())
        block_types = {own_class(m) for _, m in items if id(m) in planned}
        for name, module in items:
            full = f"{prefix}.{name}" if prefix else name
            if own_class(module) not in block_types or id(module) in planned or full in units:
                continue
            params = [n for n, _ in module.named_parameters()]
            if params:
                found.append((full, owner(f"{full}.{params[0]}", units) or ROOT))
    return found


def tp_problems(net: nn.Module, tp: int) -> list[str]:
    """One line per parameter the network's tensor-parallel plan would split along a dimension that `tp`
    does not divide (by its `tp_plan` styles: column-wise splits a Linear's outputs, row-wise its inputs)."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    plan = net.tp_plan(1)  # degree 1 always builds: only which layers split, and how, is read from it
    problems = []
    for index, block in enumerate(net.blocks()):
        for path, style in plan.items():
            try:
                layer = block.get_submodule(path)
            except AttributeError:
                problems.append(f"tp_plan() names {path!r}, which {_block_name(net, index)} does not have")
                continue
            dims = _split_dims(layer, style, ColwiseParallel, RowwiseParallel)
            for pname, dim in dims.items():
                p = getattr(layer, pname, None)
                if p is not None and p.shape[dim] % tp:
                    shape, name = (
                        "x".join(str(s) for s in p.shape),
                        f"{_block_name(net, index)}.{path}.{pname}",
                    )
                    problems.append(
                        f"{name} ({shape}): dim {dim} of size {p.shape[dim]} does not divide by "
                        f"tensor_parallel_size {tp}"
                    )
    return problems


def _split_dims(layer: nn.Module, style: Any, column: type, row: type) -> dict[str, int]:
    """The dimension of each of a layer's parameters that a column- or row-wise style splits."""
    embedding = isinstance(layer, nn.Embedding)
    if isinstance(style, column):
        return {"weight": 1} if embedding else {"weight": 0, "bias": 0}
    if isinstance(style, row):
        return {"weight": 0} if embedding else {"weight": 1}
    return {}


def _block_name(net: nn.Module, index: int) -> str:
    block = list(net.blocks())[index]
    return next((name for name, m in net.named_modules() if m is block), f"block {index}")


def unit_summary(rows: list[Shard], classes: dict[str, str]) -> str:
    """FSDP units grouped by their module's class: `Block x24 12.8 MB each, GPT (root) 96.8 MB`."""
    per_unit: dict[str, int] = {}
    for r in rows:
        per_unit[r.unit] = per_unit.get(r.unit, 0) + r.bytes
    groups: dict[str, list[int]] = {}
    for unit, n in per_unit.items():
        label = f"{classes.get(unit, '?')} (root)" if unit == ROOT else classes.get(unit, "?")
        groups.setdefault(label, []).append(n)
    parts = []
    for label, sizes in groups.items():
        lo, hi = min(sizes), max(sizes)
        each = size_text(lo) if lo == hi else f"{size_text(lo)}-{size_text(hi)}"
        parts.append(f"{label} x{len(sizes)} {each} each" if len(sizes) > 1 else f"{label} {each}")
    return ", ".join(parts)
