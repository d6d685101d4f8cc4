"""DCGAN (Radford, Metz and Chintala 2015) in plain PyTorch: a generator and a logit discriminator.

The generator projects z to a small square, then doubles its side in each of `n_stages` stride-2 transposed
convolutions (BatchNorm + ReLU between, tanh at the end): its images lie in [-1, 1]. The discriminator
mirrors it with stride-2 convolutions (LeakyReLU 0.2) and one last convolution that covers the remaining
square and gives one logit per image: no sigmoid, so the loss is BCE-with-logits (CUDA autocast rejects
BCELoss).
With 64x64 images and the `dcgan64` preset this is the paper's network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from bigtrain.errors import UserError
from bigtrain.models.network import Network


@dataclass(kw_only=True)
class GANConfig:
    """The generator and discriminator of a DCGAN."""

    preset: str = "tiny"
    """Named preset that supplies every field left unset (see PRESETS)."""
    latent_dim: int | None = None
    """Size of the noise vector z the generator maps to an image."""
    g_width: int | None = None
    """Generator channels at its last hidden stage; each earlier stage doubles them (the paper's ngf)."""
    d_width: int | None = None
    """Discriminator channels after its first stride-2 conv; each later stage doubles them (paper's ndf)."""
    d_norm: Literal["batch", "spectral", "none"] | None = None
    """Discriminator normalisation: BatchNorm (DCGAN), spectral norm of its conv weights (SNGAN), or none."""
    n_stages: int | None = None
    """Stride-2 stages in each net; None: derived from image_size (the most that leave a side of >= 3)."""
    channels: int | None = None
    """Image channels (from the data)."""
    image_size: int | None = None
    """Side of the square images in pixels (from the data)."""


PRESETS: dict[str, dict] = {
    # Trains in CPU-seconds on 8x8 to 32x32 images.
    "tiny": {"latent_dim": 16, "g_width": 8, "d_width": 8, "d_norm": "batch"},
    "small": {"latent_dim": 64, "g_width": 32, "d_width": 32, "d_norm": "batch"},
    # The paper's widths: nz=100, ngf=ndf=64 (3.6M generator, 2.8M discriminator parameters at 64x64x3).
    "dcgan64": {"latent_dim": 100, "g_width": 64, "d_width": 64, "d_norm": "batch"},
    # Twice as wide; spectral norm keeps the wider discriminator from overpowering the generator.
    "large": {"latent_dim": 128, "g_width": 128, "d_width": 128, "d_norm": "spectral"},
}

MIN_SIDE = 3
"""Smallest side the stride-2 stack may leave for the projection (and the discriminator's last conv)."""


def n_stages_for(cfg: GANConfig) -> int:
    """The number of stride-2 stages for cfg's image size: cfg.n_stages, checked, or the most that fit."""
    size = cfg.image_size
    if size is None or cfg.channels is None:
        raise UserError("model.net.image_size and model.net.channels must be set (they come from the data)")
    if cfg.n_stages is not None:
        if cfg.n_stages < 1 or size % 2**cfg.n_stages:
            raise UserError(
                f"model.net.n_stages {cfg.n_stages} does not fit image_size {size}: it must be >= 1 and "
                f"image_size must be divisible by 2**n_stages; leave it unset to derive it"
            )
        return cfg.n_stages
    n = 0
    while size % 2 ** (n + 1) == 0 and size // 2 ** (n + 1) >= MIN_SIDE:
        n += 1
    if n == 0:
        raise UserError(
            f"image size {size} cannot be built by DCGAN's stride-2 stack: it needs an even side whose half "
            f"is >= {MIN_SIDE} (e.g. 8, 16, 28, 32, 64)"
        )
    return n


# Layers with DCGAN's initialisation: conv weights ~ N(0, 0.02), BatchNorm weights ~ N(1, 0.02), biases 0.
# Each owns its parameters and resets them, so a net built on the meta device materialises the same way
# whether init_weights() or Lightning/FSDP's per-module reset_parameters() does it.


class Conv(nn.Conv2d):
    """Conv2d with DCGAN's initialisation."""

    def reset_parameters(self) -> None:
        """Weights ~ N(0, 0.02), bias 0."""
        nn.init.normal_(self.weight, 0.0, 0.02)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class ConvT(nn.ConvTranspose2d):
    """ConvTranspose2d with DCGAN's initialisation."""

    def reset_parameters(self) -> None:
        """Weights ~ N(0, 0.02), bias 0."""
        nn.init.normal_(self.weight, 0.0, 0.02)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class BatchNorm(nn.BatchNorm2d):
    """BatchNorm2d with DCGAN's initialisation."""

    def reset_parameters(self) -> None:
        """Running statistics cleared, weight ~ N(1, 0.02), bias 0."""
        self.reset_running_stats()
        nn.init.normal_(self.weight, 1.0, 0.02)
        nn.init.zeros_(self.bias)


class SNConv(Conv):
    """Conv2d whose weight is divided by its largest singular value (Miyato et al. 2018).

    The singular vector `u` is refined by one power iteration per training forward; it is a buffer of this
    module (not a torch parametrization) so that meta-device materialisation resets it with the weight.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer("u", torch.empty(self.out_channels, device=self.weight.device))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """DCGAN weights and a random unit `u` (absent while the parent constructor runs)."""
        super().reset_parameters()
        if hasattr(self, "u"):
            with torch.no_grad():
                self.u.normal_()
                self.u.div_(self.u.norm().clamp_min(1e-12))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.flatten(1)  # (C_out, C_in * k * k)
        with torch.no_grad():
            # Fresh tensors, not the buffer, enter the graph: a second forward before backward (real, then
            # fake) updates the buffer in place and must not invalidate the first graph.
            u = self.u.clone()
            v = F.normalize(w.t() @ u, dim=0)
            if self.training:
                u = F.normalize(w @ v, dim=0)
                self.u.copy_(u)
                v = F.normalize(w.t() @ u, dim=0)
        sigma = u @ (w @ v)
        from bigtrain.torch_compat import conv_forward  # here: model.py is plain PyTorch, no Lightning

        return conv_forward(self, x, self.weight / sigma, self.bias)


class UpBlock(nn.Module):
    """Transposed conv -> BatchNorm -> ReLU: one generator stage."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__()
        self.conv = ConvT(c_in, c_out, kernel, stride, padding, bias=False)  # BatchNorm has the bias
        self.norm = BatchNorm(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)))


class DownBlock(nn.Module):
    """Stride-2 conv -> normalisation -> LeakyReLU(0.2): one discriminator stage."""

    def __init__(self, c_in: int, c_out: int, norm: str) -> None:
        super().__init__()
        conv = SNConv if norm == "spectral" else Conv
        self.conv = conv(c_in, c_out, 4, 2, 1, bias=norm != "batch")
        self.norm = BatchNorm(c_out) if norm == "batch" else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.norm(self.conv(x)), 0.2)


class Generator(nn.Module):
    """z (B, latent_dim) -> images (B, C, H, W) in [-1, 1]."""

    def __init__(self, cfg: GANConfig) -> None:
        super().__init__()
        n = n_stages_for(cfg)
        base = cfg.image_size // 2**n
        width = [cfg.g_width * 2 ** (n - 1 - i) for i in range(n)]  # channels entering each stride-2 stage
        self.latent_dim = cfg.latent_dim
        self.project = UpBlock(cfg.latent_dim, width[0], base, 1, 0)  # 1x1 -> base x base
        self.stages = nn.ModuleList(UpBlock(width[i], width[i + 1], 4, 2, 1) for i in range(n - 1))
        # No BatchNorm follows the last layer, so it keeps its bias.
        self.to_image = ConvT(width[-1], cfg.channels, 4, 2, 1, bias=True)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z.view(z.shape[0], self.latent_dim, 1, 1))  # (B, g_width * 2**(n-1), base, base)
        for stage in self.stages:
            x = stage(x)  # side doubles, channels halve
        return torch.tanh(self.to_image(x))  # (B, C, H, W)

    def blocks(self) -> list[nn.Module]:
        """The layers FSDP2 wraps one by one."""
        return [self.project, *self.stages, self.to_image]


class Discriminator(nn.Module):
    """Images (B, C, H, W) in [-1, 1] -> one real-vs-fake logit per image (B,)."""

    def __init__(self, cfg: GANConfig) -> None:
        super().__init__()
        n = n_stages_for(cfg)
        base = cfg.image_size // 2**n
        width = [cfg.d_width * 2**i for i in range(n)]
        # The paper leaves BatchNorm out of the first layer, which sees the images themselves.
        first = DownBlock(cfg.channels, width[0], "spectral" if cfg.d_norm == "spectral" else "none")
        rest = [DownBlock(width[i], width[i + 1], cfg.d_norm) for i in range(n - 1)]
        self.stages = nn.ModuleList([first, *rest])
        head = SNConv if cfg.d_norm == "spectral" else Conv
        self.head = head(width[-1], 1, base, 1, 0, bias=True)  # base x base -> 1x1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)  # side halves, channels double
        return self.head(x).flatten()  # (B,) logits

    def blocks(self) -> list[nn.Module]:
        """The layers FSDP2 wraps one by one."""
        return [*self.stages, self.head]


class GAN(Network):
    """The generator and the discriminator of one DCGAN; calling it generates images from z."""

    def __init__(self, cfg: GANConfig) -> None:
        super().__init__()
        if cfg.d_norm not in ("batch", "spectral", "none"):
            raise UserError(f"model.net.d_norm must be 'batch', 'spectral' or 'none', got {cfg.d_norm!r}")
        for field in ("latent_dim", "g_width", "d_width"):
            if getattr(cfg, field) < 1:
                raise UserError(f"model.net.{field} must be >= 1, got {getattr(cfg, field)}")
        self.cfg = cfg
        self.generator = Generator(cfg)
        self.discriminator = Discriminator(cfg)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z)  # (B, C, H, W)

    def blocks(self) -> list[nn.Module]:
        """The generator's layers, then the discriminator's: the sub-modules FSDP2 wraps one by one."""
        return [*self.generator.blocks(), *self.discriminator.blocks()]

    def example_input(
        self, batch: int, sample_shape: tuple[int, ...] | None, dtype: torch.dtype
    ) -> torch.Tensor:  # -> (batch, C, H, W)
        """A batch of real images of the configured size (the data's: configure_model checks they agree)."""
        return torch.empty(batch, self.cfg.channels, self.cfg.image_size, self.cfg.image_size, dtype=dtype)

    def example_loss(self, x: torch.Tensor) -> torch.Tensor:
        """The generator's images and the discriminator's logits on them and on the real images `x`."""
        fake = self.generator(torch.empty(x.shape[0], self.cfg.latent_dim, dtype=x.dtype, device=x.device))
        return self.discriminator(fake).sum() + self.discriminator(x).sum()

    def init_weights(self) -> None:
        """DCGAN initialisation of every layer (after `to_empty` when built on the meta device)."""
        for module in self.modules():
            if isinstance(module, (Conv, ConvT, BatchNorm)):
                module.reset_parameters()
