"""`bigtrain checkpoint export`: one consolidated file from a run, a Lightning checkpoint or a sharded one."""

from __future__ import annotations

from bigtrain.commands.args import OneLineParser


def _parser() -> OneLineParser:
    parser = OneLineParser(prog="bigtrain checkpoint", description="Checkpoint utilities.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    exp = sub.add_parser("export", help="one consolidated file from a run or a (sharded) checkpoint")
    exp.add_argument(
        "source", help="a run directory (its newest checkpoint), a .ckpt file or a sharded folder"
    )
    exp.add_argument(
        "out", help="output: NAME.safetensors, NAME.pt (torch.save of tensors), or with --full .ckpt"
    )
    exp.add_argument(
        "--full",
        action="store_true",
        help="a consolidated Lightning checkpoint (weights, optimizer, loops): resumes under any strategy",
    )
    exp.add_argument("--module", action="store_true", help="keep the LightningModule's keys ('net.' prefix)")
    exp.add_argument(
        "--strict", action="store_true", help="fail (exit 2) unless the keys and shapes match the run's model"
    )
    exp.add_argument("--config", help="config YAML or recipe of the model for --strict (default: the run's)")
    exp.add_argument("--force", action="store_true", help="replace OUT if it exists (never a checkpoint)")
    return parser


def main(argv: list[str]) -> int:
    """`bigtrain checkpoint export RUN_OR_CKPT OUT [--full] [--module] [--strict [--config FILE]]`."""
    args = _parser().parse_args(argv)
    from bigtrain.checkpoints.export import export

    export(
        args.source,
        args.out,
        full=args.full,
        module_keys=args.module,
        strict=args.strict,
        config=args.config,
        force=args.force,
    )
    return 0
