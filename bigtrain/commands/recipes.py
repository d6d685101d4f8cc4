"""`bigtrain recipes list|show|copy`: the packaged recipes, listed, printed or copied to edit."""

from __future__ import annotations

import shutil
from pathlib import Path

from bigtrain.commands.args import OneLineParser, subcommands
from bigtrain.errors import UserError
from bigtrain.recipes import Recipe, all_recipes, find


def parser() -> OneLineParser:
    """Options of `bigtrain recipes`."""
    top = OneLineParser(prog="bigtrain recipes", description="The packaged recipes.")
    commands = subcommands(
        top,
        {
            "list": "name, family, data and description of every recipe",
            "show": "print a recipe's YAML",
            "copy": "copy a recipe to a file or folder to edit it",
        },
    )
    commands["show"].add_argument("name")
    commands["copy"].add_argument("name")
    commands["copy"].add_argument("dest")
    return top


def main(argv: list[str]) -> int:
    """`bigtrain recipes list|show|copy`."""
    args = parser().parse_args(argv)
    if args.command == "list":
        _print_table(all_recipes())
    elif args.command == "show":
        print(find(args.name).read_text(), end="")
    else:
        dest = copy(args.name, Path(args.dest))
        print(f"copied {args.name} to {dest}; run it with: bigtrain fit --config {dest}")
    return 0


def copy(name: str, dest: Path) -> Path:
    """Copy recipe `name` to the file `dest`, or into the folder `dest`; the new file's path."""
    src = find(name)
    if dest.is_dir():
        dest = dest / src.name
    if dest.exists():
        raise UserError(f"{dest} already exists; choose another destination")
    if not dest.parent.is_dir():
        raise UserError(f"folder {dest.parent} does not exist")
    shutil.copyfile(src, dest)
    return dest


def _print_table(recipes: list[Recipe]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("recipe", "family", "data", "description", box=None, pad_edge=False)
    for r in recipes:
        table.add_row(r.name, r.family, r.data, r.description)
    Console(width=max(Console().width, 120)).print(table)
