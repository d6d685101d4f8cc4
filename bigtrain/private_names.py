"""The table of every private name of Lightning, torch, jsonargparse or argparse that bigtrain uses.

The uses themselves are all in `bigtrain.lightning_compat` and `bigtrain.torch_compat`;
`tests/test_lightning_compat.py` checks that each name listed here exists in what is installed
(`missing_names`) and that the compat modules use no other.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PrivateName:
    """One private name bigtrain relies on: where it lives (`module` or `module:Class`) and what it is."""

    owner: str
    name: str
    on_instance: bool = False
    """Set on instances (in `__init__` or later), so only an instance shows it, not the class."""


_CHECKPOINT = "lightning.pytorch.callbacks:ModelCheckpoint"
_CLI = "lightning.pytorch.cli:LightningCLI"
_FIT_LOOP = "lightning.pytorch.loops.fit_loop:_FitLoop"
_EPOCH_LOOP = "lightning.pytorch.loops.training_epoch_loop:_TrainingEpochLoop"
_MODEL_PARALLEL = "lightning.pytorch.strategies:ModelParallelStrategy"
_DCP = "torch.distributed.checkpoint"

PRIVATE_NAMES: tuple[PrivateName, ...] = (
    # ModelCheckpoint: how a checkpoint is written and removed, and saving outside its own triggers.
    PrivateName(_CHECKPOINT, "_save_checkpoint"),
    PrivateName(_CHECKPOINT, "_remove_checkpoint"),
    PrivateName(_CHECKPOINT, "_should_skip_saving_checkpoint"),
    PrivateName(_CHECKPOINT, "_monitor_candidates"),
    PrivateName(_CHECKPOINT, "_save_topk_checkpoint"),
    PrivateName(_CHECKPOINT, "_save_last_checkpoint"),
    PrivateName(_CHECKPOINT, "_last_global_step_saved", on_instance=True),
    PrivateName(_CHECKPOINT, "_last_checkpoint_saved", on_instance=True),
    PrivateName(_CHECKPOINT, "_every_n_train_steps", on_instance=True),
    # The fit loop's pending train-loader state (resume mid-epoch).
    PrivateName(_FIT_LOOP, "_combined_loader", on_instance=True),
    PrivateName(_FIT_LOOP, "_combined_loader_states_to_load", on_instance=True),
    PrivateName(_FIT_LOOP, "_load_combined_loader_states"),
    PrivateName(_FIT_LOOP, "_data_fetcher", on_instance=True),
    PrivateName("lightning.fabric.utilities.data", "_set_sampler_epoch"),
    # LightningCLI's steps between parsing and running.
    PrivateName(_CLI, "_parse_ckpt_path"),
    PrivateName(_CLI, "_instantiate_trainer"),
    PrivateName(_CLI, "_run_subcommand"),
    # Argument parsers: the options they accept, for "did you mean" suggestions.
    PrivateName("argparse:ArgumentParser", "_actions", on_instance=True),
    PrivateName("argparse:_SubParsersAction", "_name_parser_map", on_instance=True),
    PrivateName("jsonargparse:ArgumentParser", "_subcommands_action"),
    # Trainer, strategy and module internals.
    PrivateName("lightning.pytorch:Trainer", "_accelerator_connector", on_instance=True),
    PrivateName("lightning.pytorch:LightningModule", "_trainer", on_instance=True),
    PrivateName("lightning.pytorch.strategies:DDPStrategy", "_ddp_kwargs", on_instance=True),
    # When the loggers write a train step (train metrics are reduced across ranks only then), and the step
    # they write at (images and text are logged at the same step as the scalars).
    PrivateName(_FIT_LOOP, "_should_accumulate"),
    PrivateName(_EPOCH_LOOP, "_batches_that_stepped", on_instance=True),
    PrivateName(_MODEL_PARALLEL, "_device_mesh", on_instance=True),
    PrivateName(_MODEL_PARALLEL, "_data_parallel_size", on_instance=True),
    PrivateName(_MODEL_PARALLEL, "_tensor_parallel_size", on_instance=True),
    PrivateName(_MODEL_PARALLEL, "_configure_launcher"),
    # DTensor's caches keyed by device meshes, cleared when a simulated (fake) process group ends.
    PrivateName("torch.distributed.tensor.debug", "_clear_sharding_prop_cache"),
    PrivateName("torch.distributed.tensor._redistribute", "clear_redistribute_planner_cache"),
    PrivateName("lightning.fabric.strategies.launchers.subprocess_script", "_ChildProcessObserver"),
    PrivateName("lightning.fabric.strategies.launchers.subprocess_script:_ChildProcessObserver", "_run"),
    PrivateName("lightning.pytorch.core.optimizer", "_configure_optimizers"),
    # Lightning's callback dispatch, which skips a hook attribute that is not callable (per-batch cost).
    PrivateName("lightning.pytorch.trainer.call", "_call_callback_hooks"),
    # torch.
    PrivateName("torch.nn:Module", "_buffers", on_instance=True),
    PrivateName("torch.nn:Module", "_non_persistent_buffers_set", on_instance=True),
    PrivateName("torch.nn.modules.batchnorm", "_BatchNorm"),
    PrivateName("torch.nn.modules.batchnorm:_BatchNorm", "_check_input_dim"),
    PrivateName("torch.nn:Conv2d", "_conv_forward"),
    PrivateName("torch:UntypedStorage", "_cdata"),
    # Fused multi-tensor kernels (what torch's own optimizers and clip_grad_norm_ use): a few kernels for
    # all gradients or buffers instead of one or two per tensor, on every step.
    PrivateName("torch", "_foreach_norm"),
    PrivateName("torch", "_foreach_copy_"),
    PrivateName("torch.distributed.distributed_c10d", "_get_default_store"),
    PrivateName(f"{_DCP}._traverse", "set_element"),
    PrivateName(f"{_DCP}.default_planner", "_EmptyStateDictLoadPlanner"),
    PrivateName(f"{_DCP}.state_dict_loader", "_load_state_dict"),
    # Counting FLOPs with a plain dispatch mode (FlopCounterMode's module tracker changes gradient rounding).
    PrivateName("torch.utils._python_dispatch", "TorchDispatchMode"),
    PrivateName("torch._ops:OpOverload", "_overloadpacket", on_instance=True),
    # FLOP formulas for CPU flash attention, which FlopCounterMode's table lacks (it has the CUDA kernels).
    PrivateName("torch:ops.aten", "_scaled_dot_product_flash_attention_for_cpu"),
    PrivateName("torch:ops.aten", "_scaled_dot_product_flash_attention_for_cpu_backward"),
    # Named inside files torch writes, so the checkpoint unpicklers allow them (safe_load, consolidate).
    PrivateName("torch.serialization", "_get_layout"),
    PrivateName(f"{_DCP}.filesystem", "_StorageInfo"),
    # CUDA memory snapshots (`bigtrain debug --trace`): PyTorch documents them only under these names.
    PrivateName("torch.cuda.memory", "_record_memory_history"),
    PrivateName("torch.cuda.memory", "_dump_snapshot"),
)
"""Every private name bigtrain uses (the module's own, with the function or class that uses it, below)."""


def missing_names(names: Iterable[PrivateName], instance_of: Callable[[str], Any]) -> list[str]:
    """The names the installed packages lack, as `owner.name`; `instance_of(owner)` builds an instance."""
    missing = []
    for entry in names:
        module, _, qualname = entry.owner.partition(":")
        try:
            owner: Any = importlib.import_module(module)
            for part in filter(None, qualname.split(".")):
                owner = getattr(owner, part)
        except (ImportError, AttributeError):
            missing.append(f"{entry.owner}.{entry.name} (no {entry.owner})")
            continue
        if entry.on_instance:
            owner = instance_of(entry.owner)
        if not hasattr(owner, entry.name):
            missing.append(f"{entry.owner}.{entry.name}")
    return missing
