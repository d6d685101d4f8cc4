"""`--config` files vetted before jsonargparse reads them: YAML errors with line and column, size limits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bigtrain.errors import UserError


def option_values(args: list[str], *flags: str) -> list[str]:
    """The values given to any of these options, as `--flag value` or `--flag=value`."""
    values = [a.split("=", 1)[1] for a in args if a.split("=", 1)[0] in flags and "=" in a]
    return values + [value for flag, value in zip(args, args[1:], strict=False) if flag in flags]


def check_config_files(args: list[str]) -> None:
    """A `--config` file that is not valid YAML, named with the line and column where it breaks (jsonargparse
    reports only the parser's first complaint, without the file); a file too large, or whose aliases expand
    past MAX_YAML_NODES (a "billion laughs" bomb of nested anchors), is refused before anything expands it."""
    for value in option_values(args, "--config", "-c"):
        if Path(value).is_file():
            check_config_file(Path(value), f"--config {value}")


def check_config_file(path: Path, label: str) -> None:
    """Refuse the YAML file `path` (`label` in messages) when too large, invalid or an alias bomb."""
    import yaml

    if path.stat().st_size > MAX_YAML_BYTES:
        raise UserError(f"{label} is {path.stat().st_size} bytes; a recipe is at most {MAX_YAML_BYTES} bytes")
    try:
        root = yaml.compose(path.read_text(encoding="utf-8", errors="replace"), Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "unreadable"
        raise UserError(f"{label} is not valid YAML: {problem}{where}") from err
    if root is not None and _expanded_nodes(root, {}) > MAX_YAML_NODES:
        raise UserError(
            f"{label} expands to more than {MAX_YAML_NODES} values through its aliases "
            f"(*name); write the values out, or use fewer nested aliases"
        )


MAX_YAML_BYTES = 1 << 20
"""Largest `--config` file read: recipes are a few kilobytes."""
MAX_YAML_NODES = 100_000
"""Most values a `--config` file may expand to once every alias is replaced by what it names."""


def _expanded_nodes(node: Any, sizes: dict[int, int]) -> int:
    """How many values `node` stands for with every alias expanded (each shared node counted once per use,
    computed once: linear in the file, however far the aliases would expand)."""
    if id(node) in sizes:
        return sizes[id(node)]
    sizes[id(node)] = MAX_YAML_NODES + 1  # a node inside itself (a recursive alias) expands without end
    children: list[Any] = []
    if isinstance(node.value, list):
        for item in node.value:
            children += list(item) if isinstance(item, tuple) else [item]
    total = 1 + sum(_expanded_nodes(child, sizes) for child in children)
    sizes[id(node)] = min(total, 10 * MAX_YAML_NODES)  # capped: no huge integers for deeper levels
    return sizes[id(node)]
