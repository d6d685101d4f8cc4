"""The cnn family: every preset builds, the tiny one trains, checkpoints hold no pickled classes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from image_helpers import Images, digits, trainer

from bigtrain.errors import UserError
from bigtrain.models.cnn import CONFIGS, MODULES, ResNet, ResNetClassifier, ResNetConfig
from bigtrain.models.cnn.model import PRESETS, Norm
from bigtrain.models.config import resolve

# torchvision's parameter counts at 3 channels and 1000 classes: the presets are those architectures.
TORCHVISION_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet152": 60_192_808,
    "wide_resnet101": 126_886_696,
}


def gratings(num_classes: int, n: int, size: int = 16, channels: int = 1, noise: float = 0.5) -> Images:
    """A learnable toy problem: class k is a sine grating at its own angle and frequency, plus noise."""
    gen = torch.Generator().manual_seed(1)
    y = torch.randint(0, num_classes, (n,), generator=gen)
    angle = torch.pi * y / num_classes
    freq = 1.0 + (y % 2)
    pos = torch.arange(size, dtype=torch.float32)
    u = torch.cos(angle)[:, None, None] * pos[None, :, None] + torch.sin(angle)[:, None, None] * pos
    phase = 2 * torch.pi * torch.rand(n, 1, 1, generator=gen)
    x = torch.sin(freq[:, None, None] * u + phase)[:, None].expand(n, channels, size, size)
    return Images(x + noise * torch.randn(n, channels, size, size, generator=gen), y, num_classes)


def tiny(num_classes: int, channels: int = 1, **net) -> ResNet:
    return ResNet(resolve(ResNetConfig(in_channels=channels, num_classes=num_classes, **net), PRESETS))


def test_family_registry() -> None:
    assert [ResNetClassifier] == MODULES
    assert {ResNetConfig: PRESETS} == CONFIGS
    fields = set(ResNetConfig.__dataclass_fields__) - {"preset", "in_channels", "num_classes"}
    for name, preset in PRESETS.items():
        assert set(preset) == fields, f"preset {name} must set every non-data field"


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_builds_on_meta(preset: str) -> None:
    cfg = resolve(ResNetConfig(preset=preset, in_channels=3, num_classes=1000), PRESETS)
    with torch.device("meta"):
        net = ResNet(cfg)
        out = net(torch.empty(2, 3, 64, 64))
    assert out.shape == (2, 1000)
    assert len(net.blocks()) == sum(cfg.stage_depths)
    if preset in TORCHVISION_PARAMS:
        assert net.num_params() == TORCHVISION_PARAMS[preset]


@pytest.mark.parametrize(("size", "channels"), [(8, 1), (16, 1), (28, 1), (32, 3)])
def test_tiny_forward_shapes(size: int, channels: int) -> None:
    net = tiny(10, channels)
    assert net(torch.randn(4, channels, size, size)).shape == (4, 10)
    blocks = net.blocks()
    assert len(blocks) == 3 and all(isinstance(b, torch.nn.Module) for b in blocks)
    # The blocks hold every parameter except the stem's and the head's.
    in_blocks = sum(p.numel() for b in blocks for p in b.parameters())
    outside = sum(p.numel() for m in (net.stem, net.head) for p in m.parameters())
    assert in_blocks + outside == net.num_params()


def test_meta_build_then_init_matches_a_direct_build() -> None:
    cfg = resolve(ResNetConfig(preset="resnet18", in_channels=3, num_classes=10), PRESETS)
    with torch.device("meta"):
        net = ResNet(cfg)
    net.to_empty(device="cpu")
    net.init_weights()
    net.eval()
    out = net(torch.randn(2, 3, 32, 32))
    assert torch.isfinite(out).all()
    for m in net.modules():
        if isinstance(m, Norm):
            assert torch.equal(m.running_var, torch.ones_like(m.running_var))
            assert torch.equal(m.weight, torch.zeros_like(m.weight) if m.zero else torch.ones_like(m.weight))
    # He fan-out init: the stem's 7x7 kernel has std sqrt(2 / (64 * 49)).
    std = net.stem[0].weight.std().item()
    assert abs(std - (2 / (64 * 49)) ** 0.5) < 0.1 * std


@pytest.mark.parametrize(
    "net",
    [
        dict(preset="resnet"),
        dict(block="dense"),
        dict(stage_depths=[]),
        dict(stage_depths=[2, 0]),
        dict(expansion=4),
        dict(dropout=1.0),
        dict(stem="huge"),
    ],
)
def test_bad_configs_are_user_errors(net: dict) -> None:
    with pytest.raises(UserError):
        tiny(10, **net)


def test_data_mismatch_and_bad_args_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="num_classes"):
        trainer(tmp_path, max_steps=1).fit(ResNetClassifier(net={"num_classes": 5}), gratings(10, 64))
    with pytest.raises(UserError, match="label_smoothing"):
        ResNetClassifier(label_smoothing=1.5)


def test_training_reduces_loss_and_logs_metrics(tmp_path: Path) -> None:
    torch.manual_seed(0)
    data = gratings(10, 320)
    model = ResNetClassifier(optim={"name": "adamw", "lr": 1e-2}, label_smoothing=0.1)
    t = trainer(tmp_path, max_epochs=4)
    before = t.validate(model, data, verbose=False)[0]
    t.fit(model, data)
    for name in ("train/loss", "train/acc", "train/acc_top5", "val/loss", "val/acc", "val/acc_top5"):
        assert name in t.callback_metrics, name
    after = t.validate(model, data, verbose=False)[0]
    assert after["val/loss"] < 0.7 * before["val/loss"]
    assert after["val/acc"] > 0.6
    assert after["val/acc_top5"] >= after["val/acc"]
    assert isinstance(t.optimizers[0], torch.optim.AdamW)
    tested = t.test(model, data, verbose=False)[0]
    assert set(tested) == {"test/loss", "test/acc", "test/acc_top5"}


def test_top5_is_skipped_with_few_classes(tmp_path: Path) -> None:
    t = trainer(tmp_path, max_steps=2, limit_val_batches=1)
    t.fit(ResNetClassifier(), gratings(4, 96))
    assert "val/acc" in t.callback_metrics
    assert "val/acc_top5" not in t.callback_metrics


def test_default_optimizer_is_sgd_with_warmup(tmp_path: Path) -> None:
    model = ResNetClassifier()
    t = trainer(tmp_path, max_steps=3, limit_val_batches=0)
    t.fit(model, gratings(10, 160))
    opt = t.optimizers[0]
    assert isinstance(opt, torch.optim.SGD)
    assert opt.defaults["momentum"] == 0.9 and opt.param_groups[0]["weight_decay"] == 5e-4
    # Three steps into a 200-step warm-up the learning rate is still small.
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 4 / 201)


def test_checkpoint_round_trip_without_pickle(tmp_path: Path) -> None:
    data = gratings(10, 128)
    model = ResNetClassifier(net={"dropout": 0.1}, optim={"name": "adamw", "lr": 1e-3})
    t = trainer(tmp_path, max_steps=4, limit_val_batches=1)
    t.fit(model, data)
    path = tmp_path / "model.ckpt"
    t.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["hyper_parameters"]["net"]["num_classes"] == 10
    loaded = ResNetClassifier.load_from_checkpoint(path, weights_only=True)
    assert loaded.cfg == model.cfg and loaded.optim_cfg == model.optim_cfg
    model.eval()
    loaded.eval()
    x = data.val_set.tensors[0][:8]
    assert torch.equal(model(x), loaded(x))


@pytest.mark.slow
def test_tiny_preset_learns_digits(tmp_path: Path) -> None:
    x01, y = digits()
    x = F.interpolate(x01, size=16, mode="bilinear", align_corners=False)
    data = Images((x - x.mean()) / x.std(), y, 10, batch_size=64)
    torch.manual_seed(0)
    model = ResNetClassifier(optim={"name": "sgd", "lr": 0.1, "weight_decay": 5e-4, "warmup_steps": 20})
    start = time.perf_counter()
    t = trainer(tmp_path, max_epochs=8)
    t.fit(model, data)
    seconds = time.perf_counter() - start
    acc = t.validate(model, data, verbose=False)[0]["val/acc"]
    print(f"tiny ResNet on 16x16 digits: val/acc {acc:.3f} after {seconds:.1f} s")
    assert acc > 0.95
