"""Lightning's warnings and tips that a bigtrain user cannot act on, silenced by message in one place.

Each entry names what it says and why it is noise here. Anything else (a real mistake, a new warning after an
upgrade) still prints.
"""

from __future__ import annotations

import logging
import warnings

NOISE: tuple[tuple[str, str], ...] = (
    # Lightning suggests `srun` whenever the binary exists; bigtrain's `submit slurm` launches with it.
    (r"The `srun` command is available on your system but is not used", "srun hint"),
    # Lightning's own pytree helper calls an API torch deprecated; nothing a user changes fixes it.
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", "LeafSpec deprecation"),
    # Lightning's `all_gather` (rank-zero metric sync) calls a torch collective torch deprecated.
    (r"torch\.distributed\.nn\.functional\.all_gather is deprecated", "all_gather deprecation"),
)
"""(message regex, what it is) of each silenced warning."""

TIPS: tuple[str, ...] = ("Tip: For seamless cloud logging",)
"""Lightning info lines that advertise a product rather than describe the run."""


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(tip in message for tip in TIPS)


def silence_known_noise() -> None:
    """Ignore the warnings in NOISE and drop Lightning's TIPS from its loggers (idempotent)."""
    for pattern, _ in NOISE:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("lightning.pytorch", "lightning.fabric"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, _DropTips) for f in handler.filters):
                handler.addFilter(_DropTips())
