"""`bigtrain submit slurm|torchrun`: resolve a recipe once, write the run directory, launch or print.

The node and device counts given here are written into both the launch command (job script or torchrun
line) and `<run>/config.yaml` by the same code, so the two can never disagree.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shlex
import shutil
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bigtrain.cluster import layout as lay
from bigtrain.cluster import slurm, torchrun
from bigtrain.commands.args import OneLineParser
from bigtrain.errors import UserError, unknown
from bigtrain.files import write_text_atomic
from bigtrain.run_names import new_run_dir, run_name

USAGE = """\
usage: bigtrain submit slurm --recipe NAME [overrides] --nodes N --gpus-per-node G [options] [--dry-run]
       bigtrain submit torchrun --recipe NAME [overrides] --nnodes N --nproc-per-node G
                                --rdzv-endpoint HOST:PORT [--node-rank R] [--run-dir DIR] [--dry-run]

Overrides are `bigtrain fit` options such as --trainer.max_steps 100. `bigtrain submit slurm --help` and
`bigtrain submit torchrun --help` list the options.
"""
SEED_VARIABLES = ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")


def resolve_run_config(recipe: str, overrides: list[str]) -> dict[str, Any]:
    """The recipe plus command-line overrides, resolved exactly as `bigtrain fit` would."""
    from bigtrain.lightning_cli import resolve

    # Parsing seeds the process (with a log line and PL_GLOBAL_SEED in the environment); neither belongs in
    # submit's output or in the environment that sbatch and torchrun pass on to the job.
    saved = {name: os.environ.get(name) for name in SEED_VARIABLES}
    seed_log = logging.getLogger("lightning.fabric.utilities.seed")
    level = seed_log.level
    seed_log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return resolve("fit", ["--recipe", recipe, *overrides])
    finally:
        seed_log.setLevel(level)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", required=True, help="recipe name (bigtrain recipes list) or YAML file")
    parser.add_argument(
        "--accelerator",
        choices=("auto", "gpu", "cpu"),
        default="auto",
        help="device kind; auto: the recipe's trainer.accelerator if set, else what the cluster has",
    )
    parser.add_argument("--run-dir", help="run directory (default: runs/<recipe>/<time>)")
    parser.add_argument(
        "--socket-ifname", help="network interface for gloo and NCCL (sets GLOO_/NCCL_SOCKET_IFNAME)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="write the run directory and print, launch nothing"
    )


def slurm_parser() -> argparse.ArgumentParser:
    """Options of `bigtrain submit slurm`; unknown options are `bigtrain fit` overrides."""
    p = OneLineParser(
        prog="bigtrain submit slurm", allow_abbrev=False, description="Submit a recipe with sbatch."
    )
    _common(p)
    p.add_argument("--nodes", type=int, required=True, help="number of nodes")
    p.add_argument("--gpus-per-node", type=int, required=True, help="ranks per node (CPU processes on CPU)")
    p.add_argument("--partition", help="SLURM partition")
    p.add_argument("--account", help="SLURM account")
    p.add_argument("--time", help="time limit, HH:MM:SS (or D-HH:MM:SS)")
    p.add_argument("--qos", help="SLURM quality of service")
    p.add_argument("--cpus-per-task", type=int, help="CPUs for each rank")
    p.add_argument("--mem", help="memory per node, e.g. 200G")
    p.add_argument(
        "--container-image", help="pyxis/enroot image (srun --container-image) or an Apptainer .sif"
    )
    p.add_argument("--container-mounts", action="append", default=[], help="extra SRC:DST mount (repeatable)")
    p.add_argument("--env", action="extend", nargs="+", default=[], metavar="K=V", help="export in the job")
    p.add_argument(
        "--signal-before", type=int, default=90, help="seconds before the time limit to checkpoint"
    )
    from bigtrain.sweeps.options import add_grid_options

    p.add_argument("--sweep", action="store_true", help="one job array task per point of the --grid options")
    add_grid_options(p)
    p.add_argument("--parallel", type=int, metavar="K", help="with --sweep: at most K array tasks at once")
    return p


def torchrun_parser() -> argparse.ArgumentParser:
    """Options of `bigtrain submit torchrun`; unknown options are `bigtrain fit` overrides."""
    p = OneLineParser(
        prog="bigtrain submit torchrun", allow_abbrev=False, description="Run a recipe with torchrun."
    )
    _common(p)
    p.add_argument("--nnodes", type=int, required=True, help="number of nodes")
    p.add_argument("--nproc-per-node", type=int, required=True, help="ranks on this node")
    p.add_argument(
        "--rdzv-endpoint", help=f"HOST:PORT of node 0 (default {torchrun.DEFAULT_ENDPOINT} on one node)"
    )
    p.add_argument("--node-rank", type=int, help="this node's rank (default: assigned at rendezvous)")
    return p


def resolve_layout(
    args: argparse.Namespace, overrides: list[str], nodes: int, devices: int, gpus: Callable[[], bool | None]
) -> tuple[dict[str, Any], lay.Layout]:
    """Resolve the recipe, pick the accelerator, check the counts; returns (config, layout)."""
    cfg = resolve_run_config(args.recipe, overrides)
    accelerator = args.accelerator
    if accelerator == "auto":
        found = gpus()
        accelerator = lay.configured_accelerator(cfg) or ("cpu" if found is False else "gpu")
    layout = lay.Layout(nodes=nodes, devices_per_node=devices, accelerator=accelerator)
    lay.check_divisible(cfg, layout)
    return cfg, layout


def slurm_job(
    args: argparse.Namespace, layout: lay.Layout, run_dir: Path, array_size: int = 0
) -> slurm.SlurmJob:
    """The job script's settings from the command line."""
    return slurm.SlurmJob(
        layout=layout,
        run_dir=run_dir,
        name=run_name(args.recipe),
        partition=args.partition,
        account=args.account,
        time=args.time,
        qos=args.qos,
        cpus_per_task=args.cpus_per_task,
        mem=args.mem,
        container_image=args.container_image,
        container_mounts=tuple(args.container_mounts),
        socket_ifname=args.socket_ifname,
        env=slurm.parse_env(args.env),
        signal_before=args.signal_before,
        # Inside a container the image's own `bigtrain` runs, wherever this one is installed.
        launcher="bigtrain" if args.container_image else slurm.default_launcher(),
        array_size=array_size,
        array_parallel=args.parallel,
    )


def _write_and_submit(
    job: slurm.SlurmJob, dry_run: bool, wrote: str, folder: Path, existed: bool
) -> str | None:
    """Write the job script; with `dry_run` print it and return None, else sbatch it and return the job id
    (a refused submission removes `folder` when this command created it)."""
    script = slurm.render(job)
    write_text_atomic(job.script_path, script, mode=0o755)
    if dry_run:
        print(script, end="")
        print(f"dry run: wrote {wrote}; submit with: sbatch {job.script_path}", file=sys.stderr)
        return None
    try:
        return slurm.sbatch(job.script_path)
    except UserError:
        if not existed:
            shutil.rmtree(folder, ignore_errors=True)
        raise


def submit_slurm(argv: list[str]) -> int:
    """`bigtrain submit slurm ...`."""
    args, overrides = slurm_parser().parse_known_args(argv)
    if not args.dry_run and shutil.which("sbatch") is None:
        raise UserError("sbatch not found on PATH: run this on a SLURM login node, or use --dry-run")
    if args.sweep or args.grid or args.random is not None or args.parallel is not None:
        return submit_sweep(args, overrides)
    cfg, layout = resolve_layout(
        args, overrides, args.nodes, args.gpus_per_node, lambda: slurm.cluster_has_gpus(args.partition)
    )
    run_dir = new_run_dir(args.recipe, args.run_dir, must_be_new=True)
    job = slurm_job(args, layout, run_dir)
    slurm.check_job(job)  # the values' form first: only a plain name reaches sinfo
    if args.partition:
        slurm.check_partition(args.partition)
    existed = run_dir.exists()
    lay.write_config(run_dir, lay.apply_layout(cfg, layout, run_dir))
    wrote = f"{job.script_path} and {job.config_path}"
    job_id = _write_and_submit(job, args.dry_run, wrote, run_dir, existed)
    if job_id is None:
        return 0
    print(f"submitted SLURM job {job_id}")
    print(f"run directory: {run_dir}")
    print(f"log: {job.log_path(job_id)}")
    return 0


def _resolve_points(
    args: argparse.Namespace, overrides: list[str], points: list[dict[str, Any]]
) -> tuple[list[tuple[dict[str, Any], dict[str, Any]]], lay.Layout]:
    """Each point with its resolved config, and the layout (the same for every point)."""
    from bigtrain.sweeps.spec import point_args

    resolved = []
    for point in points:
        cfg, layout = resolve_layout(
            args,
            [*overrides, *point_args(point["values"])],
            args.nodes,
            args.gpus_per_node,
            lambda: slurm.cluster_has_gpus(args.partition),
        )
        resolved.append((point, cfg))
    return resolved, layout


def submit_sweep(args: argparse.Namespace, overrides: list[str]) -> int:
    """Write the sweep directory (sweep.yaml, each point's config.yaml, job.sbatch) and submit the array."""
    from bigtrain.sweeps.options import build_sweep
    from bigtrain.sweeps.state import write_sweep

    if not args.sweep:
        raise UserError("--grid, --random and --parallel describe a sweep: add --sweep")
    if args.parallel is not None and args.parallel < 1:
        raise UserError(f"--parallel must be at least 1, got {args.parallel}")
    sweep = build_sweep(args.recipe, overrides, args)
    sweep_dir = new_run_dir(args.recipe, args.run_dir, must_be_new=True)
    points, layout = _resolve_points(args, overrides, sweep["points"])
    job = slurm_job(args, layout, sweep_dir, array_size=len(points))
    slurm.check_job(job)
    if args.partition:
        slurm.check_partition(args.partition)
    existed = sweep_dir.exists()
    for point, cfg in points:
        run_dir = sweep_dir / point["dir"]
        lay.write_config(run_dir, lay.apply_layout(cfg, layout, run_dir))
    write_sweep(sweep_dir, sweep)
    job_id = _write_and_submit(job, args.dry_run, f"{sweep_dir} ({len(points)} points)", sweep_dir, existed)
    if job_id is None:
        return 0
    for index, point in enumerate(sweep["points"]):
        point.update(state="submitted", job=f"{job_id}_{index}")
    write_sweep(sweep_dir, sweep)
    print(f"submitted SLURM job array {job_id} ({len(points)} tasks)")
    print(f"sweep directory: {sweep_dir}")
    print(f"logs: {job.log_path(f'{job_id}_N')}")
    print(f"compare: bigtrain runs compare --sweep {sweep_dir}")
    return 0


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def submit_torchrun(argv: list[str]) -> int:
    """`bigtrain submit torchrun ...`: runs torchrun for this host (replacing this process), or prints it."""
    args, overrides = torchrun_parser().parse_known_args(argv)
    if args.nnodes > 1 and not args.run_dir:
        raise UserError(
            "--nnodes > 1 needs --run-dir DIR on a filesystem every node shares (the same on each)"
        )
    if args.nnodes > 1 and not args.rdzv_endpoint:
        raise UserError("--nnodes > 1 needs --rdzv-endpoint HOST:PORT of node 0 (the same on each node)")
    endpoint = args.rdzv_endpoint or torchrun.DEFAULT_ENDPOINT
    torchrun.parse_endpoint(endpoint)
    cfg, layout = resolve_layout(args, overrides, args.nnodes, args.nproc_per_node, _cuda_available)
    run_dir = new_run_dir(args.recipe, args.run_dir, must_be_new=False)
    config = lay.write_config(run_dir, lay.apply_layout(cfg, layout, run_dir))
    job = torchrun.TorchrunJob(
        layout=layout,
        config=config,
        endpoint=endpoint,
        node_rank=args.node_rank,
        run_id=re.sub(r"[^A-Za-z0-9_-]", "-", f"bigtrain-{run_dir.name}"),
        socket_ifname=args.socket_ifname,
    )
    cmd, env = torchrun.command(job), torchrun.environment(job)
    shown = " ".join([*(f"{k}={shlex.quote(v)}" for k, v in env.items()), shlex.join(cmd)])
    if args.dry_run:
        print(shown)
        print(f"dry run: wrote {config}; run the command above on each node", file=sys.stderr)
        return 0
    print(f"run directory: {run_dir}\nrunning: {shown}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os.execve(cmd[0], cmd, {**os.environ, **env})
    return 1  # not reached: execve replaces this process


def main(argv: list[str]) -> int:
    """`bigtrain submit <slurm|torchrun> ...`."""
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    targets = {"slurm": submit_slurm, "torchrun": submit_torchrun}
    if argv[0] not in targets:
        raise unknown("submit target", argv[0], targets)
    return targets[argv[0]](argv[1:])
