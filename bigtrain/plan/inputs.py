"""What the planner is given: a config entry's object, the fit arguments naming a recipe, a memory size."""

from __future__ import annotations

import importlib
import re
from typing import Any

from bigtrain.errors import UserError


def parse_memory(text: str) -> int:
    """'80GB', '80GiB', '80G', '512MB', '1.5T' or a byte count -> bytes (units are binary, as GPUs sell)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*", text.lower())
    if not match:
        raise UserError(f"--device-memory '{text}' is not a size such as 80GB, 40GiB or 24000MB")
    value = float(match.group(1)) * 1024 ** " kmgt".index(match.group(2) or " ")
    if value < 1:
        raise UserError(f"--device-memory must be positive, got '{text}'")
    return int(value)


def instantiate(spec: dict) -> Any:
    """The object a `{class_path, init_args}` config entry describes."""
    module, _, name = spec["class_path"].rpartition(".")
    return getattr(importlib.import_module(module), name)(**(spec.get("init_args") or {}))


def recipe_args(recipe: str) -> list[str]:
    """`--config FILE` for an existing YAML file (a run's config.yaml), else `--recipe NAME`."""
    from pathlib import Path

    return ["--config", recipe] if Path(recipe).is_file() else ["--recipe", recipe]


def device_count(value: Any) -> int:
    """trainer.devices as a count (a list counts its entries; `auto` is what this machine has)."""
    if isinstance(value, list):
        return len(value)
    if isinstance(value, int) or str(value).isdigit():
        return max(int(value), 1)
    import torch

    return max(torch.cuda.device_count(), 1)
