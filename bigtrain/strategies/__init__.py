"""Strategy plugins: one `trainer.strategy` setting switches single device, DDP and FSDP2 (x tensor parallel).

`--trainer.strategy single|ddp|fsdp|auto` picks one with its defaults; options follow as
`--trainer.strategy.<option> VALUE` (e.g. `--trainer.strategy fsdp --trainer.strategy.mixed_precision bf16`).
In a recipe, `strategy: fsdp` or `strategy: {class_path: fsdp, init_args: {...}}`. The README's
"Strategies" section lists the options.

A family applies its sharding plan with one call in `configure_model()`:
`self.net = parallelize(self, lambda: Net(cfg))`, imported from `bigtrain.strategies.parallelize` (not from
this package: the function shares its module's name, and once that module is imported the package's
attribute of that name is the module).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bigtrain.strategies.batch import data_parallel
    from bigtrain.strategies.ddp import DDP, Single
    from bigtrain.strategies.fsdp import FSDP
    from bigtrain.strategies.mesh import global_randn, rank_rows
    from bigtrain.strategies.resolve import (
        STRATEGY_CLASSES,
        STRATEGY_NAMES,
        expand_strategy_argv,
        resolve_strategy,
    )

# Imported on first use (PEP 562): the strategies pull in torch and Lightning, which the cluster code and
# the data-parallel arithmetic in `batch` must not pay for.
_EXPORTS = {
    "DDP": "ddp",
    "FSDP": "fsdp",
    "STRATEGY_CLASSES": "resolve",
    "STRATEGY_NAMES": "resolve",
    "Single": "ddp",
    "data_parallel": "batch",
    "expand_strategy_argv": "resolve",
    "global_randn": "mesh",
    "rank_rows": "mesh",
    "resolve_strategy": "resolve",
}

__all__ = [
    "DDP",
    "FSDP",
    "STRATEGY_CLASSES",
    "STRATEGY_NAMES",
    "Single",
    "data_parallel",
    "expand_strategy_argv",
    "global_randn",
    "rank_rows",
    "resolve_strategy",
]


def __getattr__(name: str) -> Any:
    """A public name, importing the submodule that defines it."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
