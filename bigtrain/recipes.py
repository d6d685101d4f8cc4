"""Recipes: where they are found, finding one by name, and the chain of bases a recipe builds on.

A recipe is a LightningCLI config file `<folder>/<family>/<name>.yaml` (or `<folder>/<name>.yaml`) whose
first comment line is the command that launches it and whose next comment lines describe it. Folders are
searched in order, and the first one holding a name wins: `./recipes` of the current directory, then each
folder of BIGTRAIN_RECIPES (an os.pathsep list), then the packaged recipes.

A recipe may start from another with `base: NAME` (a recipe name, or a YAML path relative to the recipe's
own file) and hold only its differences: `--recipe leaf` becomes `--config base --config middle --config
leaf`, which LightningCLI stacks in order.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bigtrain.errors import UserError, unknown

RECIPES_ENV = "BIGTRAIN_RECIPES"
"""os.pathsep-separated folders of the user's own recipes."""
MAX_CHAIN = 16
"""Most recipes one chain of bases may hold (a longer one is almost surely a mistake)."""
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?")
"""A recipe name: `name` or `family/name`, each part a plain file name."""


def recipes_dir() -> Path:
    """The folder holding the packaged recipes: inside the package, or the source tree's `recipes/`."""
    try:
        from importlib.resources import files

        shipped = Path(str(files("bigtrain._recipes")))
        if shipped.is_dir():
            return shipped
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parent.parent / "recipes"


def search_path() -> list[tuple[str, Path]]:
    """(label, folder) of every recipe folder, the winner of a name first; each folder once."""
    folders = [("./recipes", Path("recipes"))]
    env = os.environ.get(RECIPES_ENV, "")
    folders += [(part, Path(part)) for part in env.split(os.pathsep) if part]
    packaged = recipes_dir().resolve()
    seen, out = {packaged}, []
    for label, folder in folders:
        real = folder.resolve()
        if real not in seen and folder.is_dir():
            seen.add(real)
            out.append((label, folder))
    return [*out, ("packaged", packaged)]


@dataclass(frozen=True)
class Recipe:
    """One recipe file, where it was found, and what its header and body say about it."""

    name: str
    path: Path
    source: str = "packaged"
    """The folder it was found in: `packaged`, `./recipes` or a BIGTRAIN_RECIPES entry."""

    @property
    def family(self) -> str:
        """The model family, the recipe's folder."""
        return self.name.split("/")[0] if "/" in self.name else ""

    def header(self) -> list[str]:
        """The leading comment lines, without '#'."""
        lines = []
        for line in self.path.read_text().splitlines():
            if not line.startswith("#"):
                break
            lines.append(line.lstrip("#").strip())
        return lines

    @property
    def command(self) -> str:
        """The launch command from the first header line."""
        head = self.header()
        return head[0] if head else f"bigtrain fit --recipe {self.name}"

    @property
    def description(self) -> str:
        """The one-line description from the header lines after the command (not the `cpu-test:` line)."""
        return " ".join(line for line in self.header()[1:] if line and not line.startswith("cpu-test:"))

    @property
    def data(self) -> str:
        """Short description of the data: the DataModule and its source."""
        chain = base_chain(self.path)
        kind = str(lookup(chain, "data.class_path") or "?").rsplit(".", 1)[-1]
        source = lookup(chain, "data.init_args.source")
        kind = kind.replace("DataModule", "").lower()
        return f"{kind}:{source}" if source else kind


def found_recipes() -> list[Recipe]:
    """Every recipe file of every folder, winners before the names they hide, sorted by name."""
    out = []
    for label, root in search_path():
        files = sorted([*root.glob("*.yaml"), *root.glob("*/*.yaml")])
        out += [Recipe(p.relative_to(root).with_suffix("").as_posix(), p, label) for p in files]
    return sorted(out, key=lambda r: r.name)  # stable: within a name, search order stays


def all_recipes() -> list[Recipe]:
    """The recipe each name stands for (the first folder's), sorted by name."""
    winners: dict[str, Recipe] = {}
    for recipe in found_recipes():
        winners.setdefault(recipe.name, recipe)
    return list(winners.values())


def packaged_recipes() -> list[Recipe]:
    """The recipes shipped with bigtrain, sorted by name."""
    return [r for r in found_recipes() if r.source == "packaged"]


def find(name: str, skip: Path | None = None) -> Path:
    """The path of a recipe given as `family/name`, a unique bare `name`, or an existing YAML file.

    `skip`: a recipe file whose name finds the next folder's recipe of that name instead, so that a recipe
    named like one it hides can build on it."""
    if name.endswith((".yaml", ".yml")) and Path(name).is_file():
        return Path(name)
    same: dict[str, list[Recipe]] = {}
    for recipe in found_recipes():
        same.setdefault(recipe.name, []).append(recipe)
    recipes: dict[str, Recipe] = {}
    for key, candidates in same.items():
        paths = [r.path.resolve() for r in candidates]
        if skip is not None and skip.resolve() in paths:
            candidates = candidates[paths.index(skip.resolve()) + 1 :]
        if candidates:
            recipes[key] = candidates[0]
    key = name.removesuffix(".yaml")
    if key in recipes:
        return recipes[key].path
    bare = [r for r in recipes.values() if r.name.rsplit("/", 1)[-1] == key]
    if len(bare) == 1:
        return bare[0].path
    raise unknown("recipe", name, recipes)


def base_chain(path: Path) -> list[Path]:
    """The recipe files `path` builds on, its furthest base first and `path` last."""
    chain = [path]
    while (base := _base_of(chain[-1])) is not None:
        if any(base.resolve() == p.resolve() for p in chain):
            names = " -> ".join(str(p) for p in [*chain, base])
            raise UserError(f"recipe bases form a cycle: {names}; remove one `base:` line")
        if len(chain) >= MAX_CHAIN:
            raise UserError(f"recipe {path} has more than {MAX_CHAIN} bases in a chain; is one a loop?")
        chain.append(base)
    return chain[::-1]


def _base_of(path: Path) -> Path | None:
    """The file named by the `base:` line of recipe `path`, or None."""
    value = _load(path).get("base")
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{path}: `base:` must name a recipe or a YAML file, got {value!r}")
    if value.endswith((".yaml", ".yml")):
        base = path.parent / value
        if not base.is_file():
            raise UserError(f"{path}: base {value!r} is not a file (paths are relative to the recipe)")
        return base
    if not NAME_PATTERN.fullmatch(value):
        raise UserError(f"{path}: base {value!r} is neither a recipe name (family/name) nor a .yaml path")
    return find(value, skip=path)


def _load(path: Path) -> dict[str, Any]:
    """A recipe's top-level mapping (vetted first: size, YAML errors, alias bombs)."""
    import yaml

    from bigtrain.config_files import check_config_file

    check_config_file(path, str(path))
    data = yaml.safe_load(path.read_text(encoding="utf-8", errors="replace"))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"recipe {path} is not a mapping of keys to values")
    return data


def lookup(chain: list[Path], dotted: str) -> Any:
    """The value of `dotted` (e.g. `data.init_args.source`) in the last recipe of `chain` that sets it."""
    for path in reversed(chain):
        node: Any = _load(path)
        for key in dotted.split("."):
            node = node.get(key) if isinstance(node, dict) else None
        if node is not None:
            return node
    return None


def config_args(path: Path) -> list[str]:
    """`--config` for each recipe of the chain ending in `path`, base first; `--base null` after them, so the
    resolved config (and the run's config.yaml) names no base to expand again."""
    chain = base_chain(path)
    if len(chain) == 1 and "base" not in _load(path):
        return ["--config", str(path)]
    return [arg for p in chain for arg in ("--config", str(p))] + ["--base", "null"]
