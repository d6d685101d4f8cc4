"""`bigtrain sweep RECIPE --grid KEY=V1,V2 ... [overrides]`: one `bigtrain fit` run per point, under one
sweep directory that records them in sweep.yaml; run it again to resume."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bigtrain.commands.args import OneLineParser
from bigtrain.errors import UserError
from bigtrain.run_names import fresh_run_dir
from bigtrain.sweeps.options import add_grid_options, build_sweep

USAGE_TAIL = (
    "Other options are `bigtrain fit` overrides given to every point, e.g. --trainer.max_steps 100. "
    "Run the same command again (or `bigtrain sweep --sweep-dir DIR`) to resume: finished points are skipped "
    "and unfinished ones resume from their newest checkpoint."
)


def parser() -> OneLineParser:
    """Options of `bigtrain sweep`; unknown options are `bigtrain fit` overrides."""
    p = OneLineParser(
        prog="bigtrain sweep",
        usage="bigtrain sweep RECIPE --grid KEY=V1,V2 [--grid ...] [options] [overrides]",
        description="Run a recipe once per point of a grid (or random draws).",
        epilog=USAGE_TAIL,
    )
    p.add_argument("--recipe", help="recipe name or YAML file (or give it first, without --recipe)")
    add_grid_options(p)
    p.add_argument(
        "--sweep-dir", help="where the points' run directories go (default runs/<recipe>/sweep-<time>)"
    )
    p.add_argument("--parallel", type=int, default=1, metavar="K", help="run K points at once (default 1)")
    p.add_argument("--dry-run", action="store_true", help="print the points, run nothing")
    return p


def split_recipe(argv: list[str]) -> tuple[str | None, list[str]]:
    """A leading positional RECIPE, taken off before parsing (argparse would take an override's value)."""
    if argv and not argv[0].startswith("-"):
        return argv[0], argv[1:]
    return None, argv


def check_points(sweep_dir: Path, sweep: dict[str, Any]) -> None:
    """Resolve every point's config as `bigtrain fit` would, so a wrong key or value is one line now and
    not a failure in each run."""
    from bigtrain.commands.submit import resolve_run_config
    from bigtrain.sweeps.local import finished
    from bigtrain.sweeps.spec import point_args

    for point in sweep["points"]:
        if finished(sweep_dir, point):
            continue  # skipped anyway
        resolve_run_config(sweep["recipe"], [*sweep["overrides"], *point_args(point["values"])])


def main(argv: list[str]) -> int:
    """`bigtrain sweep ...`."""
    from bigtrain.sweeps.state import read_sweep, reuse_or_create

    recipe, rest = split_recipe(argv)
    args, overrides = parser().parse_known_args(rest)
    recipe = recipe or args.recipe
    if args.parallel < 1:
        raise UserError(f"--parallel must be at least 1, got {args.parallel}")
    sweep_dir = Path(args.sweep_dir).expanduser().absolute() if args.sweep_dir else None
    if recipe is None and not args.grid and sweep_dir is not None and (stored := read_sweep(sweep_dir)):
        sweep = stored  # `bigtrain sweep --sweep-dir DIR`: resume what it records
        if overrides:  # they would change the points half-way: refuse rather than ignore them
            raise UserError(
                f"resuming {sweep_dir} takes no overrides ({' '.join(overrides)}); it uses sweep.yaml's"
            )
    elif recipe is None:
        raise UserError("bigtrain sweep needs a RECIPE (or --sweep-dir DIR of a sweep to resume)")
    else:
        sweep = build_sweep(recipe, overrides, args)
    if sweep_dir is None:
        sweep_dir = fresh_run_dir(sweep["recipe"], f"sweep-{time.strftime('%Y%m%d-%H%M%S')}").absolute()
    if any(ord(c) < 32 or ord(c) == 127 for c in str(sweep_dir)):
        raise UserError(f"--sweep-dir {str(sweep_dir)!r} contains a control character (newline, tab, ...)")
    sweep = reuse_or_create(sweep_dir, sweep)
    if args.dry_run:
        for point in sweep["points"]:
            values = " ".join(f"{k}={v}" for k, v in point["values"].items())
            print(f"{sweep_dir / point['dir']}  {values}")
        return 0
    return run(sweep_dir, sweep, args.parallel)


def run(sweep_dir: Path, sweep: dict[str, Any], parallel: int) -> int:
    """Check the points, hold the sweep directory, run the points; 0 when every point finished."""
    from bigtrain.run_lock import acquire
    from bigtrain.sweeps.local import run_local
    from bigtrain.sweeps.state import write_sweep

    check_points(sweep_dir, sweep)
    acquire(sweep_dir)  # two `bigtrain sweep` on one directory would run each point twice
    write_sweep(sweep_dir, sweep)
    print(f"sweep directory: {sweep_dir} ({len(sweep['points'])} points)", flush=True)
    failed = run_local(sweep_dir, sweep, parallel)
    print(f"compare: bigtrain runs compare --sweep {sweep_dir}")
    if failed:
        names = ", ".join(p["name"] for p in failed)
        print(
            f"{len(failed)} of {len(sweep['points'])} points did not finish: {names}; run the same command "
            "again to resume them"
        )
        return 1
    return 0
