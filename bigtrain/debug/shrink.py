"""The shrink: recipe overrides that turn any recipe into a one-process, one-device run of a few steps."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

SMALL_BATCH = 8
"""The global batch of a shrunk run: enough samples for the statistics, few enough for any device."""
TINY_BLOCK = 64
"""Sequence length of `--tiny` text data (the recipes' built-in corpora use 64)."""
BUILTIN_SOURCES = {"ImageDataModule": "glyphs", "TextDataModule": "builtin"}
"""The data source that needs no file or download, per bigtrain DataModule (used by `--tiny`)."""


@dataclass
class Shrink:
    """The overrides that shrink a run, and one line per setting changed, for the report."""

    args: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)

    def set(self, key: str, old: Any, new: Any, why: str = "") -> None:
        """Override `key` with `new` and note the change when the recipe said something else."""
        self.args += [f"--{key}", "null" if new is None else str(new)]
        if old != new:
            self.changes.append(f"{key}: {old!r} -> {new!r}" + (f" ({why})" if why else ""))


def _name(value: Any) -> str:
    """A strategy or accelerator setting as a short name (`{class_path: ...FSDP}` -> `fsdp`)."""
    if isinstance(value, dict):
        value = value.get("class_path", "")
    return str(value).rpartition(".")[2].lower() if value is not None else "auto"


def smallest_preset(class_path: str) -> str | None:
    """The first preset of the model's family (each family lists its smallest first), or None."""
    module_name, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError):
        return None
    for klass in getattr(cls, "__mro__", ()):
        presets = getattr(importlib.import_module(klass.__module__), "PRESETS", None)
        if isinstance(presets, dict) and presets:
            return next(iter(presets))
    return None


def shrink(config: dict, *, tiny: bool, keep_size: bool, gpu: bool, user_keys: set[str]) -> Shrink:
    """The overrides for a resolved fit config; keys the user set on the command line are left alone."""
    out = Shrink()
    trainer, data = config["trainer"], config["data"]
    data_args = data.get("init_args") or {}

    def put(key: str, old: Any, new: Any, why: str = "") -> None:
        if key not in user_keys:
            out.set(key, old, new, why)

    strategy = _name(trainer.get("strategy"))
    put("trainer.strategy", strategy, "single", "one process")
    put("trainer.num_nodes", trainer.get("num_nodes") or 1, 1)
    put("trainer.devices", trainer.get("devices"), 1, "the first GPU" if gpu else "")
    put("trainer.accelerator", trainer.get("accelerator"), "gpu" if gpu else "cpu")
    if not gpu and str(trainer.get("precision") or "32-true") not in ("32-true", "32", "64-true"):
        put("trainer.precision", trainer.get("precision"), "32-true", "CPU: no bf16 kernels worth timing")
    if "batch_size" in data_args:
        ranks = (trainer.get("num_nodes") or 1) * _device_count(trainer.get("devices"))
        batch = data_args["batch_size"]
        small = max(batch // ranks, 1) if keep_size else min(batch, SMALL_BATCH)
        put("data.batch_size", batch, small, "one device's share" if keep_size else "a small global batch")
    if data_args.get("micro_batch_size") is not None:
        put("data.micro_batch_size", data_args["micro_batch_size"], None)
    if data_args.get("num_workers"):
        put("data.num_workers", data_args["num_workers"], 0, "one batch is read in this process")
    if tiny:
        _tiny(config, put)
    return out


def _tiny(config: dict, put: Any) -> None:
    """`--tiny`: the family's smallest preset, and built-in data where the recipe reads files."""
    model, data = config["model"], config["data"]
    net = (model.get("init_args") or {}).get("net") or {}
    preset = smallest_preset(model.get("class_path", ""))
    if preset and isinstance(net, dict) and "preset" in net:
        put("model.net.preset", net.get("preset"), preset, "the family's smallest")
    kind = str(data.get("class_path", "")).rpartition(".")[2]
    args = data.get("init_args") or {}
    builtin = BUILTIN_SOURCES.get(kind)
    if builtin is None or args.get("source") == builtin:
        if kind == "TextDataModule" and (args.get("block_size") or 0) > TINY_BLOCK:
            put("data.block_size", args["block_size"], TINY_BLOCK)
        return
    put("data.source", args.get("source"), builtin, "built in: no file or download")
    put("data.path", args.get("path"), None)
    if args.get("download"):
        put("data.download", True, False)
    if kind == "TextDataModule":
        put("data.vocab_size", args.get("vocab_size"), None, "from the built-in corpus")
        put("data.tokenizer", args.get("tokenizer"), "char")
        put("data.block_size", args.get("block_size"), min(args.get("block_size") or 64, TINY_BLOCK))
    else:
        put("data.num_samples", args.get("num_samples"), 256)
        put("data.augment_flip", args.get("augment_flip"), False)


def _device_count(devices: Any) -> int:
    if isinstance(devices, list):
        return max(len(devices), 1)
    if isinstance(devices, int) or str(devices).isdigit():
        return max(int(devices), 1)
    return 1
