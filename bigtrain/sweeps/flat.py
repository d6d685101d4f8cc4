"""A resolved run config as flat {dotted key: value}, keys as `bigtrain fit` options name them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

# Where a run lives and what it resumes from: not hyper-parameters.
SKIPPED = ("run_dir", "ckpt_path", "config", "recipe_name", "trainer.callbacks", "trainer.logger")


def _walk(prefix: str, value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "init_args":  # `model.init_args.optim.lr` is `--model.optim.lr` on the command line
                yield from _walk(prefix, inner)
            else:
                yield from _walk(f"{prefix}.{key}" if prefix else str(key), inner)
    else:
        yield prefix, value


def flat_config(config: dict[str, Any]) -> dict[str, Any]:
    """{dotted key: value} of a resolved config's scalar values, keys as `bigtrain fit` options name them."""
    out = {}
    for key, value in _walk("", config):
        if any(key == s or key.startswith(f"{s}.") for s in SKIPPED):
            continue
        if isinstance(value, (bool, int, float, str)):
            out[key] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, (bool, int, float, str)) for v in value):
            out[key] = str(list(value))
    return out
