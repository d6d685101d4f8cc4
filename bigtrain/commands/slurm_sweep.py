"""`bigtrain submit slurm --sweep --grid ...`: one SLURM job array, one task per sweep point, each task
running its point's config with `--ckpt_path auto` so that a preempted task is requeued and resumes alone."""

from __future__ import annotations

import argparse
import shutil
import sys
from typing import Any

from bigtrain.cluster import layout as lay
from bigtrain.cluster import slurm
from bigtrain.errors import UserError
from bigtrain.files import write_text_atomic
from bigtrain.run_names import new_run_dir


def submit_sweep(args: argparse.Namespace, overrides: list[str]) -> int:
    """Write the sweep directory (sweep.yaml, each point's config.yaml, job.sbatch) and submit the array."""
    from bigtrain.commands.submit import resolve_layout, slurm_job
    from bigtrain.commands.sweep import build_sweep
    from bigtrain.sweeps.spec import point_args
    from bigtrain.sweeps.state import write_sweep

    if not args.sweep:
        raise UserError("--grid, --random and --parallel describe a sweep: add --sweep")
    if args.parallel is not None and args.parallel < 1:
        raise UserError(f"--parallel must be at least 1, got {args.parallel}")
    sweep = build_sweep(args.recipe, overrides, args)
    sweep_dir = new_run_dir(args.recipe, args.run_dir, must_be_new=True)
    points: list[tuple[dict[str, Any], dict[str, Any]]] = []
    layout = None
    for point in sweep["points"]:
        cfg, layout = resolve_layout(
            args,
            [*overrides, *point_args(point["values"])],
            args.nodes,
            args.gpus_per_node,
            lambda: slurm.cluster_has_gpus(args.partition),
        )
        points.append((point, cfg))
    assert layout is not None  # a sweep has at least one point
    job = slurm_job(args, layout, sweep_dir, array_size=len(points))
    slurm.check_job(job)
    if args.partition:
        slurm.check_partition(args.partition)
    existed = sweep_dir.exists()
    for point, cfg in points:
        run_dir = sweep_dir / point["dir"]
        lay.write_config(run_dir, lay.apply_layout(cfg, layout, run_dir))
    script = slurm.render(job)
    write_text_atomic(job.script_path, script, mode=0o755)
    write_sweep(sweep_dir, sweep)
    if args.dry_run:
        print(script, end="")
        print(f"dry run: wrote {sweep_dir} ({len(points)} points); submit with: sbatch {job.script_path}",
              file=sys.stderr)  # fmt: skip
        return 0
    try:
        job_id = slurm.sbatch(job.script_path)
    except UserError:
        if not existed:
            shutil.rmtree(sweep_dir, ignore_errors=True)
        raise
    for index, point in enumerate(sweep["points"]):
        point.update(state="submitted", job=f"{job_id}_{index}")
    write_sweep(sweep_dir, sweep)
    print(f"submitted SLURM job array {job_id} ({len(points)} tasks)")
    print(f"sweep directory: {sweep_dir}")
    print(f"logs: {job.log_path(f'{job_id}_N')}")
    print(f"compare: bigtrain runs compare --sweep {sweep_dir}")
    return 0
