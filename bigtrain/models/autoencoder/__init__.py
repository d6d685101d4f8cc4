"""The autoencoder family: convolutional autoencoders and VAEs."""

from bigtrain.models.autoencoder.model import (
    PRESETS,
    Autoencoder,
    AutoencoderConfig,
    DecoderStage,
    EncoderStage,
    kl_divergence,
)
from bigtrain.models.autoencoder.module import AutoencoderModule

MODULES = [AutoencoderModule]
CONFIGS = {AutoencoderConfig: PRESETS}

__all__ = [
    "CONFIGS",
    "MODULES",
    "PRESETS",
    "Autoencoder",
    "AutoencoderConfig",
    "AutoencoderModule",
    "DecoderStage",
    "EncoderStage",
    "kl_divergence",
]
