"""Convolutional autoencoder and VAE, plain single-device PyTorch.

Reads top to bottom: the config with its presets, the stages (each halves or doubles the resolution), the
network. An image whose side is not a multiple of the stride product 2**stages is padded (evenly on both
sides) on the way in and the reconstruction cropped back, so every size from 2**stages up works.
`Autoencoder.blocks()` lists the encoder and decoder stages: the units FSDP2 shards one by one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from bigtrain.errors import UserError
from bigtrain.models.network import Network, check_all_set


@dataclass(kw_only=True)
class AutoencoderConfig:
    """A convolutional autoencoder: strided-conv encoder, a latent vector, transposed-conv decoder."""

    preset: str = "tiny"
    """Named preset that supplies every field left unset (see PRESETS)."""
    kind: Literal["ae", "vae"] | None = None
    """'ae': a deterministic latent; 'vae': a Gaussian latent, reparameterised, with a KL term."""
    widths: list[int] | None = None
    """Channels of each encoder stage; each stage halves the resolution, the decoder mirrors them. The image
    side must be at least 2**len(widths)."""
    depth: int | None = None
    """Residual blocks per stage, after each encoder stage's strided conv and before each decoder stage's
    transposed conv."""
    latent_dim: int | None = None
    """Size of the latent vector."""
    in_channels: int | None = None
    """Image channels; None: taken from the data."""
    image_size: int | None = None
    """Image side in pixels (square images); None: taken from the data."""


PRESETS: dict[str, dict] = {
    # Learns 8x8 digits in CPU-seconds.
    "tiny": dict(kind="ae", widths=[16, 32], depth=0, latent_dim=32),
    "small": dict(kind="ae", widths=[32, 64, 128], depth=1, latent_dim=64),
    "base": dict(kind="ae", widths=[64, 128, 256, 256], depth=2, latent_dim=256),
    # About 120M parameters at 32x32 RGB: the multi-GPU FSDP showcase.
    "large": dict(kind="ae", widths=[128, 256, 512, 768], depth=3, latent_dim=512),
}


def check_config(cfg: AutoencoderConfig) -> None:
    """Raise UserError for a resolved config the network cannot be built from."""
    check_all_set(cfg)
    if cfg.kind not in ("ae", "vae"):
        raise UserError(f"model.net.kind must be 'ae' or 'vae', got {cfg.kind!r}")
    if not cfg.widths or min(cfg.widths) < 1:
        raise UserError(f"model.net.widths must be a non-empty list of ints >= 1, got {cfg.widths}")
    for name, low in (("depth", 0), ("latent_dim", 1), ("in_channels", 1), ("image_size", 1)):
        if getattr(cfg, name) < low:
            raise UserError(f"model.net.{name} must be >= {low}, got {getattr(cfg, name)}")
    need = 2 ** len(cfg.widths)
    if cfg.image_size < need:
        raise UserError(
            f"model.net.image_size {cfg.image_size} is too small for {len(cfg.widths)} encoder stages "
            f"(each halves it; needs >= {need}); use fewer model.net.widths or a smaller preset"
        )


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups: independent of the batch size, so any data-parallel split agrees."""
    return nn.GroupNorm(math.gcd(channels, 8), channels)


class ResBlock(nn.Module):
    """Pre-activation residual block: (norm, SiLU, 3x3 conv) twice, plus the input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = group_norm(channels), nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2, self.conv2 = group_norm(channels), nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, H, W)
        """The input plus the residual branch."""
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


class EncoderStage(nn.Module):
    """Stride-2 4x4 conv (halves the resolution), norm, SiLU, then `depth` residual blocks."""

    def __init__(self, c_in: int, c_out: int, depth: int) -> None:
        super().__init__()
        self.down = nn.Conv2d(c_in, c_out, 4, stride=2, padding=1)
        self.norm = group_norm(c_out)
        self.res = nn.Sequential(*(ResBlock(c_out) for _ in range(depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W) -> (B, C_out, H/2, W/2)
        """Downsample, then refine."""
        return self.res(F.silu(self.norm(self.down(x))))


class DecoderStage(nn.Module):
    """`depth` residual blocks, then a stride-2 4x4 transposed conv (doubles the resolution), norm, SiLU."""

    def __init__(self, c_in: int, c_out: int, depth: int) -> None:
        super().__init__()
        self.res = nn.Sequential(*(ResBlock(c_in) for _ in range(depth)))
        self.up = nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)
        self.norm = group_norm(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W) -> (B, C_out, 2H, 2W)
        """Refine, then upsample."""
        return F.silu(self.norm(self.up(self.res(x))))


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:  # (B, Z), (B, Z) -> (B,)
    """KL(N(mu, exp(logvar)) || N(0, 1)) per sample, in nats, summed over the latent dimensions."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)


class Autoencoder(Network):
    """Encoder stages -> latent (a vector, or a Gaussian for the VAE) -> decoder stages -> 3x3 conv head."""

    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        check_config(cfg)
        self.cfg = cfg
        n, stride = len(cfg.widths), 2 ** len(cfg.widths)
        self.grid = -(-cfg.image_size // stride)  # side of the bottleneck feature map
        padded = self.grid * stride
        self.pad = ((padded - cfg.image_size) // 2, padded - cfg.image_size - (padded - cfg.image_size) // 2)
        chans = [cfg.in_channels, *cfg.widths]
        self.encoder = nn.ModuleList(EncoderStage(chans[i], chans[i + 1], cfg.depth) for i in range(n))
        back = [*reversed(cfg.widths), cfg.widths[0]]
        self.decoder = nn.ModuleList(DecoderStage(back[i], back[i + 1], cfg.depth) for i in range(n))
        features = cfg.widths[-1] * self.grid**2
        self.to_latent = nn.Linear(features, cfg.latent_dim * (2 if cfg.kind == "vae" else 1))
        self.from_latent = nn.Linear(cfg.latent_dim, features)
        self.head = nn.Conv2d(cfg.widths[0], cfg.in_channels, 3, padding=1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:  # (B, C, S, S) -> (B, Z)
        """The latent code: (z, None) for an AE, (mu, logvar) for a VAE."""
        lo, hi = self.pad
        h = F.pad(x, (lo, hi, lo, hi))  # (B, C, P, P), P a multiple of 2**stages
        for stage in self.encoder:
            h = stage(h)  # (B, C_i, P/2^i, P/2^i)
        h = self.to_latent(h.flatten(1))  # (B, Z) or (B, 2Z)
        if self.cfg.kind == "ae":
            return h, None
        mu, logvar = h.chunk(2, dim=1)
        # Clamped so that exp() cannot overflow early in training or under bf16.
        return mu, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:  # (B, Z) -> (B, C, S, S)
        """Images (in the data's normalised space) from latent codes."""
        h = F.silu(self.from_latent(z)).view(z.shape[0], self.cfg.widths[-1], self.grid, self.grid)
        for stage in self.decoder:
            h = stage(h)  # (B, C_j, 2h, 2w)
        h = self.head(h)  # (B, C, P, P)
        lo, size = self.pad[0], self.cfg.image_size
        return h[:, :, lo : lo + size, lo : lo + size]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(reconstruction, mu or z, logvar or None); a VAE samples z in training, uses the mean in eval."""
        mu, logvar = self.encode(x)
        z = mu
        if logvar is not None and self.training:
            z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()  # the reparameterisation trick
        return self.decode(z), mu, logvar

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:  # -> (n, C, S, S)
        """Decode n draws from the VAE's prior N(0, 1); a plain AE has no prior to sample from."""
        if self.cfg.kind != "vae":
            raise ValueError("sample() needs a VAE (model.net.kind='vae')")
        z = torch.randn(n, self.cfg.latent_dim, generator=generator)
        return self.decode(z.to(self.head.weight.device, self.head.weight.dtype))

    def blocks(self) -> list[nn.Module]:
        """Encoder then decoder stages: the units FSDP2 shards one by one."""
        return [*self.encoder, *self.decoder]

    def example_input(
        self, batch: int, sample_shape: tuple[int, ...] | None, dtype: torch.dtype
    ) -> torch.Tensor:  # -> (batch, C, S, S)
        """A batch of images of the configured size (the data's: configure_model checks they agree)."""
        return torch.empty(batch, self.cfg.in_channels, self.cfg.image_size, self.cfg.image_size, dtype=dtype)

    def example_loss(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction loss on example images: the planner counts what it saves."""
        return F.mse_loss(self(x)[0].float(), x.float())
