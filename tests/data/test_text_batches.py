"""Text batches are read a batch at a time, in one gather, and are bit-identical to the per-sample windows.

The pinned digests were taken from the loader that built each window on its own (before batched reads):
the same seed gives the same bytes, for in-memory text, memory-mapped token files and validation windows.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from bigtrain.data.base import sample_generator
from bigtrain.data.corpus import builtin_corpus
from bigtrain.data.text import TextDataModule
from bigtrain.data.tokens import write_tokens


def _digest(dm: TextDataModule, train: bool, n: int = 3, epoch: int = 1) -> str:
    dm.setup("fit")
    loader = dm.train_dataloader() if train else dm.val_dataloader()
    loader.sampler.set_epoch(epoch)
    h = hashlib.sha256()
    for i, (x, y) in enumerate(loader):
        h.update(x.numpy().tobytes() + y.numpy().tobytes() + str((x.dtype, tuple(x.shape))).encode())
        if i + 1 == n:
            break
    return h.hexdigest()[:16]


def _token_module(tmp_path: Path) -> TextDataModule:
    text = tmp_path / "t.txt"
    text.write_text(builtin_corpus()[:50_000], encoding="utf-8")
    write_tokens(text, tmp_path / "tok", "char")
    return TextDataModule(source="tokens", path=str(tmp_path / "tok"), block_size=16, batch_size=4, seed=7)


PINNED = {
    ("builtin", True): "bb429a25f24425ae",
    ("builtin", False): "afd2912fd07e9893",
    ("tokens", True): "318ff8d89e00e857",
    ("tokens", False): "801d2625e5194f6b",
}


@pytest.mark.parametrize(("source", "train"), sorted(PINNED))
def test_batches_are_the_same_bytes_as_the_per_sample_loader_gave(tmp_path, source, train):
    if source == "builtin":
        dm = TextDataModule(block_size=32, batch_size=8, seed=3)
    else:
        dm = _token_module(tmp_path)
    assert _digest(dm, train) == PINNED[(source, train)]


def test_a_batch_is_the_windows_each_sample_index_names(tmp_path):
    dm = _token_module(tmp_path)
    dm.setup("fit")
    train = dm._train
    indices = [5, 3 * len(train) + 1, 17, 2]  # sampler values: epoch * len + index
    x, y = train.get_batch(indices)
    tokens = np.fromfile(tmp_path / "tok" / "train.bin", dtype=np.uint16)
    for row, i in enumerate(indices):
        epoch, index = divmod(i, len(train))
        gen = sample_generator(7, epoch, index)
        start = int(torch.randint(len(tokens) - 16, (1,), generator=gen))
        window = torch.from_numpy(tokens[start : start + 17].astype(np.int64))
        assert torch.equal(x[row], window[:-1]) and torch.equal(y[row], window[1:])
    assert torch.equal(train[indices[0]][0], x[0])  # the one-sample view is the same window
    assert x.shape == (4, 16) and x.dtype == torch.int64
