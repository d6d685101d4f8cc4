"""The model families. Each is `bigtrain/models/<family>/` with `model.py` (plain PyTorch) and `module.py`.

FAMILIES maps a family name to its LightningModule classes and its network config classes; tests iterate
it, so a new family is tested by registering it here.
"""

from __future__ import annotations

FAMILIES: dict[str, str] = {
    "cnn": "bigtrain.models.cnn",
    "rnn": "bigtrain.models.rnn",
    "transformer": "bigtrain.models.transformer",
    "autoencoder": "bigtrain.models.autoencoder",
    "gan": "bigtrain.models.gan",
}
"""Family name -> package. Each package exports MODULES (LightningModule classes) and CONFIGS
(config class -> its PRESETS table)."""
