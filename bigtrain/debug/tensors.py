"""Plain statistics of tensors and batches, for the report and `debug.json` (numbers, never tensors)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch


def describe(t: torch.Tensor) -> dict[str, Any]:
    """Shape, dtype, and (for numbers) min, max, mean and the count of NaN/Inf values of one tensor."""
    out: dict[str, Any] = {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")}
    if t.numel() == 0 or t.dtype == torch.bool:
        return out
    v = t.detach().float()
    finite = torch.isfinite(v)
    out["nonfinite"] = int((~finite).sum())
    good = v[finite]
    if good.numel():
        out.update(min=float(good.min()), max=float(good.max()), mean=float(good.mean()))
    return out


def leaves(batch: Any, prefix: str = "batch") -> list[tuple[str, torch.Tensor]]:
    """Every tensor of a batch (tuple, list, dict or tensor) with its place, e.g. `batch[1]`."""
    if isinstance(batch, torch.Tensor):
        return [(prefix, batch)]
    if isinstance(batch, (list, tuple)):
        return [x for i, v in enumerate(batch) for x in leaves(v, f"{prefix}[{i}]")]
    if isinstance(batch, dict):
        return [x for k, v in batch.items() for x in leaves(v, f"{prefix}[{k!r}]")]
    return []


def label_limit(datamodule: Any) -> tuple[str, int] | None:
    """The exclusive upper bound of integer targets the DataModule declares: classes, else vocabulary."""
    for name in ("num_classes", "vocab_size"):
        value = getattr(datamodule, name, None)
        if isinstance(value, int) and value > 0:
            return name, value
    return None


def batch_problems(batch: Any, datamodule: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """Each tensor's statistics, and one line per problem: NaN/Inf, a constant input, labels out of range."""
    rows, problems = [], []
    limit = label_limit(datamodule)
    for place, t in leaves(batch):
        row = {"name": place, **describe(t)}
        if t.is_floating_point():
            if row.get("nonfinite"):
                problems.append(f"{place} holds {row['nonfinite']} NaN/Inf values")
            elif t.numel() > 1 and row.get("min") == row.get("max"):
                problems.append(f"{place} is constant ({row['min']:g} everywhere)")
        elif t.dtype != torch.bool and t.numel():
            counts = Counter(t.flatten().tolist())
            row["distinct"] = len(counts)
            row["most_common"] = [[int(k), n] for k, n in counts.most_common(5)]
            if limit and (row["min"] < 0 or row["max"] >= limit[1]):
                problems.append(
                    f"{place} holds values {int(row['min'])}..{int(row['max'])} outside "
                    f"0..{limit[1] - 1} (data {limit[0]} = {limit[1]})"
                )
        rows.append(row)
    return rows, problems


def block_of(name: str) -> str:
    """The block a parameter belongs to: its name up to the first list index (`net.blocks.3.attn.w` ->
    `net.blocks.3`), else up to its owning module's parent (`net.head.weight` -> `net.head`)."""
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part.isdigit():
            return ".".join(parts[: i + 1])
    return ".".join(parts[:-1][:2]) or name
