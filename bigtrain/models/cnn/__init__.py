"""The cnn family: ResNet image classifiers."""

from bigtrain.models.cnn.model import PRESETS, BasicBlock, Bottleneck, ResNet, ResNetConfig
from bigtrain.models.cnn.module import ResNetClassifier

MODULES = [ResNetClassifier]
CONFIGS = {ResNetConfig: PRESETS}

__all__ = [
    "CONFIGS",
    "MODULES",
    "PRESETS",
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "ResNetClassifier",
    "ResNetConfig",
]
