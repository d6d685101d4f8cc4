"""bigtrain's LightningCLI: recipes, run directories, `--ckpt_path auto`, and one-line errors."""

from __future__ import annotations

import os
import time
from argparse import ArgumentError
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from bigtrain.errors import UserError
from bigtrain.parse_errors import one_line

RUN_DIR_ENV = "BIGTRAIN_RUN_DIR"
"""Lightning re-runs the command line for each DDP rank it starts; they find the run directory here."""


class BigtrainCLI(LightningCLI):
    """LightningCLI with bigtrain's run directory, callbacks and logger."""

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:  # noqa: D102
        import warnings

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*args parameter is intended")
            try:
                super().parse_arguments(parser, args)
            except ArgumentError as err:
                raise UserError(one_line(str(err), _dests(parser, args))) from err

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:  # noqa: D102
        parser.add_argument(
            "--run_dir",
            type=str | None,
            default=None,
            help="Run directory (TensorBoard events, config.yaml, metrics.json, checkpoints/). "
            "Default: runs/<recipe>/<time>.",
        )
        parser.add_argument(
            "--recipe_name", type=str | None, default=None, help="Set by --recipe; names runs."
        )

    def before_instantiate_classes(self) -> None:  # noqa: D102
        cfg = self.config[self.subcommand]
        cfg["run_dir"] = cfg.get("run_dir") or default_run_dir(cfg.get("recipe_name") or "run")
        self.run_dir = Path(cfg["run_dir"])

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list) -> Trainer:
        from bigtrain.callbacks.run_dir import RunDirectory, default_callbacks

        config["default_root_dir"] = str(self.run_dir)
        if config.get("logger") in (None, True):
            from lightning.pytorch.loggers import TensorBoardLogger

            config["logger"] = TensorBoardLogger(save_dir=str(self.run_dir), name="", version="")
        extra = [RunDirectory(self.run_dir, self.subcommand)]
        extra += default_callbacks(self.run_dir, config, fitting=self.subcommand == "fit")
        config["callbacks"] = list(config.get("callbacks") or []) + extra
        return super()._instantiate_trainer(config, callbacks)

    def before_fit(self) -> None:  # noqa: D102
        cfg = self.config_init["fit"]
        if cfg.get("ckpt_path") == "auto":
            from bigtrain.checkpoint import find_resume_checkpoint

            found = find_resume_checkpoint(self.run_dir)
            if found is None and self.trainer.is_global_zero:
                print(f"no checkpoint in {self.run_dir / 'checkpoints'}: starting fresh")
            cfg["ckpt_path"] = str(found) if found else None


def _dests(parser: LightningArgumentParser, args: Any) -> list[str]:
    """The option names of the chosen subcommand's parser (for suggestions)."""
    command = args[0] if isinstance(args, list) and args else None
    sub = parser._subcommands_action._name_parser_map.get(command) if parser._subcommands_action else None
    return [a.dest for a in (sub or parser)._actions]


def default_run_dir(name: str) -> str:
    """runs/<name>/<time> (or the directory an earlier rank chose), made unique."""
    if os.environ.get(RUN_DIR_ENV):
        return os.environ[RUN_DIR_ENV]
    job = os.environ.get("SLURM_JOB_ID")
    stamp = f"slurm-{job}" if job else time.strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / name / stamp
    path, n = base, 1
    while path.exists() and not job:
        n += 1
        path = base.with_name(f"{stamp}-{n}")
    os.environ[RUN_DIR_ENV] = str(path)
    return str(path)


def expand_recipe(args: list[str]) -> list[str]:
    """Replace `--recipe NAME` by `--config <file> --recipe_name NAME` (recipes are LightningCLI configs)."""
    from bigtrain.recipes import find

    out, i = [], 0
    while i < len(args):
        arg = args[i]
        if arg == "--recipe" or arg.startswith("--recipe="):
            if "=" in arg:
                name = arg.split("=", 1)[1]
            elif i + 1 < len(args):
                name, i = args[i + 1], i + 1
            else:
                raise UserError("--recipe needs a name; see `bigtrain recipes list`")
            path = find(name)
            stem = name.removesuffix(".yaml").replace("/", "-") if path.name != name else path.stem
            out += ["--config", str(path), "--recipe_name", stem]
        else:
            out.append(arg)
        i += 1
    return out


def _cli(command: str, args: list[str], cls: type[BigtrainCLI] = BigtrainCLI) -> BigtrainCLI:
    import bigtrain.data  # noqa: F401  (registers the DataModules for short class names)
    from bigtrain.models import load_all

    load_all()  # imports every family, so recipes may name classes briefly

    no_exit = {"exit_on_error": False}
    kwargs: dict[str, Any] = {
        "parser_kwargs": {**no_exit, **{c: no_exit for c in ("fit", "validate", "test", "predict")}},
        "save_config_kwargs": {"overwrite": True, "config_filename": "config.yaml"},
        "auto_configure_optimizers": False,
    }
    argv = [command, *expand_recipe(args)]
    try:
        return cls(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=argv,
            **kwargs,
        )
    except Exception as err:  # jsonargparse raises ArgumentError; unwrap user errors from instantiation
        raise _as_user_error(err) from err


def _as_user_error(err: BaseException) -> BaseException:
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, UserError):
            return cause
        cause = cause.__cause__ or cause.__context__
    if type(err).__name__ == "ArgumentError":
        return UserError(one_line(str(err)))
    return err


def run(command: str, args: list[str]) -> int:
    """Run `bigtrain <command> <args>` through LightningCLI."""
    owns_env = RUN_DIR_ENV not in os.environ
    try:
        _cli(command, args)
    finally:
        if owns_env:
            os.environ.pop(RUN_DIR_ENV, None)
    return 0


def resolve(command: str, args: list[str]) -> dict:
    """The resolved config of `bigtrain <command> <args>` as a plain dict (nothing is instantiated or run)."""
    import yaml

    cli = _cli(command, args, cls=_ResolveOnly)
    return yaml.safe_load(cli.parser.dump(cli.config, skip_none=False))[command]


class _ResolveOnly(BigtrainCLI):
    """Parses and validates like the real command, then stops before building anything."""

    def before_instantiate_classes(self) -> None:  # noqa: D102
        pass

    def instantiate_classes(self) -> None:  # noqa: D102
        pass

    def _run_subcommand(self, subcommand: str) -> None:
        pass
