"""One source for a cluster run's shape: the counts that go into both the launch command and config.yaml,
and the environment every launcher (SLURM, torchrun) gives the ranks."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bigtrain.errors import UserError
from bigtrain.files import write_text_atomic
from bigtrain.run_names import run_name

ACCELERATORS = ("gpu", "cpu")
# Strategy settings that mean "one process". With more ranks they become `auto`, which bigtrain resolves
# for the counts in the config (DDP, or FSDP when the model needs it).
SINGLE_PROCESS_STRATEGIES = ("single", "single_device", "bigtrain.strategies.single")
_IFNAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")
"""A Linux network interface name (at most 15 characters)."""


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


def socket_variables(ifname: str | None) -> dict[str, str]:
    """GLOO_SOCKET_IFNAME and NCCL_SOCKET_IFNAME naming the network interface `ifname`; none when unset."""
    if not ifname:
        return {}
    if not _IFNAME.fullmatch(ifname):
        raise UserError(f"--socket-ifname {ifname!r} is not a network interface name (e.g. eth0, ib0)")
    # gloo and NCCL otherwise advertise the address the hostname resolves to, often a loopback one.
    return {"GLOO_SOCKET_IFNAME": ifname, "NCCL_SOCKET_IFNAME": ifname}


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
    ranks = f"{layout.nodes} node(s) x {layout.devices_per_node} device(s) = {layout.world_size} ranks"
    strategy = _strategy_args(cfg)
    tp = strategy.get("tensor_parallel_size") or 1
    if layout.world_size % tp:
        raise UserError(f"trainer.strategy.tensor_parallel_size {tp} does not divide {ranks}")
    dp = layout.world_size // tp
    given_dp = strategy.get("data_parallel_size")
    if given_dp and given_dp != dp:
        raise UserError(
            f"trainer.strategy.data_parallel_size {given_dp} x tensor_parallel_size {tp} must equal {ranks}"
        )
    data = _section(cfg, "data")
    batch, micro = data.get("batch_size"), data.get("micro_batch_size")
    if isinstance(batch, int) and batch % dp:
        where = (
            ranks if dp == layout.world_size else f"{dp} data-parallel ranks ({ranks}, tensor parallel {tp})"
        )
        raise UserError(
            f"data.batch_size {batch} (the global batch) does not divide across {where}; "
            f"use a multiple of {dp} or other counts"
        )
    if isinstance(batch, int) and isinstance(micro, int) and (batch // dp) % micro:
        raise UserError(
            f"data.micro_batch_size {micro} does not divide the per-device batch {batch // dp} "
            f"(data.batch_size {batch} / {dp} data-parallel ranks)"
        )


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


def new_run_dir(recipe: str, given: str | None, *, must_be_new: bool) -> Path:
    """The run directory as an absolute path: `given`, or `runs/<recipe>/<time>` under the current folder."""
    if given:
        if any(ord(c) < 32 or ord(c) == 127 for c in given):
            raise UserError(f"--run-dir {given!r} contains a control character (newline, tab, ...)")
        path = Path(given).expanduser().absolute()
    else:
        path = Path("runs", run_name(recipe), time.strftime("%Y%m%d-%H%M%S")).absolute()
        n = 1
        while path.exists():
            n += 1
            path = path.with_name(f"{time.strftime('%Y%m%d-%H%M%S')}-{n}")
    if must_be_new and path.exists() and any(path.iterdir()):
        raise UserError(f"run directory {path} already exists and is not empty; choose a new --run-dir")
    return path


def write_config(run_dir: Path, cfg: dict[str, Any]) -> Path:
    """Write `<run_dir>/config.yaml`; returns its path."""
    path = run_dir / "config.yaml"
    write_text_atomic(path, yaml.safe_dump(cfg, sort_keys=False))
    return path
