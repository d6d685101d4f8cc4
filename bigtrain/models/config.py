"""Typed network configs with named presets, free of torch.

A family's config is a keyword-only dataclass whose first field is `preset`; every other field defaults to
None, meaning "the preset's value". The family's PRESETS table is the one place its defaults live:

    @dataclass(kw_only=True)
    class GPTConfig:
        preset: str = "tiny"
        '''Named preset that supplies every field left unset.'''
        n_layer: int | None = None
        '''Number of transformer blocks.'''

    net = resolve(GPTConfig(preset="small", n_layer=4), PRESETS)   # every field set

The dataclass itself stays unresolved (None = "from the preset") so that a recipe that names another preset
is not shadowed by the default preset's values; the LightningModule resolves it once, in `__init__`, and
stores the resolved dict as its hyper-parameters.

Fields that describe the data (vocabulary size, classes, channels, image size) may be left out of the
presets; they stay None until `fill_from_data` takes them from the DataModule.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from bigtrain.errors import UserError, unknown

C = TypeVar("C")


def resolve(cfg: C, presets: Mapping[str, Mapping[str, Any]]) -> C:
    """A copy of `cfg` with every None field taken from `presets[cfg.preset]` (unknown preset: UserError)."""
    name = cfg.preset  # type: ignore[attr-defined]
    if name not in presets:
        raise unknown(f"{type(cfg).__name__} preset", name, presets)
    names = {f.name for f in dataclasses.fields(cfg)}  # type: ignore[arg-type]
    filled = {}
    for key, value in presets[name].items():
        if key not in names:
            raise KeyError(f"preset {name!r} sets {key!r}, which {type(cfg).__name__} has not")
        if getattr(cfg, key) is None:
            filled[key] = value
    return dataclasses.replace(cfg, **filled)  # type: ignore[type-var]


def as_config(cls: type[C], value: C | Mapping[str, Any]) -> C:
    """Accept a config dataclass or its dict form (as stored in checkpoint hyper-parameters)."""
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        return cls(**value)
    raise TypeError(f"expected {cls.__name__} or a mapping, got {type(value).__name__}")


AT_LEAST = frozenset({"vocab_size", "block_size"})
"""Data-derived fields that may exceed the data's value (padded embeddings, a longer context)."""


def fill_from_data(cfg: Any, data: Any, fields: Mapping[str, str]) -> None:
    """Set data-derived config fields (config field -> DataModule attribute) and check explicit ones.

    A field left None takes the data's value. An explicit value must match it, or for the AT_LEAST fields be
    at least as large.
    """
    for field, attr in fields.items():
        have = getattr(data, attr, None) if data is not None else None
        mine = getattr(cfg, field)
        if mine is None:
            if have is None:
                raise UserError(f"model.net.{field} is not set and the data does not provide '{attr}'")
            setattr(cfg, field, have)
        elif have is not None and (mine < have if field in AT_LEAST else mine != have):
            need = f">= {have}" if field in AT_LEAST else f"{have}"
            raise UserError(
                f"model.net.{field} is {mine} but the data needs {need}; remove it or set it to {have}"
            )


def to_dict(cfg: Any) -> dict[str, Any]:
    """The plain-dict form of a config dataclass (what checkpoints store: no pickled classes)."""
    return dataclasses.asdict(cfg)
