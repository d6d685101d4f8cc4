"""The transformer family: a GPT-style decoder-only language model."""

from bigtrain.models.transformer.model import GPT, PRESETS, GPTConfig
from bigtrain.models.transformer.module import GPTModule

MODULES = [GPTModule]
CONFIGS = {GPTConfig: PRESETS}

__all__ = ["CONFIGS", "GPT", "GPTConfig", "GPTModule", "MODULES", "PRESETS"]
