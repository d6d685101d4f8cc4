"""Names of runs: one path component from a recipe name or file, whatever the user typed."""

from __future__ import annotations

import re
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]+")
MAX_NAME = 100
"""Characters kept of a run name (a path component may hold 255 bytes; the time stamp follows it)."""


def run_name(recipe: str) -> str:
    """`cnn/glyphs` -> `cnn-glyphs`, a recipe file path -> its stem; always one safe path component.

    Anything but letters, digits and `_.+-` becomes `-`, and leading dots go, so a name such as
    `../../x` (which a recipe file can also set) cannot lead out of `runs/`.
    """
    name = Path(recipe).stem if recipe.endswith((".yaml", ".yml")) else recipe
    name = _UNSAFE.sub("-", name).lstrip(".-")[:MAX_NAME].rstrip(".")
    return name or "run"
