"""Running recipes on clusters: SLURM job scripts, torchrun commands, and the job list.

`bigtrain submit slurm|torchrun` (bigtrain.commands.submit) resolves a recipe once into `<run>/config.yaml`,
with the node and device counts that also go into the launch command, and every rank runs
`bigtrain fit --config <run>/config.yaml --ckpt_path auto`.
"""

from __future__ import annotations

from typing import Any


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
