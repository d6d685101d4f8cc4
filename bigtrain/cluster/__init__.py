"""Running recipes on clusters: SLURM job scripts, torchrun commands, and the job list.

`bigtrain submit slurm|torchrun` (bigtrain.commands.submit) resolves a recipe once into `<run>/config.yaml`,
with the node and device counts that also go into the launch command, and every rank runs
`bigtrain fit --config <run>/config.yaml --ckpt_path auto`.

Modules: `layout` (the counts and the config they go into), `environment` (network variables and Lightning's
cluster plugins), `slurm` and `torchrun` (the launch commands).
"""
