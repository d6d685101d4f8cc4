"""ResNet image classifiers (He et al. 2015), plain single-device PyTorch.

Reads top to bottom: the config with its presets, the layers that own parameters (each with its own
`reset_parameters`), the residual blocks, the network. `ResNet.blocks()` lists every residual block: the
units FSDP2 shards one by one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from bigtrain.errors import UserError
from bigtrain.models.network import Network, check_all_set


@dataclass(kw_only=True)
class ResNetConfig:
    """A ResNet: a stem, stages of residual blocks (each stage halves the resolution), a linear head."""

    preset: str = "tiny"
    """Named preset that supplies every field left unset (see PRESETS)."""
    block: Literal["basic", "bottleneck"] | None = None
    """Residual block: two 3x3 convolutions (ResNet-18/34) or 1x1-3x3-1x1 (ResNet-50 and deeper)."""
    stage_depths: list[int] | None = None
    """Residual blocks per stage; stages after the first start with a stride-2 block."""
    width: int | None = None
    """Channels of the first stage's 3x3 convolutions, doubled at every later stage."""
    expansion: int | None = None
    """Bottleneck blocks output `expansion` times their 3x3 width (4 for ResNet-50, 2 for wide ResNets);
    basic blocks need 1."""
    stem: Literal["cifar", "imagenet"] | None = None
    """Input stem: one 3x3 convolution at full resolution (small images), or a stride-2 7x7 convolution and
    a stride-2 max-pool (ImageNet-size images)."""
    stem_width: int | None = None
    """Output channels of the stem."""
    dropout: float | None = None
    """Dropout probability before the classifier head."""
    in_channels: int | None = None
    """Image channels; None: taken from the data."""
    num_classes: int | None = None
    """Number of classes; None: taken from the data."""


PRESETS: dict[str, dict] = {
    # 78k parameters at 10 classes: > 0.95 on 16x16 digit glyphs within 1,000 images x 6 epochs on a CPU.
    # Three stages, not two: the receptive field must cover the glyph before the global average pool.
    "tiny": dict(
        block="basic", stage_depths=[1, 1, 1], width=16, expansion=1, stem="cifar", stem_width=16, dropout=0.0
    ),
    # The torchvision architectures; parameter counts match theirs exactly (tests check this).
    "resnet18": dict(
        block="basic", stage_depths=[2, 2, 2, 2], width=64, expansion=1, stem="imagenet", stem_width=64,
        dropout=0.0,
    ),
    "resnet34": dict(
        block="basic", stage_depths=[3, 4, 6, 3], width=64, expansion=1, stem="imagenet", stem_width=64,
        dropout=0.0,
    ),
    "resnet50": dict(
        block="bottleneck", stage_depths=[3, 4, 6, 3], width=64, expansion=4, stem="imagenet",
        stem_width=64, dropout=0.0,
    ),
    "resnet152": dict(
        block="bottleneck", stage_depths=[3, 8, 36, 3], width=64, expansion=4, stem="imagenet",
        stem_width=64, dropout=0.0,
    ),
    # Wide ResNet-101-2: 126.9M parameters at 1000 classes, the multi-GPU FSDP showcase.
    "wide_resnet101": dict(
        block="bottleneck", stage_depths=[3, 4, 23, 3], width=128, expansion=2, stem="imagenet",
        stem_width=64, dropout=0.0,
    ),
}  # fmt: skip


def check_config(cfg: ResNetConfig) -> None:
    """Raise UserError for a resolved config the network cannot be built from."""
    check_all_set(cfg)
    if cfg.block not in ("basic", "bottleneck"):
        raise UserError(f"model.net.block must be 'basic' or 'bottleneck', got {cfg.block!r}")
    if cfg.stem not in ("cifar", "imagenet"):
        raise UserError(f"model.net.stem must be 'cifar' or 'imagenet', got {cfg.stem!r}")
    if not cfg.stage_depths or min(cfg.stage_depths) < 1:
        raise UserError(
            f"model.net.stage_depths must be a non-empty list of ints >= 1, got {cfg.stage_depths}"
        )
    if cfg.block == "basic" and cfg.expansion != 1:
        raise UserError(f"model.net.expansion must be 1 for basic blocks, got {cfg.expansion}")
    for name in ("width", "expansion", "stem_width", "in_channels"):
        if getattr(cfg, name) < 1:
            raise UserError(f"model.net.{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.num_classes < 2:
        raise UserError(f"model.net.num_classes must be >= 2, got {cfg.num_classes}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise UserError(f"model.net.dropout must be in [0, 1), got {cfg.dropout}")


class Conv(nn.Conv2d):
    """A bias-free convolution (a BatchNorm follows it) with He fan-out init, as in the ResNet paper."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1) -> None:
        super().__init__(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False)

    def reset_parameters(self) -> None:
        """He-normal weights over the fan-out."""
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")


class Norm(nn.BatchNorm2d):
    """BatchNorm; `zero=True` starts its scale at 0 so the residual branch it ends begins as a no-op."""

    def __init__(self, channels: int, *, zero: bool = False) -> None:
        self.zero = zero  # read by reset_parameters, which the parent constructor calls
        super().__init__(channels)

    def reset_parameters(self) -> None:
        """Unit scale (or zero, see `zero`), zero shift, fresh running statistics."""
        super().reset_parameters()
        if self.zero:
            # Every block then starts as the identity, which lets deep nets take lr 0.1 from step 0
            # (Goyal et al. 2017, "Accurate, Large Minibatch SGD").
            nn.init.zeros_(self.weight)


def shortcut(c_in: int, c_out: int, stride: int) -> nn.Module:
    """The identity, or a strided 1x1 projection where the block changes shape."""
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    return nn.Sequential(Conv(c_in, c_out, 1, stride), Norm(c_out))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions plus the shortcut (ResNet-18/34)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = Conv(c_in, c_out, 3, stride), Norm(c_out)
        self.conv2, self.bn2 = Conv(c_out, c_out, 3), Norm(c_out, zero=True)
        self.shortcut = shortcut(c_in, c_out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W) -> (B, C_out, H/s, W/s)
        """Residual branch plus shortcut, then ReLU."""
        h = torch.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return torch.relu(h + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, strided 3x3, 1x1 expand, plus the shortcut (ResNet-50 and deeper; torchvision's v1.5)."""

    def __init__(self, c_in: int, inner: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = Conv(c_in, inner, 1), Norm(inner)
        self.conv2, self.bn2 = Conv(inner, inner, 3, stride), Norm(inner)
        self.conv3, self.bn3 = Conv(inner, c_out, 1), Norm(c_out, zero=True)
        self.shortcut = shortcut(c_in, c_out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W) -> (B, C_out, H/s, W/s)
        """Residual branch plus shortcut, then ReLU."""
        h = torch.relu(self.bn1(self.conv1(x)))
        h = torch.relu(self.bn2(self.conv2(h)))
        h = self.bn3(self.conv3(h))
        return torch.relu(h + self.shortcut(x))


def make_stem(cfg: ResNetConfig) -> nn.Sequential:
    """The input stem: full-resolution 3x3 ('cifar') or 7x7/2 and max-pool/2 ('imagenet')."""
    if cfg.stem == "cifar":
        return nn.Sequential(Conv(cfg.in_channels, cfg.stem_width, 3), Norm(cfg.stem_width), nn.ReLU())
    return nn.Sequential(
        Conv(cfg.in_channels, cfg.stem_width, 7, stride=2),
        Norm(cfg.stem_width),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1),
    )


def make_stages(cfg: ResNetConfig) -> tuple[nn.ModuleList, int]:
    """The residual stages and the channels the last one outputs."""
    c, stages = cfg.stem_width, nn.ModuleList()
    for i, depth in enumerate(cfg.stage_depths):
        inner = cfg.width * 2**i
        blocks = []
        for j in range(depth):
            stride = 2 if i > 0 and j == 0 else 1
            if cfg.block == "basic":
                blocks.append(BasicBlock(c, inner, stride))
                c = inner
            else:
                blocks.append(Bottleneck(c, inner, inner * cfg.expansion, stride))
                c = inner * cfg.expansion
        stages.append(nn.Sequential(*blocks))
    return stages, c


class ResNet(Network):
    """Stem, residual stages, global average pool, dropout, linear classifier."""

    def __init__(self, cfg: ResNetConfig) -> None:
        super().__init__()
        check_config(cfg)
        self.cfg = cfg
        self.stem = make_stem(cfg)
        self.stages, features = make_stages(cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(features, cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, num_classes) logits
        """Class logits for a batch of images."""
        h = self.stem(x)  # (B, stem_width, H', W')
        for stage in self.stages:
            h = stage(h)  # (B, C_i, H'/2^i, W'/2^i)
        h = h.mean(dim=(2, 3))  # (B, C_last)
        return self.head(self.dropout(h))

    def blocks(self) -> list[nn.Module]:
        """Every residual block, in order: the units FSDP2 shards one by one."""
        return [block for stage in self.stages for block in stage]

    def example_loss(self, x: torch.Tensor) -> torch.Tensor:
        """The training loss on example images (labels all 0): the planner counts what it saves."""
        return F.cross_entropy(self(x).float(), torch.zeros(x.shape[0], dtype=torch.long, device=x.device))
