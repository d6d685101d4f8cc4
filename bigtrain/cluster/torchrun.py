"""Multi-node without SLURM: the torchrun command that runs a resolved config on this host."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from bigtrain.cluster.environment import socket_variables
from bigtrain.cluster.layout import Layout
from bigtrain.errors import UserError

DEFAULT_ENDPOINT = "127.0.0.1:29500"


@dataclass(frozen=True)
class TorchrunJob:
    """One host's share of a multi-node run started with torchrun."""

    layout: Layout
    config: Path
    endpoint: str
    """HOST:PORT of node 0, the same on every node."""
    node_rank: int | None = None
    """This host's node rank; None lets the c10d rendezvous assign ranks in order of arrival."""
    run_id: str = "bigtrain"
    """Rendezvous id (c10d): the same on every node of one run, different between runs."""
    socket_ifname: str | None = None


def parse_endpoint(value: str) -> tuple[str, int]:
    """`HOST:PORT` -> (host, port)."""
    host, sep, port = value.rpartition(":")
    plain_host = re.fullmatch(r"\[?[A-Za-z0-9_.:-]+\]?", host) is not None
    if not sep or not plain_host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--rdzv-endpoint {value!r} is not HOST:PORT (e.g. node0:29500)")
    return host.strip("[]"), int(port)


def torchrun_executable() -> list[str]:
    """torchrun beside this Python, or this Python running torch's launcher module."""
    beside = Path(sys.executable).with_name("torchrun")
    return [str(beside)] if beside.exists() else [sys.executable, "-m", "torch.distributed.run"]


def command(job: TorchrunJob) -> list[str]:
    """The torchrun command line for this host."""
    layout = job.layout
    host, port = parse_endpoint(job.endpoint)
    socket_variables(job.socket_ifname)  # refuses a name that is no interface name
    if job.node_rank is not None and not 0 <= job.node_rank < layout.nodes:
        raise UserError(
            f"--node-rank {job.node_rank} is outside 0..{layout.nodes - 1} for --nnodes {layout.nodes}"
        )
    args = [f"--nnodes={layout.nodes}", f"--nproc-per-node={layout.devices_per_node}"]
    if job.node_rank is not None or layout.nodes == 1:
        # Static rendezvous: node ranks are what the user said, so logs and hosts line up.
        args += [f"--node-rank={job.node_rank or 0}", f"--master-addr={host}", f"--master-port={port}"]
    else:
        args += ["--rdzv-backend=c10d", f"--rdzv-endpoint={host}:{port}", f"--rdzv-id={job.run_id}"]
    program = ["-m", "bigtrain", "fit", "--config", str(job.config), "--ckpt_path", "auto"]
    return [*torchrun_executable(), *args, *program]


def environment(job: TorchrunJob) -> dict[str, str]:
    """Variables to set for torchrun beyond the current environment."""
    return socket_variables(job.socket_ifname)
