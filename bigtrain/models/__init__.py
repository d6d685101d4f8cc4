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


def load(family: str):  # noqa: ANN201
    """Import a family's package (its MODULES and CONFIGS)."""
    import importlib

    from bigtrain.errors import unknown

    if family not in FAMILIES:
        raise unknown("model family", family, FAMILIES)
    return importlib.import_module(FAMILIES[family])


def load_all() -> dict:
    """Import every family; name -> package."""
    return {name: load(name) for name in FAMILIES}
