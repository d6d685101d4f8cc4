"""`--help` that shows what a recipe or a strategy can set.

jsonargparse lists a class-typed option (`--model`, `--data`, `--trainer.strategy`) as one line and shows its
options only under `--model.help CLASS`. With `--recipe X --help` (or `--trainer.strategy fsdp --help`),
bigtrain prints the general page and then one page per class the command names, with the presets of the
model's network.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

HELP_FLAGS = ("-h", "--help")


def help_pages(argv: list[str]) -> list[list[str]]:
    """The argv of each page `argv` (command first, recipe already expanded) asks for, in print order."""
    if not any(a in HELP_FLAGS for a in argv):
        return [argv]
    command, pages = argv[0], [argv]
    for key, class_path in _named_classes(argv[1:]).items():
        pages.append([command, f"--{key}.help", class_path])
    return pages


def _named_classes(args: list[str]) -> dict[str, str]:
    """{option: class path} of the model, data and strategy classes named in `--config` files or argv."""
    import yaml

    found: dict[str, str] = {}
    for flag, value in zip(args, args[1:], strict=False):
        if flag in ("--config", "-c") and Path(value).is_file():
            config = yaml.safe_load(Path(value).read_text(encoding="utf-8")) or {}
            strategy = (config.get("trainer") or {}).get("strategy")
            for key, node in (("model", config.get("model")), ("data", config.get("data"))):
                if isinstance(node, dict) and isinstance(node.get("class_path"), str):
                    found[key] = node["class_path"]
            if isinstance(strategy, dict) and isinstance(strategy.get("class_path"), str):
                found["trainer.strategy"] = strategy["class_path"]
        if flag in ("--model", "--data", "--trainer.strategy") and "." in value:
            found[flag[2:]] = value
    return found


def presets_line(class_path: str) -> str | None:
    """`--model.net.preset: one of tiny, small, ...` for a bigtrain LightningModule class, else None."""
    from bigtrain.models import FAMILIES

    name = class_path.rsplit(".", 1)[-1]
    for package in FAMILIES.values():
        family: Any = importlib.import_module(package)
        if any(m.__name__ == name for m in family.MODULES):
            names = [n for presets in family.CONFIGS.values() for n in presets]
            return f"--model.net.preset: one of {', '.join(names)}"
    return None
