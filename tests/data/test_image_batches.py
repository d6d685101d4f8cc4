"""In-memory image batches are made for the whole batch at once, bit-identical to the per-sample ones.

The pinned digests were taken from the loader that scaled, augmented and normalised each image on its own
(before batched reads), for plain, flipped-and-cropped, and validation batches.
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from bigtrain.data.images import ImageDataModule

CASES = {
    "plain": ({}, True),
    "augmented": ({"augment_crop": 3, "augment_flip": True}, True),
    "val": ({"augment_crop": 3, "augment_flip": True}, False),
}
PINNED = {"plain": "387956f178ee6e1c", "augmented": "2a63c81ff88804f7", "val": "eec225eaae03e08f"}


def _digest(options: dict, train: bool, n: int = 3, epoch: int = 1) -> str:
    dm = ImageDataModule(num_samples=200, batch_size=16, seed=5, **options)
    dm.setup("fit")
    loader = dm.train_dataloader() if train else dm.val_dataloader()
    loader.sampler.set_epoch(epoch)
    h = hashlib.sha256()
    for i, (x, y) in enumerate(loader):
        h.update(x.numpy().tobytes() + y.numpy().tobytes() + str((x.dtype, tuple(x.shape))).encode())
        if i + 1 == n:
            break
    return h.hexdigest()[:16]


@pytest.mark.parametrize("case", sorted(CASES))
def test_batches_are_the_same_bytes_as_the_per_sample_loader_gave(case):
    assert _digest(*CASES[case]) == PINNED[case]


def test_a_batch_is_the_samples_each_index_names():
    dm = ImageDataModule(num_samples=60, batch_size=4, augment_crop=2, augment_flip=True, seed=1)
    dm.setup("fit")
    data = dm.train_set
    indices = [3, len(data) + 3, 2 * len(data) + 40, 7]
    x, y = data.get_batch(indices)
    for row, i in enumerate(indices):
        image, label = data.get_batch([i])
        assert torch.equal(x[row], image[0]) and y[row] == label[0]
    assert not torch.equal(x[0], x[1])  # the same image, augmented differently in another epoch
