"""bigtrain's LightningCLI: recipes, run directories, `--ckpt_path auto`, and one-line errors."""

from __future__ import annotations

import os
from argparse import ArgumentError
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser

from bigtrain.config_files import check_config_files
from bigtrain.errors import UserError
from bigtrain.lightning_compat import (
    LightningCLIHooks,
    argument_dests,
    set_argument_help,
    subcommand_parser,
)
from bigtrain.lightning_errors import as_user_error
from bigtrain.parse_errors import one_line
from bigtrain.run_names import RUN_DIR_ENV, default_run_dir, make_run_dir, run_name

CKPT_PATH_HELP = (
    "Checkpoint to start from: a .ckpt file or a sharded checkpoint folder; `auto` resumes the newest "
    "checkpoint of --run_dir (starting fresh when there is none); `last`/`best` are Lightning's. "
    "(type: str | null, default: null)"
)


class BigtrainCLI(LightningCLIHooks):
    """LightningCLI with bigtrain's run directory, callbacks and logger."""

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:  # noqa: D102
        import warnings

        for command in ("fit", "validate", "test", "predict"):
            sub = subcommand_parser(parser, command)
            if sub is not None:
                set_argument_help(sub, "ckpt_path", CKPT_PATH_HELP)
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
        parser.add_argument(
            "--base",
            type=str | None,
            default=None,
            help="Set in a recipe (`base: NAME` or a path relative to it): the recipe it builds on. "
            "bigtrain stacks the chain as --config files, base first.",
        )
        parser.add_argument(
            "--resume_check",
            type=bool,
            default=True,
            help="A resume into a run directory must train what its config.yaml says (model, data, seed, "
            "precision, accumulation, clipping); false resumes with a deliberate change.",
        )
        from bigtrain.callbacks.nonfinite import NonFiniteGuard

        # `--nonfinite.mode skip|stop|off`, `--nonfinite.max_skips N` (or `nonfinite:` in a recipe).
        parser.add_lightning_class_args(NonFiniteGuard, "nonfinite")
        from bigtrain.callbacks.checkpoints import CheckpointPolicy

        # `--checkpoint.keep_last K`, `--checkpoint.every_n_steps N`, `--checkpoint.best METRIC|auto|null`.
        parser.add_class_arguments(CheckpointPolicy, "checkpoint")
        from bigtrain.callbacks.throughput import ThroughputMeter

        # `--throughput.peak_tflops T` (MFU on devices the table lacks), `--throughput.enabled false`.
        parser.add_class_arguments(ThroughputMeter, "throughput")

        from bigtrain.callbacks.progress import ProgressLog

        # `--progress.every_n_steps N` / `--progress.every_s S`: plain lines when stdout is not a terminal.
        parser.add_class_arguments(ProgressLog, "progress")

    def check_ckpt_path(self) -> None:
        """Vet `--ckpt_path FILE|DIR` before anything loads it: one line if missing, unsafe or corrupt."""
        cfg = self.config[self.config.subcommand] if self.config.get("subcommand") else {}
        if cfg.get("weights_only") is False:
            raise UserError(
                "--weights_only false would let a checkpoint run arbitrary code; bigtrain loads only plain "
                "tensors (leave it unset)"
            )
        path = cfg.get("ckpt_path")
        if path and path not in _CKPT_PATH_WORDS:
            from bigtrain.checkpoints.load import check_checkpoint

            check_checkpoint(path)
        # Lightning would now re-parse the checkpoint's hyper-parameters as the model's config; bigtrain's
        # config (the recipe and its overrides, saved beside the checkpoint) is the one source of truth.

    def after_instantiate_classes(self) -> None:  # noqa: D102
        if self.subcommand is not None:
            _check_global_batch(self.trainer, self.datamodule)
            from bigtrain.plan.host import check_host

            check_host(self.trainer, self.model, self.datamodule)  # before Lightning starts any rank

    def after_fit(self) -> None:  # noqa: D102
        from bigtrain.run_lock import release

        if getattr(self, "lock", None) is not None:
            release(self.lock)

    def before_instantiate_classes(self) -> None:  # noqa: D102
        cfg = self.config[self.subcommand]
        # A new directory of its own: `--ckpt_path auto` would find nothing in it (SLURM's job directory
        # and a launched rank's directory are found again, so they are not new).
        self.new_run_dir = not cfg.get("run_dir") and not os.environ.get(RUN_DIR_ENV)
        self.new_run_dir = self.new_run_dir and not os.environ.get("SLURM_JOB_ID")
        cfg["run_dir"] = cfg.get("run_dir") or default_run_dir(cfg.get("recipe_name") or "run")
        self.run_dir = Path(cfg["run_dir"])
        make_run_dir(self.run_dir)

    def prepare_trainer_config(self, config: dict[str, Any]) -> None:
        """Run directory, logger, bigtrain's callbacks, cluster plugins and the resolved strategy."""
        from bigtrain.callbacks.run_dir import RunDirectory, default_callbacks
        from bigtrain.strategies import resolve_strategy

        given = config.get("default_root_dir")
        if given is not None and Path(given).absolute() != self.run_dir.absolute():
            # Lightning would write part of the run there and bigtrain the rest into the run directory.
            raise UserError(
                f"trainer.default_root_dir {given} is not used by bigtrain: every run writes into its run "
                f"directory; give --run_dir {given} instead"
            )
        config["default_root_dir"] = str(self.run_dir)
        if config.get("logger") in (None, True):
            from lightning.pytorch.loggers import TensorBoardLogger

            # No `hp_metric = -1` placeholder: HParamsLog logs the real final metrics at the end of fit.
            logger = TensorBoardLogger(str(self.run_dir), name="", version="", default_hp_metric=False)
            config["logger"] = logger
        extra = [RunDirectory(self.run_dir, self.subcommand)]
        if self.subcommand == "fit":
            from bigtrain.sweeps.flat import flat_config
            from bigtrain.sweeps.hparams import HParamsLog

            extra.append(HParamsLog(flat_config(self.config["fit"].as_dict())))
        init = self.config_init[self.subcommand] if self.subcommand else {}
        extra += default_callbacks(
            self.run_dir,
            config,
            fitting=self.subcommand == "fit",
            policy=init.get("checkpoint"),
            module=self.model,
            throughput=init.get("throughput"),
            progress=init.get("progress"),
        )
        config["callbacks"] = list(config.get("callbacks") or []) + extra
        if not config.get("plugins"):
            from bigtrain.cluster.environment import environment_plugins

            # Under SLURM: Lightning's own auto-requeue (which saves inside the signal handler) is off;
            # the Preemption callback saves at a step boundary and requeues instead.
            config["plugins"] = environment_plugins() or None
        config["strategy"] = resolve_strategy(
            config.get("strategy", "auto"), config, self.model, self.datamodule
        )

    def before_fit(self) -> None:  # noqa: D102
        cfg = self.config_init["fit"]
        if cfg.get("ckpt_path") == "auto":
            from bigtrain.checkpoints.discover import find_resume_checkpoint

            found = find_resume_checkpoint(self.run_dir)
            if found is None and self.new_run_dir:
                _refuse_resuming_a_new_run(self.run_dir)
            if found is not None:
                from bigtrain.checkpoints.load import check_checkpoint

                check_checkpoint(found)  # plain tensors only, as for an explicit --ckpt_path
            if found is None and self.trainer.is_global_zero:
                print(f"no checkpoint in {self.run_dir / 'checkpoints'}: starting fresh")
            cfg["ckpt_path"] = str(found) if found else None
        if cfg.get("ckpt_path") and cfg.get("resume_check", True):
            from bigtrain.run_config import check_resume_config

            check_resume_config(self.run_dir, self.config["fit"].as_dict())
        from bigtrain.run_lock import acquire, launches_rank_zero

        if launches_rank_zero():
            self.lock = acquire(self.run_dir)  # before config.yaml or a checkpoint is written there


def _refuse_resuming_a_new_run(run_dir: Path) -> None:
    """`--ckpt_path auto` without `--run_dir` names a new directory: point to the run the user meant."""
    from bigtrain.checkpoints.discover import find_resume_checkpoint

    runs = [p for p in run_dir.parent.iterdir() if p != run_dir] if run_dir.parent.is_dir() else []
    resumable = [
        (found.stat().st_mtime, run)
        for run in runs
        if (found := find_resume_checkpoint(run, warn=lambda _: None))
    ]
    if not resumable:
        return  # nothing to resume anywhere: start fresh, as the line after this says
    newest = max(resumable)[1]
    raise UserError(
        f"--ckpt_path auto resumes the run directory, and without --run_dir this is a new one; the newest "
        f"run of this recipe with a checkpoint is {newest}: resume it with "
        f"`bigtrain fit --config {newest / 'config.yaml'} --ckpt_path auto` (or leave out --ckpt_path auto)"
    )


_CKPT_PATH_WORDS = ("auto", "last", "best", "hpc", "registry")
"""`--ckpt_path` values that are not paths (`auto` is bigtrain's; the others are Lightning's)."""


def _check_global_batch(trainer: Trainer, datamodule: Any) -> None:
    """Refuse a global batch that does not split across the data-parallel ranks before any rank starts
    (the DataModule finds out only once every rank has been launched, and then each says so)."""
    from bigtrain.data.base import BigtrainDataModule
    from bigtrain.strategies.batch import split_batch, split_ranks

    if not isinstance(datamodule, BigtrainDataModule):
        return
    tp = getattr(trainer.strategy, "tensor_parallel_size", 1) or 1
    given = getattr(trainer.strategy, "data_parallel_size", None)
    ranks = split_ranks(trainer.num_nodes * trainer.num_devices, tp, given, nodes=trainer.num_nodes)
    split_batch(datamodule.batch_size, ranks, datamodule.micro_batch_size)


def _dests(parser: LightningArgumentParser, args: Any) -> list[str]:
    """The option names of the chosen subcommand's parser (for suggestions)."""
    command = args[0] if isinstance(args, list) and args else None
    return argument_dests(subcommand_parser(parser, command) or parser)


def expand_recipe(args: list[str]) -> list[str]:
    """Replace `--recipe NAME` by `--config <file> --recipe_name NAME` (recipes are LightningCLI configs),
    a recipe or `--config` file with a `base:` by a `--config` for each file of its chain, and a short
    `--trainer.strategy` name by its class."""
    from bigtrain.recipes import config_args, find

    out, i = [], 0
    while i < len(args):
        arg = args[i]
        flag, _, value = arg.partition("=")
        if flag in ("--recipe", "--config", "-c") and not value:
            if i + 1 >= len(args):
                raise UserError(f"{flag} needs a value; see `bigtrain recipes list`")
            value, i = args[i + 1], i + 1
        if flag == "--recipe":
            out += [*config_args(find(value)), "--recipe_name", run_name(value)]
        elif flag in ("--config", "-c") and Path(value).is_file():
            out += config_args(Path(value))
        elif flag in ("--config", "-c"):
            out += [flag, value]  # a YAML string or a missing file: jsonargparse says which
        else:
            out.append(arg)
        i += 1
    from bigtrain.strategies import expand_strategy_argv

    return expand_strategy_argv(out)  # `--trainer.strategy fsdp` -> its class, so options may follow


def build_cli(command: str, args: list[str], cls: type[BigtrainCLI]) -> BigtrainCLI:
    """Parse `bigtrain <command> <args>` and build (and run) it with `cls`, a BigtrainCLI subclass."""
    return _cli(command, args, cls)


def _cli(command: str, args: list[str], cls: type[BigtrainCLI] = BigtrainCLI) -> BigtrainCLI:
    import bigtrain.data  # noqa: F401  (registers the DataModules for short class names)
    from bigtrain.models import load_all

    load_all()  # imports every family, so recipes may name classes briefly
    from jsonargparse import set_parsing_settings

    # The docstring under each config field becomes its --help text. Parsing them costs seconds, so only
    # when help is asked for (`--help`, `--model.help CLASS`, ...).
    wants_help = any(a in ("-h", "--help") or a.endswith(".help") for a in args)
    set_parsing_settings(docstring_parse_attribute_docstrings=wants_help)

    no_exit = {"exit_on_error": False}
    kwargs: dict[str, Any] = {
        "parser_kwargs": {**no_exit, **{c: no_exit for c in ("fit", "validate", "test", "predict")}},
        "save_config_kwargs": {"overwrite": True, "config_filename": "config.yaml"},
        "auto_configure_optimizers": False,
    }
    from bigtrain.help_pages import help_pages

    pages = help_pages([command, *expand_recipe(args)])
    for page in pages[:-1]:  # each help page but the last ends in SystemExit(0): print the next one too
        try:
            _build(cls, page, kwargs)
        except SystemExit as done:
            if done.code not in (0, None):
                raise
    return _build(cls, pages[-1], kwargs)


def _build(cls: type[BigtrainCLI], argv: list[str], kwargs: dict[str, Any]) -> BigtrainCLI:
    try:
        return cls(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=argv,
            **kwargs,
        )
    except SystemExit as done:
        _print_presets(argv)  # after `--model.help CLASS`: the preset names the page cannot list
        raise done
    except Exception as err:  # jsonargparse raises ArgumentError; unwrap user errors from instantiation
        raise as_user_error(err) from err


def _print_presets(argv: list[str]) -> None:
    from bigtrain.help_pages import presets_line

    if "--model.help" in argv[:-1]:
        line = presets_line(argv[argv.index("--model.help") + 1])
        if line:
            print(f"\n{line}")


def run(command: str, args: list[str]) -> int:
    """Run `bigtrain <command> <args>` through LightningCLI."""
    owns_env = RUN_DIR_ENV not in os.environ
    _lightning_info_to_stdout()
    from bigtrain.quiet import silence_known_noise

    silence_known_noise()
    check_config_files(args)
    try:
        _cli(command, args)
    except UserError:
        from bigtrain.run_names import remove_failed_start

        remove_failed_start()  # a refused start leaves no directory holding only its config.yaml
        raise
    finally:
        if owns_env:
            os.environ.pop(RUN_DIR_ENV, None)
    return 0


def _lightning_info_to_stdout() -> None:
    """Lightning's info lines ("Seed set to 0", "GPU available: ...", the model summary) go to stdout, so
    that stderr carries only warnings and errors: a user error is then the one line there."""
    import logging
    import sys

    for name in ("lightning.pytorch", "lightning.fabric"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr:
                handler.setStream(sys.stdout)


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

    def after_instantiate_classes(self) -> None:  # noqa: D102
        pass

    def run_subcommand(self, subcommand: str) -> None:  # noqa: D102
        pass
