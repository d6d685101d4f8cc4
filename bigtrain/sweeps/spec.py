"""What a sweep varies: `--grid KEY=V1,V2,...` axes (or `KEY=loguniform:LO:HI` ranges with `--random N`),
expanded to points, each a dict {config key: value as typed}."""

from __future__ import annotations

import itertools
import math
import random
import re
from dataclasses import dataclass

from bigtrain.errors import UserError

# A config key as `bigtrain fit` takes it: dotted identifiers, e.g. model.optim.lr or seed_everything.
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_RANGE = re.compile(r"(loguniform|uniform|int):([^:]+):([^:]+)")
# Keys that say where a run lives or what it resumes: the sweep sets them itself.
RESERVED = ("run_dir", "ckpt_path", "recipe_name", "config", "print_config", "recipe")
DISTRIBUTIONS = ("loguniform", "uniform", "int")


@dataclass(frozen=True)
class Axis:
    """One swept key: a list of values, or a range (`kind`, low, high) drawn from with `--random`."""

    key: str
    values: tuple[str, ...] = ()
    kind: str | None = None
    low: float = 0.0
    high: float = 0.0


def _check_value(spec: str, value: str) -> None:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise UserError(f"--grid {spec!r} contains a control character (newline, tab, ...); not allowed")
    if not value or value != value.strip():
        raise UserError(f"--grid {spec!r}: empty value or one with spaces around it")


def _range(spec: str, key: str, match: re.Match[str]) -> Axis:
    kind, low_text, high_text = match.groups()
    try:
        low, high = float(low_text), float(high_text)
    except ValueError:
        raise UserError(
            f"--grid {spec!r}: {kind} bounds must be numbers, e.g. {key}={kind}:1e-4:1e-2"
        ) from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise UserError(f"--grid {spec!r}: the range needs finite bounds with LOW < HIGH")
    if kind == "loguniform" and low <= 0:
        raise UserError(f"--grid {spec!r}: loguniform needs LOW > 0")
    if kind == "int" and not (low.is_integer() and high.is_integer()):
        raise UserError(f"--grid {spec!r}: int needs whole-number bounds")
    return Axis(key, kind=kind, low=low, high=high)


def parse_axis(spec: str) -> Axis:
    """`KEY=V1,V2,...` or `KEY=loguniform|uniform|int:LO:HI` -> Axis; one line for anything malformed."""
    key, sep, rest = spec.partition("=")
    if not sep:
        raise UserError(f"--grid {spec!r} is not KEY=V1,V2,... (e.g. model.optim.lr=1e-3,3e-4)")
    if not _KEY.fullmatch(key):
        raise UserError(f"--grid {spec!r}: {key!r} is not a config key (dotted names, e.g. model.optim.lr)")
    if key in RESERVED:
        raise UserError(f"--grid {spec!r}: {key} is set by the sweep for each point; it cannot be swept")
    match = _RANGE.fullmatch(rest)
    if match:
        return _range(spec, key, match)
    values = tuple(rest.split(","))
    for value in values:
        _check_value(spec, value)
    if len(set(values)) != len(values):
        raise UserError(f"--grid {spec!r} names a value twice")
    return Axis(key, values=values)


def parse_axes(specs: list[str]) -> list[Axis]:
    """Every `--grid` option, in order; a key given twice is refused."""
    axes = [parse_axis(spec) for spec in specs]
    keys = [axis.key for axis in axes]
    for key in keys:
        if keys.count(key) > 1:
            raise UserError(f"--grid {key} is given twice; give its values in one --grid {key}=V1,V2")
    return axes


def _draw(axis: Axis, rng: random.Random) -> str:
    if axis.values:
        return rng.choice(axis.values)
    if axis.kind == "int":
        return str(rng.randint(int(axis.low), int(axis.high)))
    if axis.kind == "loguniform":
        value = math.exp(rng.uniform(math.log(axis.low), math.log(axis.high)))
    else:
        value = rng.uniform(axis.low, axis.high)
    return f"{value:.4g}"  # four digits: readable in run tables, and well within any useful precision


def expand(axes: list[Axis], random_points: int | None = None, seed: int = 0) -> list[dict[str, str]]:
    """The sweep's points: every combination of the axes' values, or `random_points` draws (seeded)."""
    if not axes:
        raise UserError("a sweep needs at least one --grid KEY=V1,V2,...")
    if random_points is None:
        ranged = [axis.key for axis in axes if axis.kind]
        if ranged:
            raise UserError(f"--grid {ranged[0]} is a range: draw from it with --random N (and --seed S)")
        combos = itertools.product(*(axis.values for axis in axes))
        return [dict(zip([axis.key for axis in axes], combo, strict=True)) for combo in combos]
    if random_points < 1:
        raise UserError(f"--random must be at least 1, got {random_points}")
    rng = random.Random(seed)
    return [{axis.key: _draw(axis, rng) for axis in axes} for _ in range(random_points)]


def point_args(values: dict[str, str]) -> list[str]:
    """The point's `bigtrain fit` options: `--KEY=VALUE` each, one argv word (no shell ever sees them)."""
    return [f"--{key}={value}" for key, value in values.items()]
