"""The `bigtrain` command: Lightning's fit/validate/test/predict through LightningCLI, plus utilities.

This module dispatches; it does not compute, and nothing imports it. Each utility is a module of
`bigtrain.commands`. Torch and Lightning are imported only by the commands that need them,
so `bigtrain --help` and `bigtrain recipes list` answer at once.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

from bigtrain import __version__
from bigtrain.errors import UserError, unknown

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
# Imported only when run: a command's imports (torch, Lightning) must not slow down the others.
UTILITIES = {
    "recipes": "bigtrain.commands.recipes:main",
    "submit": "bigtrain.commands.submit:main",
    "jobs": "bigtrain.commands.jobs:main",
    "plan": "bigtrain.commands.plan:main",
    "checkpoint": "bigtrain.commands.checkpoint:main",
    "verify-resume": "bigtrain.commands.verify_resume:main",
    "debug": "bigtrain.commands.debug:main",
    "sweep": "bigtrain.commands.sweep:main",
    "runs": "bigtrain.commands.runs:main",
}

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
  recipes    list | show NAME | copy NAME DEST | new NAME --from BASE | check RECIPE | diff A B
  submit     slurm | torchrun: run a recipe on a cluster
  jobs       this user's bigtrain cluster jobs
  plan       RECIPE [--nodes N --devices-per-node G --device-memory 80GB]: memory per device, per strategy
  checkpoint export RUN_OR_CKPT OUT[.safetensors] [--full]: one consolidated file from a (sharded) checkpoint
  debug      RECIPE [--tiny --checks data,grads,...] [overrides]: shrink to one device, check, report
  verify-resume RECIPE [--steps N --stop-at K] [overrides]: is a run stopped mid-epoch and resumed exact?
  sweep      RECIPE --grid KEY=V1,V2 [--grid ...] [--parallel K] [overrides]: one run per point, resumable
  runs       [DIR] [--sort val/loss] | compare RUN ... | compare --sweep DIR: find and compare runs

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
        from bigtrain.early_checks import check_before_lightning

        check_before_lightning(rest)  # a typo in a name or path, told before seconds of imports
        from bigtrain.lightning_cli import run
        from bigtrain.strategies.mesh import release_process_group

        code = run(command, rest)
        release_process_group()
        return code
    if command in UTILITIES:
        return load(UTILITIES[command])(rest)
    raise unknown("command", command, [*LIGHTNING_COMMANDS, *UTILITIES])


def load(target: str) -> Callable[[list[str]], int]:
    """The function a `module:function` entry names, imported now."""
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)


if __name__ == "__main__":
    main(sys.argv[1:])
