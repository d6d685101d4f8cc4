"""A bigtrain dataset also works in a plain `DataLoader` with torch's default collate or the user's own.

Its batches are read whole (`__getitems__`); a plain loader still sees a list of samples and gets the same
tensors bigtrain's own loader hands on.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, default_collate

from bigtrain.data.images import ImageDataModule
from bigtrain.data.text import TextDataModule


def _datasets():
    images = ImageDataModule(num_samples=40, batch_size=4, augment_crop=2, augment_flip=True, seed=1)
    text = TextDataModule(block_size=16, batch_size=4, seed=3)
    for dm in (images, text):
        dm.setup("fit")
    return {"images": images.train_set, "text": text._train}


@pytest.mark.parametrize("name", ["images", "text"])
def test_plain_dataloader_with_default_collate_gives_the_batch_as_read(name):
    data = _datasets()[name]
    x, y = next(iter(DataLoader(data, batch_size=4)))
    want_x, want_y = data.get_batch([0, 1, 2, 3])
    assert torch.equal(x, want_x) and torch.equal(y, want_y)


def test_a_users_collate_function_gets_one_tuple_per_sample():
    data = _datasets()["images"]
    seen = []

    def collate(samples):
        seen.append([tuple(t.shape) for t in samples[0]])
        return default_collate(samples)

    x, _ = next(iter(DataLoader(data, batch_size=3, collate_fn=collate)))
    assert len(x) == 3 and seen == [[tuple(data[0][0].shape), ()]]


def test_the_batch_as_read_is_a_sequence_of_its_samples():
    data = _datasets()["images"]
    batch = data.__getitems__([4, 9, 2])
    x, y = data.get_batch([4, 9, 2])
    assert len(batch) == 3
    assert all(torch.equal(a, b) for a, b in zip(batch[1], (x[1], y[1]), strict=True))
    assert [s[1] for s in batch[1:]] == [y[1], y[2]] and [s[1] for s in batch[::-1]] == [y[2], y[1], y[0]]
