"""The GAN family: DCGAN with a logit discriminator, trained with manual optimization."""

from bigtrain.models.gan.model import GAN, PRESETS, Discriminator, GANConfig, Generator
from bigtrain.models.gan.module import DCGANModule

MODULES = [DCGANModule]
CONFIGS = {GANConfig: PRESETS}

__all__ = ["CONFIGS", "GAN", "MODULES", "PRESETS", "DCGANModule", "Discriminator", "GANConfig", "Generator"]
