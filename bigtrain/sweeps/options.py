"""The options that say what a sweep varies (`bigtrain sweep`, `bigtrain submit slurm --sweep`)."""

from __future__ import annotations

import argparse
from typing import Any

from bigtrain.sweeps.spec import expand, parse_axes
from bigtrain.sweeps.state import new_sweep


def add_grid_options(parser: argparse.ArgumentParser) -> None:
    """The options that say what a sweep varies (shared with `bigtrain submit slurm --sweep`)."""
    parser.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="a config key and its values (repeatable; all combinations), "
        "or KEY=loguniform|uniform|int:LO:HI with --random",
    )
    parser.add_argument(
        "--random", type=int, metavar="N", help="draw N random points instead of the full grid"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the --random draws (default 0)")


def build_sweep(recipe: str, overrides: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """A fresh sweep record from the command line (the points' values are checked for form)."""
    points = expand(parse_axes(args.grid), args.random, args.seed)
    return new_sweep(recipe, overrides, points)
