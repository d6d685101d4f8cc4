"""One source for a cluster run's shape: the counts that go into both the launch command and config.yaml,
checked against the recipe's strategy and global batch before the job waits in a queue."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bigtrain.errors import UserError
from bigtrain.files import write_text_atomic
from bigtrain.strategies.batch import split_batch, split_ranks

ACCELERATORS = ("gpu", "cpu")
# Strategy settings that mean "one process". With more ranks they become `auto`, which bigtrain resolves
# for the counts in the config (DDP, or FSDP when the model needs it).
SINGLE_PROCESS_STRATEGIES = ("single", "single_device", "bigtrain.strategies.single")


@dataclass(frozen=True)
class Layout:
    """How many nodes, how many ranks (devices) on each, and on which kind of device."""

    nodes: int
    """Number of nodes (hosts)."""
    devices_per_node: int
    """Ranks per node: one per GPU, or CPU processes per node on a CPU-only cluster."""
    accelerator: str
    """`gpu` or `cpu`."""

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise UserError(f"the number of nodes must be >= 1, got {self.nodes}")
        if self.devices_per_node < 1:
            raise UserError(f"the number of devices per node must be >= 1, got {self.devices_per_node}")
        if self.accelerator not in ACCELERATORS:
            raise UserError(f"accelerator must be one of {', '.join(ACCELERATORS)}, got '{self.accelerator}'")

    @property
    def world_size(self) -> int:
        """Total number of ranks."""
        return self.nodes * self.devices_per_node


def _section(cfg: dict[str, Any], key: str) -> dict[str, Any]:
    """A config section's arguments, whether written flat or as {class_path, init_args}."""
    value = cfg.get(key)
    if not isinstance(value, dict):
        return {}
    args = value.get("init_args")
    return args if isinstance(args, dict) else value


def configured_accelerator(cfg: dict[str, Any]) -> str | None:
    """`cpu` or `gpu` when the resolved config asks for one explicitly, else None."""
    value = (cfg.get("trainer") or {}).get("accelerator")
    if value == "cpu":
        return "cpu"
    if value in ("gpu", "cuda"):
        return "gpu"
    return None


def _strategy_args(cfg: dict[str, Any]) -> dict[str, Any]:
    strategy = (cfg.get("trainer") or {}).get("strategy")
    args = strategy.get("init_args") if isinstance(strategy, dict) else None
    return args if isinstance(args, dict) else {}


def check_divisible(cfg: dict[str, Any], layout: Layout) -> None:
    """Refuse counts the run would reject only after waiting in the queue."""
    strategy = _strategy_args(cfg)
    tp = strategy.get("tensor_parallel_size")
    ranks = split_ranks(
        layout.world_size, 1 if tp is None else tp, strategy.get("data_parallel_size"), nodes=layout.nodes
    )
    data = _section(cfg, "data")
    batch, micro = data.get("batch_size"), data.get("micro_batch_size")
    if isinstance(batch, int):
        split_batch(batch, ranks, micro if isinstance(micro, int) else None)


def _single_process(strategy: Any) -> bool:
    """Whether a `trainer.strategy` value runs one process (a name, a class path, or {class_path: ...})."""
    if isinstance(strategy, dict):
        strategy = strategy.get("class_path")
    return strategy is None or (isinstance(strategy, str) and strategy.lower() in SINGLE_PROCESS_STRATEGIES)


def apply_layout(cfg: dict[str, Any], layout: Layout, run_dir: Path) -> dict[str, Any]:
    """The config with the layout's counts and the run directory written in (a new dict)."""
    cfg = dict(cfg)
    trainer = dict(cfg.get("trainer") or {})
    trainer["num_nodes"] = layout.nodes
    trainer["devices"] = layout.devices_per_node
    trainer["accelerator"] = layout.accelerator
    if layout.world_size > 1 and _single_process(trainer.get("strategy")):
        trainer["strategy"] = "auto"
    cfg["trainer"] = trainer
    cfg["run_dir"] = str(run_dir)
    # Every rank resumes from the run directory; a fixed checkpoint in the recipe would override that.
    cfg.pop("ckpt_path", None)
    return cfg


def write_config(run_dir: Path, cfg: dict[str, Any]) -> Path:
    """Write `<run_dir>/config.yaml`; returns its path."""
    path = run_dir / "config.yaml"
    write_text_atomic(path, yaml.safe_dump(cfg, sort_keys=False))
    return path
