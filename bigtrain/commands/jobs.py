"""`bigtrain jobs [--user NAME] [--days N]`: this user's bigtrain SLURM jobs, their state and run dir."""

from __future__ import annotations

import getpass
import re

from bigtrain.cluster.jobs import format_table, list_jobs
from bigtrain.commands.args import OneLineParser
from bigtrain.errors import UserError


def main(argv: list[str]) -> int:
    """`bigtrain jobs [--user NAME] [--days N]`."""
    parser = OneLineParser(prog="bigtrain jobs", description="List bigtrain SLURM jobs.")
    parser.add_argument("--user", default=getpass.getuser(), help="whose jobs (default: you)")
    parser.add_argument(
        "--days", type=int, default=7, help="finished jobs started in the last N days, from sacct (default 7)"
    )
    args = parser.parse_args(argv)
    if not re.fullmatch(r"[A-Za-z0-9_.][A-Za-z0-9_.@-]{0,63}", args.user):
        raise UserError(f"--user: not a user name: {args.user!r}")
    if not 1 <= args.days <= 3660:
        raise UserError(f"--days must be between 1 and 3660, got {args.days!r}")
    jobs = list_jobs(args.user, args.days)
    print(format_table(jobs) if jobs else f"no bigtrain jobs for {args.user}")
    return 0
