"""Registry-driven: every preset of every family builds on the meta device, and every CPU-sized one runs
forward and backward with finite outputs of the right shape. Presets are discovered, never listed."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import torch
from torch import nn

from bigtrain.models import FAMILIES, load
from bigtrain.models.config import resolve

CPU_PARAMS = 30_000_000  # presets larger than this are only built on the meta device here
BATCH = 2


def _image(channels: int = 1, size: int = 16) -> Callable[[], torch.Tensor]:
    return lambda: torch.randn(BATCH, channels, size, size)


# Per network config class: data-derived fields, the net's constructor, an input, and the output check.
DRIVERS: dict[str, dict] = {
    "ResNetConfig": dict(
        data=dict(in_channels=1, num_classes=10),
        make_input=lambda cfg: _image()(),
        check=lambda cfg, out: out.shape == (BATCH, 10),
    ),
    "GPTConfig": dict(
        data=dict(vocab_size=65, block_size=32),
        make_input=lambda cfg: torch.randint(0, 65, (BATCH, 32)),
        check=lambda cfg, out: out.shape == (BATCH, 32, 65),
    ),
    "RNNConfig": dict(
        data=dict(vocab_size=65, num_classes=10, input_size=16),
        make_input=lambda cfg: torch.randint(0, 65, (BATCH, 32)) if cfg.task == "lm" else _image()(),
        check=lambda cfg, out: out.shape == ((BATCH, 32, 65) if cfg.task == "lm" else (BATCH, 10)),
    ),
    "AutoencoderConfig": dict(
        data=dict(in_channels=1, image_size=16),
        make_input=lambda cfg: _image()(),
        check=lambda cfg, out: out[0].shape == (BATCH, 1, 16, 16),
    ),
    "GANConfig": dict(
        data=dict(channels=1, image_size=16),
        make_input=lambda cfg: torch.randn(BATCH, cfg.latent_dim),
        # Generator and discriminator together, so both get gradients: D(G(z)) is one logit per image.
        forward=lambda net, z: (net.discriminator(fake := net(z)), fake),
        check=lambda cfg, out: out[1].shape == (BATCH, 1, 16, 16) and out[0].numel() == BATCH,
    ),
}


def _cases():
    for family in FAMILIES:
        package = load(family)
        for config_cls, presets in package.CONFIGS.items():
            for preset in presets:
                yield pytest.param(family, config_cls, preset, id=f"{family}-{config_cls.__name__}-{preset}")


def _net_class(family: str, config_cls: type) -> type[nn.Module]:
    """The top-level network of a config class: the model.py class whose constructor takes it."""
    import importlib
    import inspect

    model = importlib.import_module(f"{FAMILIES[family]}.model")
    for _, obj in inspect.getmembers(model, inspect.isclass):
        if issubclass(obj, nn.Module) and obj.__module__ == model.__name__ and hasattr(obj, "blocks"):
            params = list(inspect.signature(obj).parameters.values())
            takes_config = params and params[0].annotation in (config_cls, config_cls.__name__)
            if takes_config and hasattr(obj, "init_weights"):
                return obj
    raise AssertionError(f"no top-level net with blocks() and init_weights() takes {config_cls.__name__}")


def _build_config(config_cls, preset):
    cfg = resolve(config_cls(preset=preset), load_presets(config_cls))
    fields = {f.name for f in dataclasses.fields(cfg)}
    data = {k: v for k, v in DRIVERS[config_cls.__name__]["data"].items() if k in fields}
    return dataclasses.replace(cfg, **data)


def load_presets(config_cls):
    for family in FAMILIES:
        presets = load(family).CONFIGS.get(config_cls)
        if presets is not None:
            return presets
    raise KeyError(config_cls)


def test_every_family_registers_modules_and_configs():
    for family in FAMILIES:
        package = load(family)
        assert package.MODULES and package.CONFIGS, family
        for config_cls, presets in package.CONFIGS.items():
            assert "tiny" in presets, f"{family} {config_cls.__name__} has no tiny preset"
            assert config_cls.__name__ in DRIVERS, f"add a driver for {config_cls.__name__}"


@pytest.mark.parametrize(("family", "config_cls", "preset"), list(_cases()))
def test_preset_builds_and_runs(family, config_cls, preset):
    cfg = _build_config(config_cls, preset)
    unset = [f.name for f in dataclasses.fields(cfg) if getattr(cfg, f.name) is None]
    net_cls = _net_class(family, config_cls)
    with torch.device("meta"):
        meta_net = net_cls(cfg)
    n_params = sum(p.numel() for p in meta_net.parameters())
    assert n_params > 0
    blocks = meta_net.blocks()
    assert blocks and all(isinstance(b, nn.Module) for b in blocks)
    if n_params > CPU_PARAMS:
        return
    assert not [u for u in unset if u not in ("n_stages",)], f"fields left unset: {unset}"
    net = meta_net.to_empty(device="cpu")
    net.init_weights()
    torch.manual_seed(0)
    driver = DRIVERS[config_cls.__name__]
    forward = driver.get("forward", lambda net, x: net(x))
    out = forward(net, driver["make_input"](cfg))
    assert driver["check"](cfg, out), f"unexpected output shape for {preset}"
    first = out[0] if isinstance(out, tuple) else out
    assert torch.isfinite(first).all()
    first.float().pow(2).mean().backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
