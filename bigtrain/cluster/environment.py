"""What a rank's environment says about where it runs: network interface variables for the launchers,
and the Lightning cluster plugins for the process itself."""

from __future__ import annotations

import re
from typing import Any

from bigtrain.errors import UserError

_IFNAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")
"""A Linux network interface name (at most 15 characters)."""


def socket_variables(ifname: str | None) -> dict[str, str]:
    """GLOO_SOCKET_IFNAME and NCCL_SOCKET_IFNAME naming the network interface `ifname`; none when unset."""
    if not ifname:
        return {}
    if not _IFNAME.fullmatch(ifname):
        raise UserError(f"--socket-ifname {ifname!r} is not a network interface name (e.g. eth0, ib0)")
    # gloo and NCCL otherwise advertise the address the hostname resolves to, often a loopback one.
    return {"GLOO_SOCKET_IFNAME": ifname, "NCCL_SOCKET_IFNAME": ifname}


def environment_plugins() -> list[Any]:
    """Trainer plugins for where this process runs: under `srun`, SLURM without Lightning's auto-requeue.

    Lightning's own SLURM requeue saves a checkpoint inside the signal handler; bigtrain's Preemption
    callback saves at the next step boundary instead, so Lightning's is switched off.
    """
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    # torchrun started inside a SLURM allocation sets its own ranks; those win over SLURM's.
    if TorchElasticEnvironment.detect() or not SLURMEnvironment.detect():
        return []
    return [SLURMEnvironment(auto_requeue=False)]
