"""Every use bigtrain makes of a private name of Lightning, torch, jsonargparse or argparse, in one place.

A private name can change in any release without notice. Each use here is a small function or a base class
whose private hooks call public-named methods, with the reason no public API serves.
`bigtrain.private_names.PRIVATE_NAMES` lists them all, and `tests/test_lightning_compat.py` checks that each
exists in what is installed, so an upgrade fails there, naming what moved, instead of somewhere in a run.
Nothing else in bigtrain touches these names; torch's alone are in `bigtrain.torch_compat`.

Heavier imports (distributed checkpointing, the fit loop's helpers) are made inside the functions that need
them, so that importing this module costs no more than importing Lightning.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from types import CodeType
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.strategies import ModelParallelStrategy

# ---- ModelCheckpoint -------------------------------------------------------------------------------------


class ModelCheckpointHooks(ModelCheckpoint):
    """ModelCheckpoint whose private write and remove steps call `write_checkpoint` and `delete_checkpoint`.

    Lightning has no public hook for how ModelCheckpoint writes or deletes a checkpoint file: it calls its
    private `_save_checkpoint` and `_remove_checkpoint`, overridden here. Unlike Lightning's, the save does
    not notify the loggers (`after_save_checkpoint`), as bigtrain's override never did.
    """

    def _save_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        self.write_checkpoint(trainer, filepath)
        # ModelCheckpoint reads these to skip a second save of the same step and to link `last.ckpt`.
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath

    def _remove_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        self.delete_checkpoint(trainer, filepath)

    def write_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        """Write the trainer's checkpoint to `filepath` (Lightning's way unless overridden)."""
        trainer.save_checkpoint(filepath, self.save_weights_only)

    def delete_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        """Delete a checkpoint this callback no longer keeps (Lightning's way unless overridden)."""
        trainer.strategy.remove_checkpoint(filepath)

    @property
    def every_n_train_steps(self) -> int:
        """Steps between saves (0: not step-based); Lightning keeps it only privately."""
        return self._every_n_train_steps

    def save_now(self, trainer: Trainer) -> None:
        """Save this step's top-k and `last` checkpoints as the step trigger does, unless already saved."""
        # ModelCheckpoint saves only from its own triggers; its save path is private.
        if not self._should_skip_saving_checkpoint(trainer):
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)


# ---- the fit loop ----------------------------------------------------------------------------------------


def load_pending_loader_state(trainer: Trainer) -> bool:
    """Load the checkpoint's train-loader state now if the fit loop has left it pending; whether it did.

    The loop keeps the restored state, the loaders and their fetcher privately and loads the state only
    when it builds the loaders itself; there is no public way to have it done once they exist.
    """
    from lightning.fabric.utilities.data import _set_sampler_epoch

    fit = trainer.fit_loop
    loader = getattr(fit, "_combined_loader", None)
    if not (fit.restarting and getattr(fit, "_combined_loader_states_to_load", None) and loader is not None):
        return False
    for dataloader in loader.flattened:
        _set_sampler_epoch(dataloader, fit.epoch_progress.current.processed)
    fit._load_combined_loader_states()
    iter(fit._data_fetcher)
    return True


# ---- LightningCLI ----------------------------------------------------------------------------------------


class LightningCLIHooks(LightningCLI):
    """LightningCLI whose private steps call `check_ckpt_path`, `prepare_trainer_config`, `run_subcommand`.

    LightningCLI offers `before_*`/`after_*` hooks, but none that replaces how `--ckpt_path` is read, that
    sees the Trainer's settings just before it is built, or that replaces running the subcommand.
    """

    def _parse_ckpt_path(self) -> None:
        self.check_ckpt_path()

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list) -> Trainer:
        self.prepare_trainer_config(config)
        return super()._instantiate_trainer(config, callbacks)

    def _run_subcommand(self, subcommand: str) -> None:
        self.run_subcommand(subcommand)

    def check_ckpt_path(self) -> None:
        """Read `--ckpt_path` after parsing (Lightning: its hyper-parameters become the model's config)."""
        super()._parse_ckpt_path()

    def prepare_trainer_config(self, config: dict[str, Any]) -> None:
        """Change the Trainer's settings in place just before the Trainer is built."""

    def run_subcommand(self, subcommand: str) -> None:
        """Run the subcommand (Lightning: `before_<cmd>`, the Trainer's method, `after_<cmd>`)."""
        super()._run_subcommand(subcommand)


def building_trainer(frames: Iterable[CodeType]) -> bool:
    """Whether a traceback's frames pass through LightningCLI building the Trainer."""
    return any(code.co_name == "_instantiate_trainer" for code in frames)


def argument_dests(parser: Any) -> list[str]:
    """The `dest` of every argument of an argparse (or jsonargparse) parser."""
    # argparse keeps its arguments in `_actions` and has no public way to list them.
    return [action.dest for action in parser._actions]


def set_argument_help(parser: Any, dest: str, text: str) -> None:
    """Replace the help text of the argument `dest` of a parser (no-op when it has none)."""
    # A method argument's help comes from Lightning's docstring; argparse can change it only on the action.
    for action in parser._actions:
        if action.dest == dest:
            action.help = text


def subcommand_parser(parser: Any, name: str | None) -> Any | None:
    """The parser of jsonargparse subcommand `name`, or None when there is no such subcommand."""
    # jsonargparse (like argparse) exposes its subcommand parsers only through private attributes.
    action = parser._subcommands_action
    return action._name_parser_map.get(name) if action else None


# ---- trainer, strategy and module internals --------------------------------------------------------------


def attached_trainer(module: LightningModule) -> Trainer | None:
    """The Trainer the module is attached to, or None (`module.trainer` raises when there is none)."""
    return getattr(module, "_trainer", None)


def logging_step(trainer: Trainer) -> int:
    """The step Lightning's `self.log` scalars are written at: batches that stepped an optimizer, not
    `global_step`, which counts each optimizer step (a GAN batch with a D and a G step counts 2)."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped


def set_ddp_option(strategy: Any, name: str, value: Any) -> None:
    """Set one of the keyword arguments a DDPStrategy passes to DistributedDataParallel, after __init__
    (what it needs may only be known once the module is attached, in `setup`)."""
    strategy._ddp_kwargs[name] = value


def logs_this_batch(trainer: Trainer) -> bool:
    """Whether the loggers will write the train step metrics of the batch now running.

    Lightning decides it from the count of batches that stepped the optimizer (`_batches_that_stepped`,
    the loggers' step) and skips the micro-batches that only accumulate; neither is public. The run's last
    batch counts too (Lightning logs it when `should_stop` is set, which is not read here: a stop one rank
    sees first must not make that rank alone enter a collective).
    """
    every = trainer.log_every_n_steps
    loop = trainer.fit_loop
    automatic = trainer.lightning_module.automatic_optimization
    if not every or (automatic and loop._should_accumulate()):
        return False
    return (loop.epoch_loop._batches_that_stepped + 1) % every == 0 or _last_batch_of_run(trainer, automatic)


def _last_batch_of_run(trainer: Trainer, automatic: bool) -> bool:
    # The run's last batch, known alike on every rank (the step count, and the epoch's end, which the
    # distributed sampler makes the same everywhere), so that its values are logged too.
    steps_after = trainer.global_step + (1 if automatic else 0)  # manual optimization has stepped already
    if 0 < trainer.max_steps <= steps_after:
        return True
    last_epoch = trainer.max_epochs is not None and 0 < trainer.max_epochs <= trainer.current_epoch + 1
    return last_epoch and bool(trainer.is_last_batch)


def skip_unused_batch_hooks(callbacks: Iterable[Callback]) -> None:
    """Leave each callback's per-batch hooks that it does not override out of Lightning's dispatch."""
    # `_call_callback_hooks` enters a profiler context and reads `state_key` (ModelCheckpoint's formats a
    # dict) for every callback at every hook, empty ones too: ~10 calls each, 6 hooks a step. It skips a hook
    # that is not callable, so None on the instance drops those calls; the class's empty method is untouched.
    for callback in callbacks:
        for name in BATCH_HOOKS:
            if name not in vars(callback) and getattr(type(callback), name) is getattr(Callback, name):
                setattr(callback, name, None)


BATCH_HOOKS = (
    "on_train_batch_start", "on_before_backward", "on_after_backward", "on_before_optimizer_step",
    "on_before_zero_grad", "on_train_batch_end", "on_validation_batch_start", "on_validation_batch_end",
)  # fmt: skip
"""Callback hooks Lightning calls on every training step or validation batch."""


def device_mesh(strategy: Any) -> Any | None:
    """The strategy's device mesh, or None (not a ModelParallelStrategy, or not set up yet)."""
    # ModelParallelStrategy.device_mesh raises until the mesh exists; other strategies have no mesh.
    return getattr(strategy, "_device_mesh", None)


def set_device_mesh(strategy: Any, mesh: Any) -> None:
    """Give a ModelParallelStrategy a device mesh built elsewhere (`bigtrain debug --simulate`'s fake one)."""
    # The strategy builds its mesh only in its own setup, from the launched ranks; there is no setter.
    strategy._device_mesh = mesh


def connector_cluster_environment(trainer: Trainer) -> Any | None:
    """The cluster environment the Trainer chose (single-device strategies do not carry one)."""
    return getattr(trainer._accelerator_connector, "cluster_environment", None)


class ModelParallelHooks(ModelParallelStrategy):
    """ModelParallelStrategy with a `before_launch` hook and a setter for its mesh sizes."""

    def _configure_launcher(self) -> None:
        # The one step that runs in the launching process before any rank starts; Lightning has no public
        # hook there.
        self.before_launch()
        super()._configure_launcher()

    def before_launch(self) -> None:
        """Runs in the launching process before any rank starts (checks that should fail early)."""

    def set_mesh_sizes(self, data_parallel: int, tensor_parallel: int) -> None:
        """Set the sizes the device mesh is built with."""
        # ModelParallelStrategy reads them from these attributes when it sets up; it has no setter.
        self._data_parallel_size, self._tensor_parallel_size = data_parallel, tensor_parallel


def stop_child_process_observer() -> None:
    """Stop Lightning's observer of the ranks it launched, which SIGKILLs this process within 5 s of a rank
    dying, without a word (Lightning has no switch for it; its check `_run` is made to report "all done")."""
    from lightning.fabric.strategies.launchers.subprocess_script import _ChildProcessObserver

    for thread in threading.enumerate():
        if isinstance(thread, _ChildProcessObserver):
            thread._run = lambda: True  # type: ignore[method-assign]


def optimizers_of(module: LightningModule) -> list[torch.optim.Optimizer]:
    """The optimizers a module's `configure_optimizers()` returns, in whichever of Lightning's forms."""
    # Lightning's parser of those forms is private; the public path needs a running Trainer.
    from lightning.pytorch.core.optimizer import _configure_optimizers

    optimizers, _, _ = _configure_optimizers(module.configure_optimizers())
    return optimizers
