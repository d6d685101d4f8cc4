"""Train/validation overlap: validation samples that are byte-for-byte training samples, where the data is
in memory as one tensor per split (images); other sources are reported as not checkable."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

SPLITS = (("train_set", "val_set"), ("train_dataset", "val_dataset"))
"""Attribute names of a DataModule's training and validation datasets."""
CHUNK = 1024
"""Rows hashed at once: bounds the temporary (rows x bytes x 8) to tens of MB for large images."""


def _rows(dataset: Any) -> torch.Tensor | None:
    """The dataset's inputs as one in-memory tensor, a sample a row (an image set's `x`, a TensorDataset's
    first tensor); None when it has no such tensor (windows of a token stream, files read per sample)."""
    x = getattr(dataset, "x", None)
    if isinstance(x, torch.Tensor):
        return x
    tensors = getattr(dataset, "tensors", None)
    if isinstance(tensors, tuple) and tensors and isinstance(tensors[0], torch.Tensor):
        return tensors[0]
    return None


def _bytes(x: torch.Tensor) -> np.ndarray:
    """Each row's bytes: (rows, bytes per row) uint8."""
    flat = x.detach().cpu().contiguous().reshape(len(x), -1)
    return flat.view(torch.uint8).numpy() if flat.numel() else np.zeros((len(x), 0), np.uint8)


def _hashes(rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row: a dot product with fixed random weights, wrapping modulo 2**64."""
    out = np.empty(len(rows), dtype=np.uint64)
    for start in range(0, len(rows), CHUNK):
        out[start : start + CHUNK] = (rows[start : start + CHUNK].astype(np.uint64) * weights).sum(axis=1)
    return out


def train_val_overlap(datamodule: Any) -> dict[str, Any]:
    """`{"checked": M, "repeats": K}`: K of the M validation samples equal a training sample exactly;
    `{"checkable": False, "why": ...}` where the splits are not tensors in memory."""
    for train_name, val_name in SPLITS:
        train = _rows(getattr(datamodule, train_name, None))
        val = _rows(getattr(datamodule, val_name, None))
        if train is not None and val is not None:
            break
    else:
        return {"checkable": False, "why": "its splits are not sample tensors in memory"}
    if train.shape[1:] != val.shape[1:] or train.dtype != val.dtype:
        return {"checked": len(val), "repeats": 0}
    a, b = _bytes(train), _bytes(val)
    # Fixed odd weights: an equal row always hashes equal; candidates are then compared byte for byte.
    weights = np.random.default_rng(0).integers(1, 2**63, size=a.shape[1], dtype=np.uint64) | np.uint64(1)
    seen: dict[int, int] = {}
    for i, h in enumerate(_hashes(a, weights).tolist()):
        seen.setdefault(h, i)
    repeats = [j for j, h in enumerate(_hashes(b, weights).tolist()) if h in seen and _same(a, b, seen[h], j)]
    return {"checked": len(val), "repeats": len(repeats), "examples": repeats[:5]}


def _same(a: np.ndarray, b: np.ndarray, i: int, j: int) -> bool:
    return bool(np.array_equal(a[i], b[j]))
