"""Strategy plugins: one `trainer.strategy` setting switches single device, DDP and FSDP2 (x tensor parallel).

`--trainer.strategy single|ddp|fsdp|auto` picks one with its defaults; options follow as
`--trainer.strategy.<option> VALUE` (e.g. `--trainer.strategy fsdp --trainer.strategy.mixed_precision bf16`).
In a recipe, `strategy: fsdp` or `strategy: {class_path: fsdp, init_args: {...}}`. See docs/strategies.md.

A family applies its sharding plan with one call in `configure_model()`:
`self.net = parallelize(self, lambda: Net(cfg))`.
"""

from bigtrain.strategies.ddp import DDP, Single
from bigtrain.strategies.fsdp import FSDP
from bigtrain.strategies.mesh import data_parallel, global_randn, rank_rows
from bigtrain.strategies.parallelize import parallelize
from bigtrain.strategies.resolve import (
    STRATEGY_CLASSES,
    STRATEGY_NAMES,
    expand_strategy_argv,
    resolve_strategy,
)

__all__ = [
    "DDP",
    "FSDP",
    "STRATEGY_CLASSES",
    "STRATEGY_NAMES",
    "Single",
    "data_parallel",
    "expand_strategy_argv",
    "global_randn",
    "parallelize",
    "rank_rows",
    "resolve_strategy",
]
