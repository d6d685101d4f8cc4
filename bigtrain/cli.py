"""The `bigtrain` command: Lightning's fit/validate/test/predict through LightningCLI, plus utilities.

This module wires; it does not compute. Torch and Lightning are imported only by the commands that need them,
so `bigtrain --help` and `bigtrain recipes list` answer at once.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from bigtrain import __version__
from bigtrain.errors import UserError

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")

HELP = f"""\
usage: bigtrain <command> [options]

bigtrain {__version__}: train CNN, RNN, Transformer, Autoencoder and GAN models from YAML recipes,
on one CPU or GPU, with DDP, or sharded with FSDP across cluster nodes.

training (LightningCLI; any config key can be overridden, e.g. --trainer.max_steps 50):
  fit        train:                     bigtrain fit --recipe cnn/glyphs
  validate   evaluate on the val split: bigtrain validate --recipe cnn/glyphs --ckpt_path CKPT
  test       evaluate on the test split
  predict    run the model's predict step
  options: --recipe NAME | --config FILE, --run_dir DIR, --ckpt_path PATH|auto, --print_config, --help

utilities:
  recipes    list | show NAME | copy NAME DEST
  submit     slurm | torchrun: run a recipe on a cluster
  jobs       this user's bigtrain cluster jobs
  plan       RECIPE [--nodes N --devices-per-node G --device-memory 80GB]: memory per device, per strategy
  checkpoint export RUN_OR_CKPT OUT[.safetensors] [--full]: one consolidated file from a (sharded) checkpoint
  verify-resume RECIPE [--steps N --stop-at K] [overrides]: is a run stopped mid-epoch and resumed exact?

bigtrain <command> --help shows a command's options.
"""


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `bigtrain` command."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        code = dispatch(argv)
    except UserError as err:
        print(f"bigtrain: error: {err}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("bigtrain: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)


def dispatch(argv: list[str]) -> int:
    """Run the command named by argv[0]; return its exit status."""
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(HELP, end="")
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"bigtrain {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command in LIGHTNING_COMMANDS:
        from bigtrain.lightning_cli import run

        return run(command, rest)
    utilities = _utilities()
    if command in utilities:
        return utilities[command](rest)
    from bigtrain.errors import unknown

    raise unknown("command", command, [*LIGHTNING_COMMANDS, *utilities])


def _utilities() -> dict[str, Callable[[list[str]], int]]:
    def recipes(argv: list[str]) -> int:
        from bigtrain.recipes import main as recipes_main

        return recipes_main(argv)

    def submit(argv: list[str]) -> int:
        from bigtrain.cluster.submit import main as submit_main

        return submit_main(argv)

    def jobs(argv: list[str]) -> int:
        from bigtrain.cluster.jobs import main as jobs_main

        return jobs_main(argv)

    def plan(argv: list[str]) -> int:
        from bigtrain.plan import main as plan_main

        return plan_main(argv)

    def checkpoint(argv: list[str]) -> int:
        from bigtrain.consolidate import main as checkpoint_main

        return checkpoint_main(argv)

    def verify_resume(argv: list[str]) -> int:
        from bigtrain.verify_resume import main as verify_resume_main

        return verify_resume_main(argv)

    return {
        "recipes": recipes,
        "submit": submit,
        "jobs": jobs,
        "plan": plan,
        "checkpoint": checkpoint,
        "verify-resume": verify_resume,
    }


def resolve_config(subcommand: str, args: list[str]) -> dict:
    """The resolved config of `bigtrain <subcommand> <args>` as a plain dict (what --print_config prints)."""
    from bigtrain.lightning_cli import resolve

    return resolve(subcommand, args)


if __name__ == "__main__":
    main(os.sys.argv[1:])
