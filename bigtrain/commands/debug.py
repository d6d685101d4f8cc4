"""`bigtrain debug RECIPE|--config FILE [overrides]`: the recipe shrunk to one device, checked, reported."""

from __future__ import annotations

import re

from bigtrain.commands.args import OneLineParser
from bigtrain.errors import UserError

ONE_PROCESS = ("trainer.strategy", "trainer.devices", "trainer.num_nodes")
"""Settings the shrink owns: a debug run is one process on one device."""
CHECK_NAMES = ("data", "shapes", "grads", "learns", "nan", "speed")
DESCRIPTION = (
    "Run a recipe's own module, DataModule and strategy classes shrunk to one process on the first GPU or "
    "the CPU (strategy single, one device, a global batch of 8, a few steps on one fixed batch), and check "
    "the data, shapes, gradient flow, that it learns, where a NaN starts, and the time per phase. Exit 0: "
    "all checks pass; 1: a check found a problem; 2: a mistake on the command line. Any other option is a "
    "recipe override, e.g. --model.optim.lr 0.01. With --from RUN_DIR [--step K] [--rank R]: load the run's "
    "checkpoint at or before step K (older than K: first train the steps in between on one device, as the "
    "run did), rebuild the batch rank R took at step K+1, and run that one step on one device with the NaN "
    "and gradient checks."
)


def _parser() -> OneLineParser:
    parser = OneLineParser(
        prog="bigtrain debug",
        usage="bigtrain debug RECIPE|--config FILE [options] [recipe overrides]\n"
        "       bigtrain debug --from RUN_DIR [--step K] [--rank R] [--no-catch-up | --catch-up-max N]",
        description=DESCRIPTION,
    )
    parser.add_argument("--config", help="a config YAML (a run's config.yaml) instead of a recipe name")
    parser.add_argument("--tiny", action="store_true", help="the family's smallest preset, built-in data")
    parser.add_argument(
        "--keep-size", action="store_true", help="keep the model and one device's share of the batch"
    )
    parser.add_argument(
        "--checks", default=",".join(CHECK_NAMES), help=f"comma-separated subset of {','.join(CHECK_NAMES)}"
    )
    parser.add_argument("--steps", type=int, default=50, help="steps on the fixed batch (default 50)")
    parser.add_argument("--trace", action="store_true", help="write a Chrome trace to RUN_DIR/trace.json")
    parser.add_argument("--details", action="store_true", help="also print module shapes, block norms, ops")
    parser.add_argument(
        "--simulate",
        metavar="DPxTP",
        help="instead of the checks, apply the recipe's FSDP sharding plan over DP data-parallel x TP "
        "tensor-parallel fake ranks in this process (e.g. 8 or 4x2) and check the shards, forward, backward",
    )
    parser.add_argument(
        "--from", dest="from_run", metavar="RUN_DIR",
        help="replay one step of a `bigtrain fit` run on one device (its checkpoint, its rank's batch)",
    )  # fmt: skip
    parser.add_argument(
        "--step", type=int, help="with --from: replay step K+1 (default: after the newest checkpoint)"
    )
    parser.add_argument("--rank", type=int, help="with --from: the rank whose batch to replay (default 0)")
    parser.add_argument(
        "--global-batch", action="store_true",
        help="with --from: replay every rank's share of the step together (BatchNorm then sees the run's "
        "statistics; the whole global batch must fit on this device)",
    )  # fmt: skip
    parser.add_argument(
        "--no-catch-up", action="store_true",
        help="with --from: when the checkpoint is older than step K, replay on its weights instead of "
        "first training the steps in between on this device",
    )  # fmt: skip
    parser.add_argument(
        "--catch-up-max", type=int, metavar="N",
        help="with --from: train at most N steps to catch up (default 10,000)",
    )  # fmt: skip
    return parser


MAX_SIMULATED_RANKS = 65536
"""More fake ranks than any cluster job runs: a larger count is a typing slip."""


def parse_layout(text: str) -> tuple[int, int]:
    """(data-parallel, tensor-parallel) ranks of `--simulate DP` or `--simulate DPxTP`."""
    match = re.fullmatch(r"([1-9][0-9]{0,5})(?:x([1-9][0-9]{0,5}))?", text)
    if match is None:
        raise UserError(
            f"--simulate: {text!r} is not a layout DP or DPxTP (data-parallel x tensor-parallel ranks, each "
            ">= 1), e.g. 8 or 4x2"
        )
    dp, tp = int(match[1]), int(match[2] or 1)
    if dp * tp == 1:
        raise UserError(
            f"--simulate: {text!r} is one rank, where FSDP shards nothing; simulate 2 or more ranks, or drop "
            "--simulate to check the recipe on one device"
        )
    if dp * tp > MAX_SIMULATED_RANKS:
        raise UserError(f"--simulate: {text!r} is {dp * tp} ranks; simulate at most {MAX_SIMULATED_RANKS}")
    return dp, tp


def _replay_args(recipe: str | None, args: object, overrides: list[str]) -> None:
    """Vet `--from RUN_DIR [--step K] [--rank R]`: the run's own config decides everything else."""
    if args.from_run is None:
        for name in ("step", "rank", "global_batch", "no_catch_up", "catch_up_max"):
            if getattr(args, name) not in (None, False):
                flag = name.replace("_", "-")
                raise UserError(f"--{flag} needs --from RUN_DIR (the run whose step to replay)")
        return
    given = [f"{recipe!r}"] if recipe else []
    own_run = ("config", "tiny", "keep_size", "trace", "simulate")
    given += [f"--{n.replace('_', '-')}" for n in own_run if getattr(args, n)]
    given += overrides[:1]
    if given:
        raise UserError(
            f"--from replays a run as its config.yaml says: leave out {', '.join(given)} (and any override)"
        )
    if args.no_catch_up and args.catch_up_max is not None:
        raise UserError("--no-catch-up and --catch-up-max contradict each other: give one")
    for name in ("step", "rank", "catch_up_max"):
        value = getattr(args, name)
        if value is not None and value < 0:
            raise UserError(f"--{name.replace('_', '-')} must be >= 0, got {value!r}")


def parse(argv: list[str]) -> tuple[list[str], object, list[str]]:
    """(the recipe's config arguments, the debug options, the recipe overrides) of a command line."""
    recipe = argv[0] if argv and not argv[0].startswith("-") else None
    args, overrides = _parser().parse_known_args(argv[1:] if recipe else argv)
    _replay_args(recipe, args, overrides)
    if args.from_run is not None:
        return [], args, []
    if (recipe is None) == (args.config is None):
        raise UserError("bigtrain debug needs a recipe name or --config FILE (one of them)")
    if args.tiny and args.keep_size:
        raise UserError("--tiny and --keep-size contradict each other: give one")
    if args.steps < 1:
        raise UserError(f"--steps must be >= 1, got {args.steps!r}")
    for arg in overrides:
        key = arg[2:].split("=", 1)[0] if arg.startswith("--") else ""
        if key in ONE_PROCESS or key.startswith("trainer.strategy."):
            raise UserError(
                f"bigtrain debug runs one process on one device: leave out --{key} (bigtrain fit runs a "
                "recipe on several)"
            )
    checks = tuple(c.strip() for c in args.checks.split(",") if c.strip())
    for name in checks:
        if not re.fullmatch(r"[a-z]+", name) or name not in CHECK_NAMES:
            raise UserError(f"--checks: unknown check {name!r}; choose from {', '.join(CHECK_NAMES)}")
    if not checks:
        raise UserError(f"--checks needs at least one of {', '.join(CHECK_NAMES)}")
    args.checks = tuple(c for c in CHECK_NAMES if c in checks)
    args.layout = parse_layout(args.simulate) if args.simulate is not None else None
    if args.layout and (args.trace or args.checks != CHECK_NAMES):
        raise UserError(
            "--simulate runs the layout checks instead of the one-device ones: leave out --checks and --trace"
        )
    from bigtrain.plan.inputs import recipe_args

    source = recipe_args(recipe) if recipe else ["--config", args.config]
    return source, args, overrides


def main(argv: list[str]) -> int:
    """Run `bigtrain debug`; the exit status is 0 when every check passed, 1 when one failed."""
    if any(a in ("-h", "--help") for a in argv):
        _parser().print_help()
        return 0
    source, args, overrides = parse(argv)
    if args.from_run is not None:
        from bigtrain.debug import run_replay

        options = {"details": args.details, "global_batch": args.global_batch}
        if args.no_catch_up or args.catch_up_max is not None:
            options["catch_up_max"] = None if args.no_catch_up else args.catch_up_max
        return run_replay(args.from_run, args.step, args.rank or 0, **options)
    from bigtrain.debug import run

    return run(source, args, overrides)
