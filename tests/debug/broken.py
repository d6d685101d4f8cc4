"""Broken variants of a recipe's classes, each with one fault that a `bigtrain debug` check must name."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from bigtrain.data import ImageDataModule
from bigtrain.models.cnn import ResNetClassifier
from bigtrain.models.cnn.model import Conv


class UnusedParameter(ResNetClassifier):
    """A layer built and registered but left out of the forward."""

    def configure_model(self) -> None:
        super().configure_model()
        self.forgotten = nn.Linear(4, 4)


class _Detach(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x).detach()


class DetachedBranch(ResNetClassifier):
    """The stem's output is detached: no gradient reaches the stem."""

    def configure_model(self) -> None:
        super().configure_model()
        self.net.stem = _Detach(self.net.stem)


class ZeroLR(ResNetClassifier):
    """An optimizer built with a learning rate of 0 (and no schedule to raise it)."""

    def configure_optimizers(self) -> Any:
        return torch.optim.AdamW(self.parameters(), lr=0.0)


class PoisonedConv(Conv):
    """A convolution whose output turns to NaN."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * float("nan")


class NaNInOneBlock(ResNetClassifier):
    """The second stage's first convolution outputs NaN."""

    def configure_model(self) -> None:
        super().configure_model()
        block = self.net.stages[1][0]
        old = block.conv1
        block.conv1 = PoisonedConv(old.in_channels, old.out_channels, old.kernel_size[0], old.stride[0])


class LabelsOutOfRange(ImageDataModule):
    """Labels shifted past the declared classes (an off-by-some in a label mapping)."""

    def train_dataloader(self) -> Iterator[Any]:
        return ((x, y + self.num_classes) for x, y in super().train_dataloader())


class WrongHead(ResNetClassifier):
    """A head sized for other features: the first forward fails with a shape error."""

    def configure_model(self) -> None:
        super().configure_model()
        self.net.head = nn.Linear(7, self.cfg.num_classes)


class ValRepeatsTrain(ImageDataModule):
    """A validation split whose first 4 images are training images (a split made after deduplication
    was forgotten, or the same file given twice)."""

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        self.val_set.x[:4] = self.train_set.x[10:14]
