"""A resume into a run directory trains the same run: its `config.yaml` must agree on what is trained.

A resume may change how long and where the run goes on (`trainer.max_steps`, devices, nodes, the strategy,
limits, logging, the checkpoint policy); it may not change what the checkpoint's training means: the model,
the data (how it is loaded may change: workers, pinned memory), the seed, and the trainer settings that
change the arithmetic of a step. The first key that differs is named, so the user can either restore it or
start a new run directory; `--resume_check false` resumes with a deliberate change.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from bigtrain.errors import UserError

TRAINER_KEYS = ("precision", "accumulate_grad_batches", "gradient_clip_val", "gradient_clip_algorithm")
"""The trainer settings that change what one optimizer step computes."""
LOADER_KEYS = ("num_workers", "pin_memory", "persistent_workers", "prefetch_factor", "download")
"""DataModule settings that change how batches are loaded, never which: free to change on a resume."""


def defining(config: dict[str, Any]) -> dict[str, Any]:
    """The flattened `key.path: value` entries of a run's config that define what it trains."""
    trainer = config.get("trainer") or {}
    kept = {
        "seed_everything": config.get("seed_everything"),
        "model": config.get("model"),
        "data": config.get("data"),
        "trainer": {key: trainer.get(key) for key in TRAINER_KEYS},
    }
    # As YAML would hold them: paths and other objects as text, tuples as lists.
    flat = _flatten(json.loads(json.dumps(kept, default=str)))
    return {
        k: v for k, v in flat.items() if not (k.startswith("data.") and k.rsplit(".", 1)[-1] in LOADER_KEYS)
    }


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out |= _flatten(item, f"{prefix}.{key}" if prefix else str(key))
        return out
    return {prefix: value}


def check_resume_config(run_dir: Path, current: dict[str, Any]) -> None:
    """Refuse, naming the first differing key, a resume whose config disagrees with the run's config.yaml."""
    saved_path = Path(run_dir) / "config.yaml"
    if not saved_path.is_file():
        return
    try:
        saved = yaml.safe_load(saved_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        reason = type(err).__name__
        raise UserError(f"{saved_path} is unreadable ({reason}); cannot check the resume") from err
    if not isinstance(saved, dict):
        raise UserError(f"{saved_path} is not a config (a YAML mapping); cannot check the resume")
    before, now = defining(saved), defining(current)
    for key in [*before, *(k for k in now if k not in before)]:  # in the file's order
        if before.get(key) != now.get(key):
            raise UserError(
                f"resuming {run_dir} with {key}={now.get(key)!r}, but the run was trained with "
                f"{before.get(key)!r} ({saved_path}); resume with the run's own config "
                f"(--config {saved_path}) or start a new --run_dir"
            )
