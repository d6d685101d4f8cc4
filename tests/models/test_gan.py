"""The DCGAN family: shapes, meta-device build, manual-optimization training, fixed noise, checkpoints."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import LightningDataModule, Trainer
from torch.utils.data import DataLoader, TensorDataset

from bigtrain.errors import UserError
from bigtrain.models.config import resolve
from bigtrain.models.gan import CONFIGS, GAN, MODULES, PRESETS, DCGANModule, GANConfig
from bigtrain.models.gan.model import BatchNorm, Conv, ConvT, SNConv

SIZES = [(8, 1), (16, 3), (28, 1), (32, 3)]
METRICS = ["d_loss", "g_loss", "d_real", "d_fake"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These nets are too small to gain from intra-op threads, which spin for seconds on a loaded CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _test_data_dir() -> Path:
    default = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    return Path(os.environ.get("BIGTRAIN_TEST_DATA", default))


class Images(LightningDataModule):
    """Images with pixels in [0, 1], served normalised by mean/std the way ImageDataModule does."""

    def __init__(self, pixels: torch.Tensor, batch_size: int = 32, mean=(0.5,), std=(0.25,)) -> None:
        super().__init__()
        self.pixels, self.batch_size = pixels, batch_size
        self.channels, self.image_size, self.num_classes = pixels.shape[1], pixels.shape[2], 1
        self.mean, self.std = tuple(mean), tuple(std)

    def _loader(self, shuffle: bool) -> DataLoader:
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        x = (self.pixels - mean) / std
        data = TensorDataset(x, torch.zeros(len(x), dtype=torch.long))
        gen = torch.Generator().manual_seed(0)
        return DataLoader(data, batch_size=self.batch_size, shuffle=shuffle, drop_last=shuffle, generator=gen)

    def train_dataloader(self) -> DataLoader:
        return self._loader(True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(False)


def bars(n: int = 512, size: int = 8, seed: int = 0) -> torch.Tensor:
    """(n, 1, size, size): a bright left half, a dark right half, one white row at a random height."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.full((n, 1, size, size), 0.15)
    x[..., : size // 2] = 0.85
    rows = torch.randint(0, size, (n,), generator=gen)
    x[torch.arange(n), 0, rows, :] = 1.0
    return x


def trainer(max_steps: int, **kwargs) -> Trainer:
    args = {"enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False}
    args["logger"] = kwargs.pop("logger", False)
    return Trainer(accelerator="cpu", max_steps=max_steps, **args, **kwargs)


def mean_pairwise_distance(images: torch.Tensor) -> float:
    flat = images.flatten(1)
    d = torch.cdist(flat, flat)
    n = len(flat)
    return float(d.sum() / (n * (n - 1)))


def test_family_registry() -> None:
    assert [DCGANModule] == MODULES
    assert {GANConfig: PRESETS} == CONFIGS
    assert {"tiny", "small", "dcgan64", "large"} <= set(PRESETS)


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("size,channels", SIZES)
def test_every_preset_builds_on_meta_with_right_shapes(preset: str, size: int, channels: int) -> None:
    cfg = resolve(GANConfig(preset=preset, image_size=size, channels=channels), PRESETS)
    with torch.device("meta"):
        net = GAN(cfg)
        images = net(torch.randn(3, cfg.latent_dim))
        logits = net.discriminator(images)
    assert images.shape == (3, channels, size, size)
    assert logits.shape == (3,)
    owned = {id(p) for block in net.blocks() for p in block.parameters()}
    assert owned == {id(p) for p in net.parameters()}, "blocks() must cover every parameter"


@pytest.mark.parametrize("size,channels", SIZES)
def test_tiny_forward_shapes_and_range(size: int, channels: int) -> None:
    net = GAN(resolve(GANConfig(image_size=size, channels=channels), PRESETS))
    images = net(torch.randn(5, net.generator.latent_dim))  # (B, C, H, W)
    assert images.shape == (5, channels, size, size)
    assert images.abs().max() <= 1.0
    assert net.discriminator(images).shape == (5,)


def test_dcgan64_is_the_papers_network() -> None:
    net = GAN(resolve(GANConfig(preset="dcgan64", image_size=64, channels=3), PRESETS))
    assert net.generator.project.conv.weight.shape == (100, 512, 4, 4)  # nz -> ngf*8 at 4x4
    assert len(net.generator.stages) == 3 and net.generator.to_image.out_channels == 3
    assert [s.conv.out_channels for s in net.discriminator.stages] == [64, 128, 256, 512]
    assert net.discriminator.head.kernel_size == (4, 4)


@pytest.mark.parametrize(
    "overrides",
    [{"image_size": 7}, {"image_size": 4}, {"image_size": 28, "n_stages": 3}, {"d_norm": "layer"}],
)
def test_unbuildable_configs_are_user_errors(overrides: dict) -> None:
    cfg = resolve(GANConfig(**{"image_size": 16, "channels": 1, **overrides}), PRESETS)
    with pytest.raises(UserError):
        GAN(cfg)


@pytest.mark.parametrize("d_norm", ["batch", "spectral", "none"])
def test_meta_build_then_materialise_gives_dcgan_init(d_norm: str) -> None:
    cfg = resolve(GANConfig(preset="small", d_norm=d_norm, image_size=32, channels=3), PRESETS)
    with torch.device("meta"):
        net = GAN(cfg)
    net.to_empty(device="cpu")
    net.init_weights()
    for module in net.modules():
        own = list(module.parameters(recurse=False)) + list(module.buffers(recurse=False))
        if own:  # Lightning/FSDP materialise per module: each owner must reset its own tensors
            assert isinstance(module, (Conv, ConvT, BatchNorm)), type(module)
    convs = [m.weight for m in net.modules() if isinstance(m, (Conv, ConvT))]
    assert abs(torch.cat([w.flatten() for w in convs]).std().item() - 0.02) < 0.002
    norms = [m.weight for m in net.modules() if isinstance(m, BatchNorm)]
    assert abs(torch.cat(norms).mean().item() - 1.0) < 0.01
    images = net(torch.randn(4, cfg.latent_dim))
    assert torch.isfinite(images).all() and torch.isfinite(net.discriminator(images)).all()


def test_spectral_norm_scales_weights_to_unit_norm_and_survives_two_forwards() -> None:
    conv = SNConv(3, 8, 4, 2, 1)
    with torch.no_grad():
        conv.weight.mul_(50)
    x = torch.randn(2, 3, 8, 8)
    for _ in range(30):  # power iteration converges over training forwards
        conv(x)
    w = conv.weight.flatten(1)
    sigma = conv.u @ (w @ torch.nn.functional.normalize(w.t() @ conv.u, dim=0))
    assert torch.linalg.matrix_norm(w / sigma, ord=2).item() == pytest.approx(1.0, abs=0.02)
    (conv(x).sum() + conv(-x).sum()).backward()  # two forwards before one backward, as in the D step
    assert torch.isfinite(conv.weight.grad).all()


def test_fixed_noise_is_seeded_and_not_in_state_dict() -> None:
    torch.manual_seed(1)
    a = DCGANModule()
    torch.manual_seed(2)
    b = DCGANModule()
    assert torch.equal(a.fixed_noise, b.fixed_noise)
    assert a.fixed_noise.shape == (64, PRESETS["tiny"]["latent_dim"])
    assert not torch.equal(a.fixed_noise, DCGANModule(noise_seed=1).fixed_noise)
    a.cfg.image_size, a.cfg.channels = 8, 1
    a.configure_model()
    assert "fixed_noise" not in a.state_dict()
    assert any(k.startswith("net.generator.") for k in a.state_dict())


def test_invalid_module_arguments_are_user_errors() -> None:
    with pytest.raises(UserError):
        DCGANModule(d_steps_per_g_step=0)
    with pytest.raises(UserError):
        DCGANModule(grad_clip=0.0)


def test_real_images_are_mapped_to_the_generators_range() -> None:
    module = DCGANModule()
    pixels = torch.rand(2, 3, 4, 4)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    module.data_norm = (mean, std)
    normalised = (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(module.to_tanh_range(normalised), pixels * 2 - 1)
    module.data_norm = None
    assert torch.equal(module.to_tanh_range(normalised), normalised)


@pytest.fixture(scope="module")
def trained():
    """A tiny DCGAN trained for 150 batches on the bars images, with its initial state."""
    torch.manual_seed(0)
    data = Images(bars())
    module = DCGANModule(optim={"lr": 2e-3, "betas": (0.5, 0.999)}, num_samples=32)
    module.cfg.image_size, module.cfg.channels = 8, 1
    module.configure_model()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    initial_samples = module.sample(256, torch.Generator().manual_seed(5))
    fit = trainer(300, limit_val_batches=2, val_check_interval=50, check_val_every_n_epoch=None)
    fit.fit(module, datamodule=data)
    return module, fit, data, before, initial_samples


def test_training_logs_finite_losses_for_train_and_val(trained) -> None:
    _, fit, _, _, _ = trained
    for stage in ("train", "val"):
        for name in METRICS:
            value = fit.callback_metrics[f"{stage}/{name}"]
            assert torch.isfinite(value), (stage, name, value)
    assert 0 < fit.callback_metrics["val/d_real"] < 1


def test_both_optimizers_step_once_per_batch(trained) -> None:
    module, fit, data, before, _ = trained
    assert fit.global_step == 300  # manual optimization counts both nets' steps
    sched_g, sched_d = module.lr_schedulers()
    assert sched_g.last_epoch == sched_d.last_epoch == 150
    after = module.state_dict()
    for prefix in ("net.generator.", "net.discriminator."):
        changed = [k for k in before if k.startswith(prefix) and not torch.equal(before[k], after[k])]
        assert len(changed) == len([k for k in before if k.startswith(prefix)]), prefix
    assert module.data_norm == (data.mean, data.std)
    assert module.hparams["net"]["n_stages"] == 1


def test_generator_learns_the_data_and_does_not_collapse(trained) -> None:
    module, _, data, _, initial = trained
    samples = module.sample(256, torch.Generator().manual_seed(5))
    assert samples.shape == (256, 1, 8, 8) and samples.min() >= 0 and samples.max() <= 1
    target = data.pixels.mean(0)
    before = (initial.mean(0) - target).pow(2).mean().item()
    after = (samples.mean(0) - target).pow(2).mean().item()
    assert after < before / 4, (before, after)
    # Not collapsed: samples differ from one another at least a quarter as much as the data's images do.
    assert mean_pairwise_distance(samples[:64]) > 0.25 * mean_pairwise_distance(data.pixels[:64])


def test_checkpoint_round_trip_without_pickle(trained, tmp_path: Path) -> None:
    module, fit, _, _, _ = trained
    path = tmp_path / "gan.ckpt"
    fit.save_checkpoint(path)
    raw = torch.load(path, weights_only=True)
    assert "fixed_noise" not in str(list(raw["state_dict"]))
    assert len(raw["optimizer_states"]) == 2 and len(raw["lr_schedulers"]) == 2
    loaded = DCGANModule.load_from_checkpoint(path, weights_only=True)
    for key, value in module.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    assert torch.equal(loaded.fixed_noise, module.fixed_noise)
    gen = lambda: torch.Generator().manual_seed(3)
    torch.testing.assert_close(loaded.sample(8, gen()), module.sample(8, gen()))


def test_d_steps_per_g_step_and_grad_clip() -> None:
    torch.manual_seed(0)
    module = DCGANModule(d_steps_per_g_step=2, grad_clip=0.5, net={"d_norm": "spectral"})
    trainer(12, limit_val_batches=0).fit(module, datamodule=Images(bars(128)))
    sched_g, sched_d = module.lr_schedulers()
    assert (sched_g.last_epoch, sched_d.last_epoch) == (4, 8)  # 12 steps = 8 batches x (1 D + 1/2 G)
    assert torch.isfinite(torch.stack([p.detach().abs().sum() for p in module.parameters()])).all()


def test_fixed_noise_grid_reaches_tensorboard(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    module = DCGANModule(num_samples=16)
    logger = TensorBoardLogger(tmp_path, name="gan")
    trainer(4, logger=logger, limit_val_batches=1, val_check_interval=2, check_val_every_n_epoch=None).fit(
        module, datamodule=Images(bars(128))
    )
    events = EventAccumulator(logger.log_dir)
    events.Reload()
    assert "samples/fixed_noise" in events.Tags()["images"]
    image = events.Images("samples/fixed_noise")[-1]
    assert (image.width, image.height) == (4 * 9 + 1, 4 * 9 + 1)  # 4x4 grid of 8x8 images, 1-pixel gaps
    assert {"val/d_loss", "val/g_loss", "val/d_real", "val/d_fake"} <= set(events.Tags()["scalars"])
    # 4 optimizer steps are 2 batches (a D and a G step each); the grids sit at the scalars' steps.
    assert module.global_step == 4
    steps = [s.step for s in events.Scalars("val/d_loss")]
    assert steps and [i.step for i in events.Images("samples/fixed_noise")] == steps


def _digits() -> torch.Tensor:
    path = _test_data_dir() / "digits" / "digits.csv.gz"
    if not path.exists():
        pytest.skip(f"digits test data not found at {path}; set BIGTRAIN_TEST_DATA")
    with gzip.open(path, "rt") as f:
        rows = np.loadtxt(f, delimiter=",", dtype=np.float32)
    return torch.from_numpy(rows[:, :64] / 16.0).view(-1, 1, 8, 8)


@pytest.mark.slow
def test_digits_train_without_collapse() -> None:
    torch.manual_seed(0)
    pixels = _digits()
    data = Images(pixels, batch_size=64, mean=(0.3,), std=(0.4,))
    module = DCGANModule(optim={"lr": 2e-3, "betas": (0.5, 0.999)}, net={"g_width": 16, "d_width": 16})
    fit = trainer(600, limit_val_batches=4, val_check_interval=100, check_val_every_n_epoch=None)
    fit.fit(module, datamodule=data)
    assert all(torch.isfinite(fit.callback_metrics[f"val/{m}"]) for m in METRICS)
    samples = module.sample(128, torch.Generator().manual_seed(0))
    assert mean_pairwise_distance(samples) > 0.5 * mean_pairwise_distance(pixels[:128])
    assert (samples.mean(0) - pixels.mean(0)).abs().mean() < 0.1
