"""Atomic file writes: a reader never sees half a file, and a failed write leaves the old one in place."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path, mode: int | None = None) -> Iterator[Path]:
    """Yield a hidden temporary path beside `path`; on success rename it to `path`, on failure remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        if mode is not None:
            tmp.chmod(mode)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | Path, text: str, mode: int | None = None) -> None:
    """Write `text` to `path` through a temporary file (optionally with file mode `mode`)."""
    with atomic_path(path, mode) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write `data` as indented, key-sorted JSON to `path` through a temporary file."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
