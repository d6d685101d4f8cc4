"""The private names of Lightning, torch, jsonargparse and argparse that bigtrain uses exist, and only
`bigtrain.lightning_compat` and `bigtrain.torch_compat` use them: an upgrade that moves one fails here,
naming it."""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from bigtrain import lightning_compat, private_names, torch_compat
from bigtrain.private_names import PRIVATE_NAMES, PrivateName, missing_names

PACKAGE = Path(lightning_compat.__file__).resolve().parent
COMPAT = (Path(lightning_compat.__file__).resolve(), Path(torch_compat.__file__).resolve())
"""The two compat modules: Lightning's (and jsonargparse's, argparse's) private names, and torch's alone."""
TABLE = Path(private_names.__file__).resolve()  # names them as strings; uses none
OTHERS = sorted(p for p in PACKAGE.rglob("*.py") if p not in (*COMPAT, TABLE))


def _trainer() -> Any:
    from lightning.pytorch import Trainer

    return Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def instance_of(owner: str) -> Any:
    """An instance of an owner whose private names are set on instances."""
    from lightning.pytorch import LightningModule
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy

    factories = {
        "lightning.pytorch.callbacks:ModelCheckpoint": ModelCheckpoint,
        "lightning.pytorch.loops.fit_loop:_FitLoop": lambda: _trainer().fit_loop,
        "lightning.pytorch.loops.training_epoch_loop:_TrainingEpochLoop": lambda: (
            _trainer().fit_loop.epoch_loop
        ),
        "lightning.pytorch:Trainer": _trainer,
        "lightning.pytorch:LightningModule": LightningModule,
        "lightning.pytorch.strategies:ModelParallelStrategy": ModelParallelStrategy,
        "lightning.pytorch.strategies:DDPStrategy": DDPStrategy,
        "argparse:ArgumentParser": argparse.ArgumentParser,
        "argparse:_SubParsersAction": lambda: argparse.ArgumentParser().add_subparsers(),
        "torch.nn:Module": torch.nn.Module,
        "torch._ops:OpOverload": lambda: torch.ops.aten.mm.default,
    }
    return factories[owner]()


def test_every_private_name_exists_in_the_installed_packages():
    assert missing_names(PRIVATE_NAMES, instance_of) == []


def test_a_missing_name_fails_the_check_and_is_named():
    fake = [
        PrivateName("lightning.pytorch.callbacks:ModelCheckpoint", "_no_such_hook"),
        PrivateName("torch.nn:Module", "_no_such_attribute", on_instance=True),
        PrivateName("torch.nn:NoSuchClass", "_x"),
        PrivateName("torch.no_such_module", "_y"),
        PrivateName("torch.nn:Module", "_buffers", on_instance=True),  # present: not reported
    ]
    assert missing_names(fake, instance_of) == [
        "lightning.pytorch.callbacks:ModelCheckpoint._no_such_hook",
        "torch.nn:Module._no_such_attribute",
        "torch.nn:NoSuchClass._x (no torch.nn:NoSuchClass)",
        "torch.no_such_module._y (no torch.no_such_module)",
    ]


def _private_uses(text: str) -> set[str]:
    """Private names a source uses: `x._name` (not `self._name`: a class's own may share a name),
    `getattr(x, "_name")`, private imports, and methods `_name(self, ...)` (overrides)."""
    attributes = set(re.findall(r"(?<!\bself)(?<!\bos)\.(_[A-Za-z]\w*)", text))
    attributes |= set(re.findall(r"^\s+def (_[A-Za-z]\w*)\(self", text, re.M))
    getattrs = set(re.findall(r"getattr\([^,()]+,\s*[\"'](_[A-Za-z]\w*)[\"']", text))
    imports = set()
    for module, names in re.findall(r"^\s*from\s+([\w.]+)\s+import\s+\(?([^)\n]*)", text, re.M):
        if module.startswith(("torch", "lightning", "jsonargparse", "argparse")):
            imports |= {n.split(" as ")[0].strip() for n in names.split(",") if n.strip().startswith("_")}
            imports |= {part for part in module.split(".") if part.startswith("_")}
    return attributes | getattrs | imports


def test_the_table_lists_every_private_name_the_compat_module_uses():
    listed = {entry.name for entry in PRIVATE_NAMES}
    listed |= {part for entry in PRIVATE_NAMES for part in re.split(r"[.:]", entry.owner)}
    own = {"_CHECKPOINT", "_CLI", "_FIT_LOOP", "_MODEL_PARALLEL", "_DCP"}
    used = set().union(*(_private_uses(path.read_text()) for path in COMPAT))
    assert used - listed - own == set()


@pytest.mark.parametrize("path", OTHERS, ids=str)
def test_no_other_module_uses_a_listed_private_name(path):
    listed = {entry.name for entry in PRIVATE_NAMES}
    listed |= {part for entry in PRIVATE_NAMES for part in re.split(r"[.:]", entry.owner) if part[0] == "_"}
    used = _private_uses(path.read_text()) & listed
    where = path.relative_to(PACKAGE.parent)
    assert not used, f"{where} uses {sorted(used)}: go through lightning_compat or torch_compat"


def test_the_use_scanner_finds_each_kind_of_use():
    text = (
        "fit._data_fetcher\nself._buffers\nos._exit(1)\ngetattr(m, '_trainer', None)\n"
        "from torch.distributed.checkpoint._traverse import set_element\n"
        "from torch.nn.modules.batchnorm import _BatchNorm\n"
        "class C:\n    def _save_checkpoint(self, trainer):\n        pass\n"
    )
    expected = {"_data_fetcher", "_trainer", "_traverse", "_BatchNorm", "_save_checkpoint"}
    assert _private_uses(text) == expected


def test_model_checkpoint_hooks_forward_to_the_public_methods(tmp_path):
    calls = []

    class Recording(lightning_compat.ModelCheckpointHooks):
        def write_checkpoint(self, trainer, filepath):
            calls.append(("write", filepath))

        def delete_checkpoint(self, trainer, filepath):
            calls.append(("delete", filepath))

    class FakeTrainer:
        global_step = 7

    hooks = Recording(dirpath=tmp_path, every_n_train_steps=3)
    hooks._save_checkpoint(FakeTrainer(), "a.ckpt")
    hooks._remove_checkpoint(FakeTrainer(), "b.ckpt")
    assert calls == [("write", "a.ckpt"), ("delete", "b.ckpt")]
    assert (hooks._last_global_step_saved, hooks._last_checkpoint_saved) == (7, "a.ckpt")
    assert hooks.every_n_train_steps == 3


def test_persistent_buffers_leave_out_non_persistent_and_empty_ones():
    norm = torch.nn.BatchNorm1d(2)
    norm.register_buffer("scratch", torch.zeros(1), persistent=False)
    norm.register_buffer("unset", None)
    names = [name for name, _ in torch_compat.own_persistent_buffers(norm)]
    assert names == ["running_mean", "running_var", "num_batches_tracked"]


def test_argument_dests_and_subcommand_parser():
    from jsonargparse import ArgumentParser

    parser, sub = ArgumentParser(exit_on_error=False), ArgumentParser(exit_on_error=False)
    sub.add_argument("--lr", type=float)
    parser.add_subcommands().add_subcommand("fit", sub)
    assert lightning_compat.subcommand_parser(parser, "fit") is sub
    assert lightning_compat.subcommand_parser(parser, None) is None
    assert "lr" in lightning_compat.argument_dests(sub)
    assert lightning_compat.subcommand_parser(ArgumentParser(), "fit") is None


def _inherited_private_reads(text: str) -> set[str]:
    """`self._name` that a class reads but neither assigns nor defines: a private of a base class."""
    found = set()
    for cls in (n for n in ast.walk(ast.parse(text)) if isinstance(n, ast.ClassDef)):
        defined = {n.name for n in cls.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
        read = set()
        for node in ast.walk(cls):
            if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)):
                continue
            if node.value.id == "self" and node.attr.startswith("_") and not node.attr.startswith("__"):
                (defined if isinstance(node.ctx, ast.Store) else read).add(node.attr)
        found |= {f"{cls.name}.{name}" for name in read - defined}
    return found


@pytest.mark.parametrize("path", OTHERS, ids=str)
def test_no_class_reads_a_private_name_of_its_base(path):
    """`self._x` of a Lightning or torch base class is a private name too (`_private_uses` skips self)."""
    assert _inherited_private_reads(path.read_text()) == set()


def test_the_base_class_scanner_finds_an_inherited_private():
    text = (
        "class S(DDPStrategy):\n    def setup(self):\n"
        "        self._own = 1\n        self._ddp_kwargs['x'] = self._own\n"
    )
    assert _inherited_private_reads(text) == {"S._ddp_kwargs"}
