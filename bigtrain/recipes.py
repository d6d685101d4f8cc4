"""The packaged recipes: where they are, and finding one by name (`bigtrain recipes` lists them).

A recipe is a LightningCLI config file `recipes/<family>/<name>.yaml` whose first comment line is the command
that launches it and whose next comment lines describe it in one sentence.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bigtrain.errors import unknown


def recipes_dir() -> Path:
    """The folder holding the recipes: shipped inside the package, or the source tree's `recipes/`."""
    try:
        from importlib.resources import files

        shipped = Path(str(files("bigtrain._recipes")))
        if shipped.is_dir():
            return shipped
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parent.parent / "recipes"


@dataclass(frozen=True)
class Recipe:
    """One recipe file and what its header and body say about it."""

    name: str
    path: Path

    @property
    def family(self) -> str:
        """The model family, the recipe's folder."""
        return self.name.split("/")[0]

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
        import yaml

        cfg = yaml.safe_load(self.path.read_text()) or {}
        data = cfg.get("data") or {}
        kind = str(data.get("class_path", "?")).rsplit(".", 1)[-1].replace("DataModule", "").lower()
        source = (data.get("init_args") or {}).get("source")
        return f"{kind}:{source}" if source else kind


def all_recipes() -> list[Recipe]:
    """Every recipe file, sorted by name."""
    root = recipes_dir()
    return [Recipe(p.relative_to(root).with_suffix("").as_posix(), p) for p in sorted(root.glob("*/*.yaml"))]


def find(name: str) -> Path:
    """The path of a recipe given as `family/name`, a unique bare `name`, or an existing YAML file."""
    if name.endswith((".yaml", ".yml")) and Path(name).is_file():
        return Path(name)
    recipes = {r.name: r for r in all_recipes()}
    key = name.removesuffix(".yaml")
    if key in recipes:
        return recipes[key].path
    bare = [r for r in recipes.values() if r.name.split("/", 1)[1] == key]
    if len(bare) == 1:
        return bare[0].path
    raise unknown("recipe", name, recipes)
