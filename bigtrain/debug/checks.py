"""The verdict of each check, from what the probe and the data pass saw."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from bigtrain.debug.probe import GRAD_STEPS, WARMUP_STEPS, Observations
from bigtrain.debug.tensors import block_of

CHECKS = ("data", "shapes", "grads", "learns", "nan", "speed")
"""Every check, in report order; `--checks` picks a subset."""
LEARN_FRACTION = {"cnn": 0.3, "rnn": 0.75, "transformer": 0.85, "autoencoder": 0.5}
"""The fraction of its first loss that the loss on one fixed batch must fall below, per family, within
`--steps` steps at the recipe's own learning rate. Cross-entropy of a classifier falls furthest (label
smoothing of 0.1 floors it near 0.2 x start); next-token losses of a recipe tuned for a large model (a
learning rate of 2e-4) fall slowest. A model that does not learn at all (a learning rate of 0, frozen or
detached weights) stays at 1.0 x start."""
DEFAULT_FRACTION = 0.5
SPARK = "▁▂▃▄▅▆▇█"


@dataclass
class Verdict:
    """One row of the report."""

    check: str
    status: str  # pass | FAIL | skip
    summary: str
    details: dict[str, Any] = field(default_factory=dict)


def family(model: Any) -> str | None:
    """The bigtrain family (`cnn`, `gan`, ...) a LightningModule's class comes from, subclasses included."""
    for cls in type(model).__mro__:
        parts = cls.__module__.split(".")
        if parts[:2] == ["bigtrain", "models"] and len(parts) > 2:
            return parts[2]
    return None


def learn_fraction(fam: str | None) -> float | None:
    """The learns check's target fraction for a family; None where no loss need fall (a GAN)."""
    return None if fam == "gan" else LEARN_FRACTION.get(fam or "", DEFAULT_FRACTION)


def data_verdict(data: dict[str, Any]) -> Verdict:
    """NaN/Inf, constant inputs and labels out of range in the first batch, validation samples that are
    training samples; the batch's shapes and data time."""
    shapes = ", ".join(_tensor_text(r) for r in data["rows"])
    ms = data["seconds"]
    timing = f"first batch {ms[0] * 1e3:.0f} ms" + (
        f", then {statistics.median(ms[1:]) * 1e3:.1f} ms/batch" if len(ms) > 1 else ""
    )
    overlap = data.get("overlap")
    problems = [*data["problems"], *overlap_problems(overlap)]
    if problems:
        return Verdict("data", "FAIL", "; ".join(problems), data)
    return Verdict("data", "pass", f"{shapes}; {timing}{overlap_text(overlap)}", data)


def overlap_problems(overlap: dict[str, Any] | None) -> list[str]:
    """The train/val overlap as a data problem, with its counts; none when no sample repeats."""
    if not overlap or not overlap.get("repeats"):
        return []
    n, of = overlap["repeats"], overlap["checked"]
    return [f"train/val overlap: {n} of {of} validation samples are training samples (e.g. val index "
            f"{', '.join(map(str, overlap['examples']))})"]  # fmt: skip


def overlap_text(overlap: dict[str, Any] | None) -> str:
    """The overlap check's finding on a passing data row."""
    if overlap is None:
        return ""
    if overlap.get("checkable") is False:
        return f"; train/val overlap not checkable ({overlap['why']})"
    return f"; no validation sample of {overlap['checked']} is a training sample"


def shapes_verdict(seen: Observations) -> Verdict:
    """Parameter count and bytes per dtype; the module/output-shape table goes to the details."""
    by_dtype: dict[str, int] = {}
    for _, dtype, n, _ in seen.params:
        key = str(dtype).replace("torch.", "")
        by_dtype[key] = by_dtype.get(key, 0) + n * _itemsize(dtype)
    total = sum(n for _, _, n, _ in seen.params)
    trainable = sum(n for _, _, n, grad in seen.params if grad)
    sizes = ", ".join(f"{k} {_bytes(v)}" for k, v in by_dtype.items())
    last = seen.shapes[-1] if seen.shapes else None
    out = f"; last output {last[0]} {last[1]}" if last else ""
    details = {"modules": [list(r) for r in seen.shapes], "bytes_per_dtype": by_dtype}
    summary = f"{total:,} parameters ({trainable:,} trainable; {sizes}){out}"
    return Verdict(
        "shapes", "pass" if seen.shapes else "FAIL", summary if seen.shapes else "no forward ran", details
    )


def grads_verdict(seen: Observations) -> Verdict:
    """Every trainable parameter has a finite, non-zero gradient after the first backward."""
    if not seen.grads:
        return Verdict("grads", "FAIL", "no optimizer step was reached: no gradients to inspect")
    none = [n for n, g in seen.grads.items() if g is None]
    bad = [n for n, g in seen.grads.items() if g is not None and not math.isfinite(g)]
    zero = [n for n, g in seen.grads.items() if g == 0.0]
    blocks: dict[str, float] = {}
    for name, g in seen.grads.items():
        if g is not None and math.isfinite(g):
            blocks[block_of(name)] = math.hypot(blocks.get(block_of(name), 0.0), g)
    details = {"no_grad": none, "nonfinite": bad, "zero": zero, "block_norms": blocks}
    problems = [
        f"no gradient (unused in the loss, or detached): {_names(none)}" if none else "",
        f"non-finite gradient: {_names(bad)}" if bad else "",
        f"zero gradient in each of the first {GRAD_STEPS} steps: {_names(zero)}" if zero else "",
    ]
    problems = [p for p in problems if p]
    if problems:
        return Verdict("grads", "FAIL", "; ".join(problems), details)
    lo, hi = min(blocks.items(), key=lambda kv: kv[1]), max(blocks.items(), key=lambda kv: kv[1])
    summary = (
        f"{len(seen.grads)} trainable tensors: finite, non-zero gradients; block norms "
        f"{lo[1]:.2g} ({lo[0]}) .. {hi[1]:.2g} ({hi[0]})"
    )
    return Verdict("grads", "pass", summary, details)


def learns_verdict(seen: Observations, fam: str | None) -> Verdict:
    """The loss on one fixed batch falls below the family's fraction of its first value."""
    losses = seen.losses
    details = {"losses": losses, "fraction": learn_fraction(fam)}
    if fam == "gan":
        return Verdict("learns", "skip", "adversarial losses need not fall (GAN)", details)
    if len(losses) < 2:
        return Verdict("learns", "FAIL", f"only {len(losses)} step(s) ran", details)
    first, last = losses[0], losses[-1]
    curve = f"{sparkline(losses)} {first:.3g} -> {last:.3g} in {len(losses)} steps"
    if not all(math.isfinite(x) for x in losses):
        return Verdict("learns", "FAIL", f"the loss went non-finite at step {_first_bad(losses)}", details)
    fraction = learn_fraction(fam)
    target = first * fraction
    if last < target:
        return Verdict("learns", "pass", f"{curve} (< {fraction:g} x start)", details)
    why = "a learning rate of 0, a frozen or detached model, or a loss that ignores the output"
    summary = f"{curve}: did not fall below {fraction:g} x start = {target:.3g} on one fixed batch ({why})"
    return Verdict("learns", "FAIL", summary, details)


def nan_verdict(seen: Observations) -> Verdict:
    """Names the first module whose forward output went non-finite, and the backward node of a NaN."""
    found, anomaly = seen.nonfinite, seen.anomaly
    details = {"forward": found, "backward": anomaly}
    if found is None and anomaly is None:
        if seen.losses and not all(math.isfinite(x) for x in seen.losses):
            return Verdict("nan", "FAIL", "the loss went non-finite; no module output did", details)
        return Verdict("nan", "pass", "every module output and the first backward stayed finite", details)
    parts = []
    if found is not None:
        ins = "; ".join(_stat(s) for s in found["inputs"]) or "none"
        parts.append(
            f"step {found['step']}: {found['module']} ({found['type']}) output non-finite; input {ins}"
        )
    if anomaly:
        parts.append(f"backward: {anomaly}")
    return Verdict("nan", "FAIL", " | ".join(parts), details)


def speed_verdict(seen: Observations, data: dict[str, Any] | None) -> Verdict:
    """Median time of each phase, peak memory, the costliest profiled operators (informational)."""
    if not seen.phases:
        return Verdict("speed", "skip", f"fewer than {WARMUP_STEPS + 1} steps ran")
    med = {k: statistics.median(v) * 1e3 for k, v in seen.phases.items()}
    if data and len(data["seconds"]) > 1:
        med = {"data": statistics.median(data["seconds"][1:]) * 1e3, **med}
    split = ", ".join(f"{k} {v:.1f}" for k, v in med.items())
    peak = f"; peak {_bytes(seen.peak_bytes)}" if seen.peak_bytes else ""
    if seen.peak_bytes and not seen.cuda:
        peak += " (process)"
    if seen.planned_bytes:
        peak += f", plan {_bytes(seen.planned_bytes)}"
    top = f"; top op {seen.top_ops[0][0]}" if seen.top_ops else ""
    details = {"ms": med, "peak_bytes": seen.peak_bytes, "planned_bytes": seen.planned_bytes}
    details["top_ops"] = seen.top_ops
    return Verdict("speed", "pass", f"ms/step: {split}{peak}{top}", details)


def sparkline(values: list[float], width: int = 24) -> str:
    """The values as a line of block characters, resampled to at most `width`."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return ""
    step = max(len(values) / width, 1.0)
    picks = [values[min(int(i * step), len(values) - 1)] for i in range(min(width, len(values)))]
    lo, hi = min(finite), max(finite)
    span = (hi - lo) or 1.0
    return "".join(SPARK[round((v - lo) / span * 7)] if math.isfinite(v) else "!" for v in picks)


def _tensor_text(row: dict[str, Any]) -> str:
    """`batch[0] 8x1x16x16 float32 [-0.42, 2.8]`; integers: `[0, 9], 7 distinct, most common 3 (2x)`."""
    text = f"{row['name']} {'x'.join(map(str, row['shape']))} {row['dtype']}"
    if "min" in row:
        text += f" [{row['min']:.3g}, {row['max']:.3g}]"
    if row.get("most_common"):
        value, count = row["most_common"][0]
        text += f", {row['distinct']} distinct, most common {value} ({count}x)"
    return text


def _names(names: list[str], shown: int = 4) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _stat(s: dict[str, Any]) -> str:
    shape = "x".join(map(str, s["shape"]))
    if "min" not in s:
        return f"{shape} all non-finite"
    return (
        f"{shape} min {s['min']:.3g} max {s['max']:.3g} mean {s['mean']:.3g}, {s.get('nonfinite', 0)} NaN/Inf"
    )


def _first_bad(losses: list[float]) -> int:
    return next(i for i, x in enumerate(losses) if not math.isfinite(x))


def _itemsize(dtype: Any) -> int:
    return dtype.itemsize


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
