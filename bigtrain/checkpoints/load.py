"""The one safe loader: checkpoints are read without ever unpickling arbitrary objects.

A PyTorch checkpoint is a pickle, and a pickle can name any function to call while it loads (`os.system`
included). Every checkpoint file bigtrain reads goes through `torch.load(weights_only=True)`, whose unpickler
only rebuilds tensors and plain containers. A distributed checkpoint's `.metadata` is a plain pickle that
torch.distributed.checkpoint would read with `pickle.load`: bigtrain reads it only through `MetadataUnpickler`
and its one allow-list, both when vetting a folder and each time a folder is loaded
(`bigtrain.checkpoints.sharded`). Whatever cannot be read ends as one UserError line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bigtrain.checkpoints.sharded import check_sharded, load_sharded
from bigtrain.checkpoints.unpickle import (
    META_FILE,
    METADATA_FILE,
    REFUSED,
    MetadataUnpickler,
    is_refusal,
    load_file,
    unreadable_error,
    unsafe_error,
)

__all__ = [
    "META_FILE",
    "METADATA_FILE",
    "REFUSED",
    "MetadataUnpickler",
    "check_checkpoint",
    "is_refusal",
    "load_checkpoint",
    "unreadable_error",
    "unsafe_error",
]


def load_checkpoint(
    path: str | Path, *, mmap: bool = False, map_location: str | None = "cpu"
) -> dict[str, Any]:
    """The checkpoint at `path` (a file, or a sharded folder consolidated in memory) as a dict of tensors and
    plain values; UserError if unsafe or unreadable. `mmap=True` maps a file's tensors instead of reading
    them (cheap when only checking it)."""
    path = Path(path)
    if path.is_dir():
        return load_sharded(path)
    return load_file(path, mmap=mmap, map_location=map_location)


def check_checkpoint(path: str | Path) -> None:
    """Raise a one-line UserError unless `path` (a .ckpt file or a sharded checkpoint folder) loads safely."""
    path = Path(path)
    if path.is_dir():
        check_sharded(path)
    else:
        load_file(path, mmap=True)
