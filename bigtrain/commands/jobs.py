"""`bigtrain jobs [--user NAME]`: this user's bigtrain SLURM jobs with their state and run directory."""

from __future__ import annotations

import getpass

from bigtrain.cluster.jobs import format_table, list_jobs
from bigtrain.commands.args import OneLineParser


def main(argv: list[str]) -> int:
    """`bigtrain jobs [--user NAME]`."""
    parser = OneLineParser(prog="bigtrain jobs", description="List bigtrain SLURM jobs.")
    parser.add_argument("--user", default=getpass.getuser(), help="whose jobs (default: you)")
    args = parser.parse_args(argv)
    jobs = list_jobs(args.user)
    print(format_table(jobs) if jobs else f"no bigtrain jobs for {args.user}")
    return 0
