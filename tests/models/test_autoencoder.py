"""The autoencoder family: presets, odd image sizes, AE and VAE training, image grids, checkpoints."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from image_helpers import Images, digits, trainer
from lightning.pytorch.loggers import TensorBoardLogger
from torchmetrics.image import StructuralSimilarityIndexMeasure

from bigtrain.errors import UserError
from bigtrain.models.autoencoder import (
    CONFIGS,
    MODULES,
    PRESETS,
    Autoencoder,
    AutoencoderConfig,
    AutoencoderModule,
    kl_divergence,
)
from bigtrain.models.autoencoder.module import ssim_window
from bigtrain.models.config import resolve


class UnitImages(Images):
    """Unlabelled images in [0, 1], normalised with (mean, std); they know the mean image's PSNR."""

    def __init__(self, x01: torch.Tensor, mean: float = 0.5, std: float = 0.25, batch_size: int = 32) -> None:
        y = torch.zeros(len(x01), dtype=torch.long)
        super().__init__((x01 - mean) / std, y, 1, mean, std, batch_size)
        n_val = len(x01) // 5
        self.val01, self.train01 = x01[:n_val], x01[n_val:]

    def mean_image_psnr(self) -> float:
        """PSNR of predicting the training set's mean image for every validation image."""
        mse = (self.val01 - self.train01.mean(dim=0)).pow(2).mean().item()
        return 10 * math.log10(1.0 / mse)


def blobs(n: int, size: int = 16, channels: int = 1) -> UnitImages:
    """A learnable image set: one Gaussian blob per image at a random place, width and brightness."""
    gen = torch.Generator().manual_seed(1)
    centre = 2 + (size - 4) * torch.rand(n, 2, 1, 1, generator=gen)
    width = 1.5 + 2 * torch.rand(n, 1, 1, generator=gen)
    level = 0.5 + 0.5 * torch.rand(n, channels, 1, 1, generator=gen)
    pos = torch.arange(size, dtype=torch.float32)
    d2 = (pos[:, None] - centre[:, 0]) ** 2 + (pos[None, :] - centre[:, 1]) ** 2  # (n, size, size)
    return UnitImages(level * torch.exp(-d2 / (2 * width**2))[:, None])


def build(size: int, channels: int = 1, **net) -> Autoencoder:
    return Autoencoder(resolve(AutoencoderConfig(in_channels=channels, image_size=size, **net), PRESETS))


def test_family_registry() -> None:
    assert [AutoencoderModule] == MODULES
    assert {AutoencoderConfig: PRESETS} == CONFIGS
    fields = set(AutoencoderConfig.__dataclass_fields__) - {"preset", "in_channels", "image_size"}
    for name, preset in PRESETS.items():
        assert set(preset) == fields, f"preset {name} must set every non-data field"


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("size", [8, 16, 28, 32])
def test_every_preset_builds_on_meta_or_refuses_the_size(preset: str, size: int) -> None:
    cfg = resolve(AutoencoderConfig(preset=preset, in_channels=3, image_size=size), PRESETS)
    if size < 2 ** len(cfg.widths):
        with pytest.raises(UserError, match="too small"):
            Autoencoder(cfg)
        return
    with torch.device("meta"):
        net = Autoencoder(cfg)
        recon, mu, logvar = net(torch.empty(2, 3, size, size))
    assert recon.shape == (2, 3, size, size) and mu.shape == (2, cfg.latent_dim) and logvar is None
    assert len(net.blocks()) == 2 * len(cfg.widths)


@pytest.mark.parametrize("kind", ["ae", "vae"])
@pytest.mark.parametrize(("preset", "size", "channels"), [("tiny", 8, 1), ("tiny", 10, 3), ("small", 28, 1)])
def test_forward_encode_decode_sample_shapes(kind: str, preset: str, size: int, channels: int) -> None:
    net = build(size, channels, preset=preset, kind=kind)
    x = torch.randn(4, channels, size, size, requires_grad=True)
    recon, mu, logvar = net(x)
    assert recon.shape == x.shape
    recon.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # every pixel's path survives pad and crop
    assert x.grad[..., 0, 0].abs().sum() > 0 and x.grad[..., -1, -1].abs().sum() > 0
    z = net.cfg.latent_dim
    assert mu.shape == (4, z)
    assert net.decode(torch.randn(3, z)).shape == (3, channels, size, size)
    in_blocks = sum(p.numel() for b in net.blocks() for p in b.parameters())
    outside = sum(p.numel() for m in (net.to_latent, net.from_latent, net.head) for p in m.parameters())
    assert in_blocks + outside == net.num_params()
    if kind == "ae":
        assert logvar is None
        with pytest.raises(ValueError, match="VAE"):
            net.sample(2)
    else:
        assert logvar.shape == (4, z)
        gen = torch.Generator().manual_seed(0)
        assert net.sample(5, generator=gen).shape == (5, channels, size, size)
        net.eval()  # eval decodes the mean: deterministic
        assert torch.equal(net(x)[0], net(x)[0])


def test_meta_build_then_init_gives_finite_outputs() -> None:
    cfg = resolve(AutoencoderConfig(preset="small", kind="vae", in_channels=3, image_size=28), PRESETS)
    with torch.device("meta"):
        net = Autoencoder(cfg)
    net.to_empty(device="cpu")
    net.init_weights()
    recon, mu, logvar = net(torch.randn(2, 3, 28, 28))
    assert all(torch.isfinite(t).all() for t in (recon, mu, logvar))
    assert all(torch.isfinite(p).all() for p in net.parameters())


@pytest.mark.parametrize(
    "net", [dict(preset="huge"), dict(kind="gan"), dict(widths=[]), dict(depth=-1), dict(latent_dim=0)]
)
def test_bad_configs_are_user_errors(net: dict) -> None:
    with pytest.raises(UserError):
        build(16, **net)


def test_vae_samples_under_fsdp2(monkeypatch: pytest.MonkeyPatch) -> None:
    """sample() decodes outside forward(): the module must register decode() with FSDP2."""
    import socket

    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    import bigtrain.models.autoencoder.module as module

    def shard(_, build):
        net = build()
        for block in net.blocks():
            fully_shard(block, mesh=mesh)
        return fully_shard(net, mesh=mesh)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1,))
        monkeypatch.setattr(module, "parallelize", shard)
        model = AutoencoderModule(
            net={"kind": "vae", "in_channels": 1, "image_size": 8}, mean=[0.5], std=[0.5]
        )
        model.configure_model()
        model.net(torch.randn(2, 1, 8, 8))[0].sum().backward()  # backward reshards the root's parameters
        assert model.net.sample(3).shape == (3, 1, 8, 8)
    finally:
        dist.destroy_process_group()


def test_kl_divergence_matches_torch_distributions() -> None:
    mu, logvar = torch.randn(5, 7), torch.randn(5, 7)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected = torch.distributions.kl_divergence(q, p).sum(dim=1)
    torch.testing.assert_close(kl_divergence(mu, logvar), expected)
    assert torch.equal(kl_divergence(torch.zeros(2, 3), torch.zeros(2, 3)), torch.zeros(2))


def test_ssim_window_fits_small_images() -> None:
    assert [ssim_window(s) for s in (8, 16, 20, 28, 32)] == [5, 9, 11, 11, 11]


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")  # no trainer here, on purpose
def test_image_metrics_ignore_bf16_autocast() -> None:
    model = AutoencoderModule(net={"in_channels": 1, "image_size": 8}, mean=[0.5], std=[0.25])
    model.configure_model()  # no trainer: the sizes and the normalisation are explicit
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 8, 8, generator=gen)
    recon = x + 0.2 * torch.randn(64, 1, 8, 8, generator=gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model._update_metrics(x, recon, "val")
    expected = StructuralSimilarityIndexMeasure(data_range=1.0, kernel_size=5, sigma=1.5 * 5 / 11)
    expected.update(model.to_unit(recon), model.to_unit(x))
    assert model.metrics["val_ssim"].compute() == pytest.approx(expected.compute().item(), abs=1e-6)


def test_autoencoder_beats_the_mean_image(tmp_path: Path) -> None:
    torch.manual_seed(0)
    data = blobs(640)
    model = AutoencoderModule(optim={"name": "adamw", "lr": 3e-3})
    t = trainer(tmp_path, max_epochs=3)
    t.fit(model, data)
    for name in ("train/loss", "val/loss", "val/mse", "val/psnr", "val/ssim"):
        assert name in t.callback_metrics, name
    assert "val/kl" not in t.callback_metrics
    got = t.validate(model, data, verbose=False)[0]
    baseline = data.mean_image_psnr()
    print(f"tiny AE on blobs: val/psnr {got['val/psnr']:.2f} dB vs mean image {baseline:.2f} dB")
    assert got["val/psnr"] > baseline + 3.0
    # PSNR is over the whole epoch's pixels in [0, 1]: 10 log10(1 / mse).
    assert got["val/psnr"] == pytest.approx(10 * math.log10(1 / got["val/mse"]), abs=1e-3)
    assert 0.0 < got["val/ssim"] <= 1.0


def test_vae_trains_and_logs_image_grids(tmp_path: Path) -> None:
    torch.manual_seed(0)
    data = blobs(320, size=8)
    logger = TensorBoardLogger(tmp_path, name="", version="")
    model = AutoencoderModule(
        net={"kind": "vae"}, optim={"name": "adamw", "lr": 3e-3}, beta=0.1, num_images=4
    )
    t = trainer(tmp_path, max_epochs=2, logger=logger, log_every_n_steps=4)
    before = t.validate(model, data, verbose=False)[0]
    t.fit(model, data)
    for name in ("train/loss", "train/kl", "val/loss", "val/kl", "val/psnr", "val/ssim"):
        assert name in t.callback_metrics, name
    after = t.validate(model, data, verbose=False)[0]
    assert after["val/loss"] < before["val/loss"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    events.Reload()
    assert {"val/reconstructions", "val/samples"} <= set(events.Tags()["images"])
    assert {"train/loss", "train/kl", "val/loss", "val/kl", "val/psnr"} <= set(events.Tags()["scalars"])
    grid = events.Images("val/reconstructions")[-1]
    # Originals above reconstructions: 2 rows and 4 columns of 8x8 images with 1 px padding.
    assert (grid.height, grid.width) == (2 * 9 + 1, 4 * 9 + 1)
    samples = events.Images("val/samples")[-1]
    assert (samples.height, samples.width) == (2 * 9 + 1, 4 * 9 + 1)


def test_checkpoint_round_trip_without_pickle(tmp_path: Path) -> None:
    data = blobs(160, size=12)
    model = AutoencoderModule(net={"kind": "vae", "latent_dim": 8})
    t = trainer(tmp_path, max_steps=3, limit_val_batches=1)
    t.fit(model, data)
    path = tmp_path / "model.ckpt"
    t.save_checkpoint(path)
    hparams = torch.load(path, weights_only=True)["hyper_parameters"]
    assert hparams["net"]["image_size"] == 12 and hparams["mean"] == [0.5] and hparams["std"] == [0.25]
    loaded = AutoencoderModule.load_from_checkpoint(path, weights_only=True)
    assert loaded.cfg == model.cfg and loaded.mean == model.mean and loaded.std == model.std
    model.eval()
    loaded.eval()
    x = data.val_set.tensors[0][:4]
    assert torch.equal(model(x), loaded(x))


def test_normalisation_must_be_known(tmp_path: Path) -> None:
    data = blobs(64, size=8)
    data.mean = data.std = None
    with pytest.raises(UserError, match="model.mean"):
        trainer(tmp_path, max_steps=1).fit(AutoencoderModule(), data)
    model = AutoencoderModule(mean=[0.5], std=[0.25])
    trainer(tmp_path, max_steps=1, limit_val_batches=1).fit(model, data)
    assert model.mean == [0.5]
    with pytest.raises(UserError, match="image_size"):
        trainer(tmp_path, max_steps=1).fit(AutoencoderModule(net={"image_size": 16}), blobs(64, size=8))


def test_tiny_autoencoder_on_digits(tmp_path: Path) -> None:
    data = UnitImages(digits()[0], 0.3, 0.4, 64)
    torch.manual_seed(0)
    model = AutoencoderModule(optim={"name": "adamw", "lr": 3e-3})
    t = trainer(tmp_path, max_epochs=3)
    t.fit(model, data)
    got = t.validate(model, data, verbose=False)[0]
    baseline = data.mean_image_psnr()
    print(f"tiny AE on 8x8 digits: val/psnr {got['val/psnr']:.2f} dB vs mean image {baseline:.2f} dB")
    assert got["val/psnr"] > baseline + 2.0
