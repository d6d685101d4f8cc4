"""The built-in glyphs: deterministic per (seed, index), varied, learnable by a CNN but not a linear model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from bigtrain.data.glyphs import make_glyphs
from bigtrain.data.images import ImageDataModule


def test_each_sample_depends_only_on_seed_and_index():
    # At 48 px the generator works in chunks of a few dozen, so these slices cross chunk boundaries.
    few, many = make_glyphs(30, size=48, seed=7), make_glyphs(100, size=48, seed=7)
    assert np.array_equal(few[0], many[0][:30]) and np.array_equal(few[1], many[1][:30])
    again = make_glyphs(100, size=48, seed=7)
    assert np.array_equal(again[0], many[0])
    other = make_glyphs(30, size=48, seed=8)
    assert not np.array_equal(other[0], few[0])
    assert make_glyphs(3, seed=-1)[0].shape == (3, 16, 16)


def test_statistics_of_the_default_set():
    images, labels = make_glyphs(2000)
    assert images.shape == (2000, 16, 16) and images.dtype == np.uint8 and labels.dtype == np.int64
    counts = np.bincount(labels, minlength=10)
    assert counts.min() > 150 and counts.max() < 250
    # Strokes are bright on a darker, noisy background; no two images are alike.
    assert 40 < images.mean() < 110 and images.max() == 255
    assert len({img.tobytes() for img in images}) == 2000
    # Same class, different samples: the variation is large relative to the class template.
    zeros = images[labels == 0].astype(np.float32)
    assert np.abs(zeros - zeros.mean(0)).mean() > 20


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10),
    )  # fmt: skip


def train(model: nn.Module, x, y, x_val, y_val, epochs: int) -> float:
    """Adam on mini-batches of 64 for `epochs`; returns validation accuracy."""
    torch.manual_seed(0)
    for p in model.parameters():
        if p.dim() > 1:
            nn.init.kaiming_uniform_(p, a=5**0.5)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    order = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=order).split(64):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return (model(x_val).argmax(1) == y_val).float().mean().item()


@pytest.fixture
def one_thread():
    """Tiny models train fastest on one thread, and it keeps a busy 2-core machine from oversubscribing."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_learnable_by_a_small_cnn_but_not_by_a_linear_model(one_thread):
    dm = ImageDataModule(source="glyphs")
    dm.setup("fit")
    x, y = (torch.stack(t) for t in zip(*(dm.train_set[i] for i in range(len(dm.train_set))), strict=True))
    x_val, y_val = (
        torch.stack(t) for t in zip(*(dm.val_set[i] for i in range(len(dm.val_set))), strict=True)
    )
    centroids = torch.stack([x[y == c].mean(0) for c in range(10)]).flatten(1)
    nearest = (torch.cdist(x_val.flatten(1), centroids).argmin(1) == y_val).float().mean().item()
    linear = train(nn.Sequential(nn.Flatten(), nn.Linear(256, 10)), x, y, x_val, y_val, epochs=10)
    cnn = train(small_cnn(), x, y, x_val, y_val, epochs=3)
    print(f"glyphs val accuracy: nearest centroid {nearest:.3f}, linear {linear:.3f}, small CNN {cnn:.3f}")
    assert cnn >= 0.95
    assert nearest < 0.7 and linear < 0.85 and cnn - linear > 0.12
