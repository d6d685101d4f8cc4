"""Learning tests on real data (the shared test copies): each family learns what its recipe promises.

Each runs the real `bigtrain fit` on a recipe with a bounded number of steps and reads metrics.json.
Skipped with a reason when the shared data is absent; under CI (`CI` set) that fails instead.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.conftest import require_test_data

pytestmark = pytest.mark.slow

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def _fit(bigtrain_cmd, tmp_path, recipe: str, *overrides: str) -> dict:
    run_dir = tmp_path / "run"
    out = bigtrain_cmd("fit", "--recipe", recipe, "--run_dir", str(run_dir), *overrides, *QUIET)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture
def digits(shared_data):
    return str(require_test_data(shared_data / "digits" / "digits.csv.gz"))


@pytest.fixture
def shakespeare(shared_data):
    return str(require_test_data(shared_data / "tinyshakespeare" / "input.txt").parent)


def test_cnn_learns_digits(bigtrain_cmd, tmp_path, digits):
    metrics = _fit(bigtrain_cmd, tmp_path, "cnn/digits", "--data.path", digits)
    assert metrics["val/acc"] >= 0.95, metrics


@pytest.mark.parametrize(
    ("recipe", "overrides"),
    [
        ("transformer/shakespeare-char-cpu", ["--data.batch_size", "32", "--model.optim.lr", "0.002"]),
        ("rnn/shakespeare-char", ["--model.net.preset", "tiny", "--model.net.hidden_size", "128"]),
    ],
)
def test_language_models_learn_shakespeare(bigtrain_cmd, tmp_path, shakespeare, recipe, overrides):
    steps = ["--trainer.max_steps", "400", "--trainer.val_check_interval", "200"]
    steps += ["--model.optim.decay_steps", "400", "--model.optim.warmup_steps", "40"]
    steps += ["--trainer.limit_val_batches", "20", "--model.sample_tokens", "0"]
    metrics = _fit(bigtrain_cmd, tmp_path, recipe, "--data.path", shakespeare, *steps, *overrides)
    assert metrics["global_step"] == 400
    assert metrics["val/loss"] < 2.3, metrics  # ln(65) = 4.17 at the start
    assert math.isclose(metrics["val/bpc"], metrics["val/loss"] / math.log(2), rel_tol=1e-3)


def test_the_cpu_gpt_recipe_reaches_the_readmes_validation_loss(bigtrain_cmd, tmp_path, shakespeare):
    """The recipe as shipped (2,000 steps, about 3 CPU minutes): the README promises about 1.9 nats/char
    (nanoGPT's baby GPT reaches 1.88); measured 1.90 here."""
    metrics = _fit(
        bigtrain_cmd, tmp_path, "transformer/shakespeare-char-cpu", "--data.path", shakespeare,
        "--model.sample_tokens", "0",
    )  # fmt: skip
    assert metrics["global_step"] == 2000
    assert metrics["val/loss"] <= 1.95, metrics


def _mean_image_psnr(digits: str) -> float:
    """PSNR of predicting the training mean image for every validation image, in [0, 1] pixels."""
    from bigtrain.data.images import ImageDataModule

    dm = ImageDataModule(source="digits", path=digits, normalize=False, val_fraction=0.2)
    dm.setup("fit")
    train = torch.stack([dm.train_set[i][0] for i in range(len(dm.train_set))])
    val = torch.stack([dm.val_set[i][0] for i in range(len(dm.val_set))])
    mse = (val - train.mean(0, keepdim=True)).pow(2).mean()
    return float(10 * torch.log10(1 / mse))


def test_autoencoder_beats_mean_image(bigtrain_cmd, tmp_path, digits):
    metrics = _fit(bigtrain_cmd, tmp_path, "autoencoder/digits", "--data.path", digits)
    baseline = _mean_image_psnr(digits)
    assert metrics["val/psnr"] > baseline + 3.0, (metrics, baseline)
    assert 0.0 < metrics["val/ssim"] <= 1.0


def test_gan_on_digits_stays_finite_and_diverse(bigtrain_cmd, tmp_path, digits):
    metrics = _fit(bigtrain_cmd, tmp_path, "gan/digits", "--data.path", digits, "--trainer.max_epochs", "15")
    for name in ("train/d_loss", "train/g_loss", "val/d_loss", "val/g_loss"):
        assert math.isfinite(metrics[name]), name
    from bigtrain.models.gan import DCGANModule

    module = DCGANModule.load_from_checkpoint(
        tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu"
    )
    samples = module.sample(32, generator=torch.Generator().manual_seed(0)).flatten(1)
    distances = torch.cdist(samples, samples)[~torch.eye(32, dtype=torch.bool)]
    # Pixels are in [0, 1]; a collapsed generator gives (near-)identical images, distance ~0.
    assert distances.mean() > 0.5, float(distances.mean())
