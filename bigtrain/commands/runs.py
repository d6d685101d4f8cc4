"""`bigtrain runs [DIR]`: the runs under a folder; `bigtrain runs compare A B ...|--sweep DIR`: what differs
between runs, next to their final metrics, the best one marked."""

from __future__ import annotations

from pathlib import Path

from bigtrain.commands.args import OneLineParser
from bigtrain.errors import UserError
from bigtrain.run_names import run_name

STATES = ("running", "finished", "failed", "preempted")
SORT_FIELDS = ("recipe", "state", "steps", "wall", "path")


def list_parser() -> OneLineParser:
    """Options of `bigtrain runs`."""
    p = OneLineParser(
        prog="bigtrain runs",
        usage="bigtrain runs [DIR] [--recipe NAME] [--sweep DIR] [--state S] [--sort KEY] [--json]\n"
        "       bigtrain runs compare RUN [RUN ...] | --sweep DIR [--metric M] [--csv FILE] [--json]",
        description="List the runs under DIR (default ./runs).",
    )
    p.add_argument("dir", nargs="?", default="runs", help="folder to search (default ./runs)")
    p.add_argument("--recipe", help="only runs of this recipe")
    p.add_argument("--sweep", help="only the points of this sweep directory")
    p.add_argument("--state", choices=STATES, help="only runs in this state")
    p.add_argument(
        "--sort", metavar="KEY", help=f"a metric such as val/loss, or one of {', '.join(SORT_FIELDS)}"
    )
    p.add_argument("--desc", action="store_true", help="sort from the highest value")
    p.add_argument("--json", action="store_true", help="print JSON (every metric) instead of a table")
    return p


def compare_parser() -> OneLineParser:
    """Options of `bigtrain runs compare`."""
    p = OneLineParser(
        prog="bigtrain runs compare",
        description="Show the config keys that differ between runs next to their final metrics.",
    )
    p.add_argument("runs", nargs="*", help="run directories")
    p.add_argument("--sweep", help="compare the points of this sweep directory")
    p.add_argument(
        "--metric", default="val/loss", help="the metric that picks the best run (default val/loss)"
    )
    p.add_argument(
        "--mode", choices=("min", "max"), default="min", help="best is the lowest (min) or highest"
    )
    p.add_argument("--csv", metavar="FILE", help="also write the table as CSV")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def _folder(text: str, option: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_dir():
        raise UserError(f"{option} {text!r} is not a folder")
    return path.absolute()


def list_runs(argv: list[str]) -> int:
    """`bigtrain runs [DIR] ...`."""
    from bigtrain.sweeps import table
    from bigtrain.sweeps.runs import find_runs, read_runs

    args = list_parser().parse_args(argv)
    sweep = _folder(args.sweep, "--sweep") if args.sweep else None
    root = sweep or _folder(args.dir, "runs directory")
    runs = read_runs(find_runs(root))
    if args.recipe:
        runs = [r for r in runs if r.recipe == run_name(args.recipe)]
    if sweep is not None:
        runs = [r for r in runs if r.sweep == sweep]
    if args.state:
        runs = [r for r in runs if r.state == args.state]
    if args.json:
        table.show([r.as_json() for r in table.sort_runs(runs, args.sort, args.desc)], as_json=True)
        return 0
    metric = args.sort if args.sort and args.sort not in SORT_FIELDS else None
    table.show(table.list_rows(table.sort_runs(runs, args.sort, args.desc), metric), as_json=False)
    return 0


def compare(argv: list[str]) -> int:
    """`bigtrain runs compare ...`."""
    from bigtrain.sweeps import table
    from bigtrain.sweeps.runs import RUN_FILES, find_runs, read_runs

    args = compare_parser().parse_args(argv)
    if bool(args.runs) == bool(args.sweep):
        raise UserError("bigtrain runs compare takes run directories or --sweep DIR (one of the two)")
    if args.sweep:
        sweep = _folder(args.sweep, "--sweep")
        paths = [p for p in find_runs(sweep) if p.parent == sweep]
        if not paths:
            raise UserError(f"--sweep {args.sweep!r} holds no runs (point-NNN folders with config.yaml)")
    else:
        paths = [_folder(text, "run") for text in args.runs]
        for path in paths:
            if not any((path / name).exists() for name in RUN_FILES):
                raise UserError(f"{str(path)!r} is not a run directory (no config.yaml or metrics.json)")
    runs = read_runs(paths)
    rows = table.compare_rows(runs, args.metric, args.mode)
    if table.best_run(runs, args.metric, args.mode) is None:
        raise UserError(f"no run has the metric {args.metric!r}; choose one with --metric")
    if args.csv:
        table.write_csv(Path(args.csv), rows)
    table.show(rows, as_json=args.json, title=f"best: {args.mode} {args.metric}")
    return 0


def main(argv: list[str]) -> int:
    """`bigtrain runs ...` or `bigtrain runs compare ...`."""
    if argv and argv[0] == "compare":
        return compare(argv[1:])
    return list_runs(argv)
