"""No collective and no host read on ordinary steps from bigtrain's callbacks in a default `bigtrain fit`.

Every collective (torch.distributed and the strategy's reduce/broadcast/barrier) and every host transfer
(`.item()`, `.tolist()`, `.cpu()`) is counted, by the optimizer step it happened at, when a frame of
bigtrain/callbacks/ is on the stack. Steps next to a log step (log_every_n_steps=10) may read logged values;
the others must not. The one read left is the non-finite guard's flag in `stop`/`skip` mode: whether
step k's update happens has to be known before the optimizer runs (see its module docstring).
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from lightning.pytorch import strategies

from bigtrain.lightning_cli import run

STEPS = 20
QUIET_STEPS = [s for s in range(1, STEPS - 1) if s % 10 not in (9, 0)]  # not at or next to a log step
CALLBACKS = f"{Path(__file__).resolve().parents[2] / 'bigtrain' / 'callbacks'}"


def _attribute(events: Counter, what: str) -> None:
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_filename.startswith(CALLBACKS) and "trainer" in frame.f_locals:
            name = Path(frame.f_code.co_filename).stem
            function = _function_name(frame.f_code.co_name)
            events[(frame.f_locals["trainer"].global_step, f"{name}.{function}: {what}")] += 1
            return
        frame = frame.f_back


def _function_name(code_name: str) -> str:
    """The name the source gives a function: `make mutate` runs each one under a name of its own,
    `x_NAME__mutmut_N` or `xǁCLASSǁNAME__mutmut_N` (the original is `..._orig`)."""
    renamed = re.fullmatch(r"x(?:ǁ\w+ǁ|_)(\w+?)__mutmut_\w+", code_name)
    return renamed.group(1) if renamed else code_name


def _counting(events: Counter, what: str, original):
    def wrapper(*args, **kwargs):
        _attribute(events, what)
        return original(*args, **kwargs)

    return wrapper


@pytest.fixture
def events(monkeypatch) -> Counter:
    found: Counter = Counter()
    for method in ("item", "tolist", "cpu"):
        monkeypatch.setattr(torch.Tensor, method, _counting(found, method, getattr(torch.Tensor, method)))
    for name in ("all_reduce", "broadcast", "barrier", "all_gather", "broadcast_object_list"):
        monkeypatch.setattr(dist, name, _counting(found, name, getattr(dist, name)))
    for cls in vars(strategies).values():
        if isinstance(cls, type) and issubclass(cls, strategies.Strategy):
            for name in ("reduce", "broadcast", "barrier"):
                if name in vars(cls):
                    monkeypatch.setattr(cls, name, _counting(found, f"strategy.{name}", vars(cls)[name]))
    return found


def _fit(tmp_path: Path, *extra: str) -> None:
    run(
        "fit",
        ["--recipe", "cnn/glyphs", "--run_dir", str(tmp_path / "run"), "--data.num_samples", "1600",
         "--trainer.max_steps", str(STEPS), "--trainer.limit_val_batches", "0",
         "--trainer.enable_progress_bar", "false", *extra],
    )  # fmt: skip


def _on_quiet_steps(events: Counter) -> dict[str, int]:
    per_step: Counter = Counter()
    for (step, what), n in events.items():
        if step in QUIET_STEPS:
            per_step[what] += n
    return dict(per_step)


def test_guard_off_leaves_no_collective_or_host_read_on_quiet_steps(tmp_path, events):
    _fit(tmp_path, "--nonfinite.mode", "off")
    assert _on_quiet_steps(events) == {}


def test_default_fit_reads_one_flag_per_step_and_no_collective(tmp_path, events):
    _fit(tmp_path)
    assert _on_quiet_steps(events) == {"nonfinite._agree: item": len(QUIET_STEPS)}
