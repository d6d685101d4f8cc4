"""`bigtrain recipes list|show|copy|new|check|diff`: find, read, start, check and compare recipes."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

from bigtrain.commands.args import OneLineParser, subcommands
from bigtrain.errors import UserError
from bigtrain.recipes import NAME_PATTERN, Recipe, base_chain, find, found_recipes, lookup

EXAMPLE_KEYS = ("model.init_args.optim.lr", "trainer.max_steps", "trainer.max_epochs")
"""Keys `recipes new` shows as a commented example override, the first one the base sets."""


def parser() -> OneLineParser:
    """Options of `bigtrain recipes`."""
    top = OneLineParser(
        prog="bigtrain recipes", description="Recipes: packaged, your own, checked, compared."
    )
    commands = subcommands(
        top,
        {
            "list": "name, origin, data and description of every recipe",
            "show": "print a recipe's YAML",
            "copy": "copy a recipe to a file or folder to edit it",
            "new": "write a recipe built on another into ./recipes, holding only its differences",
            "check": "resolve a recipe and build it on the meta device (no data read), or say what is broken",
            "diff": "the resolved keys in which two recipes differ",
        },
    )
    commands["show"].add_argument("name")
    commands["copy"].add_argument("name")
    commands["copy"].add_argument("dest")
    commands["new"].add_argument("name", help="family/name or name: written to ./recipes/<name>.yaml")
    commands["new"].add_argument(
        "--from", dest="base", required=True, help="the recipe (or YAML file) to build on"
    )
    commands["check"].add_argument("recipe", help="recipe name or YAML file; other options are overrides")
    commands["diff"].add_argument("a", help="recipe name or YAML file")
    commands["diff"].add_argument("b", help="recipe name or YAML file")
    return top


def main(argv: list[str]) -> int:
    """`bigtrain recipes list|show|copy|new|check|diff`."""
    args, overrides = parser().parse_known_args(argv)
    if overrides and args.command != "check":
        raise UserError(f"bigtrain recipes {args.command}: unrecognized arguments: {' '.join(overrides)}")
    if args.command == "list":
        _print_table(found_recipes())
    elif args.command == "show":
        print(find(args.name).read_text(), end="")
    elif args.command == "copy":
        dest = copy(args.name, Path(args.dest))
        print(f"copied {args.name} to {dest}; run it with: bigtrain fit --config {dest}")
    elif args.command == "new":
        dest = new(args.name, args.base)
        name = _clean_name(args.name)
        print(
            f"wrote {dest}; run it with: bigtrain fit --recipe {name}; "
            f"compare: bigtrain recipes diff {args.base} {name}"
        )
    elif args.command == "check":
        from bigtrain.recipe_check import check

        print("\n".join(check(args.recipe, overrides).lines()))
    else:
        _print_diff(args.a, args.b)
    return 0


def copy(name: str, dest: Path) -> Path:
    """Copy recipe `name` to the file `dest`, or into the folder `dest`; the new file's path.

    A `base:` given as a path relative to the recipe is rewritten to the base's recipe name (or its absolute
    path), so the copy still finds it."""
    src = find(name)
    if dest.is_dir():
        dest = dest / src.name
    if dest.exists():
        raise UserError(f"{dest} already exists; choose another destination")
    if not dest.parent.is_dir():
        raise UserError(f"folder {dest.parent} does not exist")
    text = src.read_text()
    base = lookup([src], "base")
    if isinstance(base, str) and base.endswith((".yaml", ".yml")):
        line = f"base: {_base_value(base_chain(src)[-2], dest)}"
        text = re.sub(r"(?m)^base:.*$", lambda _: line, text, count=1)
        dest.write_text(text)
    else:
        shutil.copyfile(src, dest)
    return dest


def new(name: str, base: str) -> Path:
    """Write `./recipes/<name>.yaml` holding a `base:` line and a commented example override; its path."""
    clean = _clean_name(name)
    base_path = find(base)
    chain = base_chain(base_path)  # a broken base fails now, not at the first run
    dest = Path("recipes") / f"{clean}.yaml"
    if dest.exists():
        raise UserError(f"{dest} already exists; choose another name or edit it")
    key = next((k for k in EXAMPLE_KEYS if lookup(chain, k) is not None), "trainer.max_steps")
    value = lookup(chain, key) or 100
    parts = key.split(".")
    example = [f"# {'  ' * depth}{part}:" for depth, part in enumerate(parts[:-1])]
    example.append(f"# {'  ' * (len(parts) - 1)}{parts[-1]}: {value}")
    text = [
        f"# bigtrain fit --recipe {clean}",
        f"# Like {base}, with the changes below.",
        f"base: {_base_value(base_path, dest)}",
        "# Any key of the base can be changed here, for example (the base's value):",
        *example,
    ]
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "x") as out:  # "x": never overwrite, even a file that appeared meanwhile
        out.write("\n".join(text) + "\n")
    return dest


def _clean_name(name: str) -> str:
    """`name` or `family/name`, each part a plain file name (no `..`, no absolute path); else a UserError."""
    clean = name.removesuffix(".yaml")
    if not NAME_PATTERN.fullmatch(clean):
        raise UserError(
            f"recipe name {name!r} must be `name` or `family/name` of letters, digits, '_', '-' and '.', "
            "not starting with '.' or '-'"
        )
    return clean


def _base_value(base: Path, dest: Path) -> str:
    """How a recipe at `dest` names `base`: its recipe name when `base` is the recipe that name finds
    (from the new file's folder), else the path relative to `dest`."""
    for recipe in found_recipes():
        if recipe.path.resolve() == base.resolve():
            try:
                if find(recipe.name, skip=dest if dest.exists() else None).resolve() == base.resolve():
                    return recipe.name
            except UserError:
                pass
    return os.path.relpath(base.resolve(), dest.parent.resolve())


def _print_table(recipes: list[Recipe]) -> None:
    """A rich table on a terminal; plain aligned lines otherwise (nothing wrapped or cut, for scripts)."""
    winner: dict[str, Recipe] = {}
    for r in recipes:
        winner.setdefault(r.name, r)
    rows = []
    for r in recipes:
        where = r.source
        if winner[r.name] is not r:
            where += f" (hidden by {winner[r.name].source})"
        elif sum(x.name == r.name for x in recipes) > 1:
            where += " (wins)"
        rows.append((r.name, where, _data(r), r.description))
    header = ("recipe", "from", "data", "description")
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(*header, box=None, pad_edge=False)
        for row in rows:
            table.add_row(*row)
        Console(width=max(Console().width, 120)).print(table)
        return
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    for row in [header, *rows]:
        print("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[3]]).rstrip())


def _data(recipe: Recipe) -> str:
    """The data column; a recipe whose chain is broken says so instead of stopping the list."""
    try:
        return recipe.data
    except UserError:
        return "(broken: see recipes check)"


def _print_diff(a: str, b: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from bigtrain.recipe_check import differences, resolved

    rows = differences(resolved(a, []), resolved(b, []))
    if not rows:
        print(f"{a} and {b} resolve to the same config")
        return
    table = Table("key", a, b, box=None, pad_edge=False)
    for key, va, vb in rows:
        table.add_row(key, str(va), str(vb))
    Console(width=max(Console().width, 120)).print(table)
