"""The autoencoder LightningModule: reconstruction MSE (+ beta * KL for a VAE), PSNR, SSIM, image grids."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import nn
from torch.distributed.fsdp import register_fsdp_forward_method
from torchmetrics import MeanSquaredError
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from bigtrain.errors import UserError
from bigtrain.models.attached import attached_datamodule
from bigtrain.models.autoencoder.model import PRESETS, Autoencoder, AutoencoderConfig, kl_divergence
from bigtrain.models.config import as_config, fill_from_data, resolve, to_dict
from bigtrain.models.optim import OptimConfig, optimizer_and_schedule
from bigtrain.models.tensorboard import log_image
from bigtrain.models.train_metrics import log_train
from bigtrain.strategies.parallelize import parallelize

SAMPLE_SEED = 0
"""Seed of the prior draws decoded into the VAE sample grid: the same codes every epoch."""


def ssim_window(image_size: int) -> int:
    """SSIM's Gaussian window side: the standard 11 px from 20 px images up, smaller below (5 px at 8x8)."""
    k = min(11, image_size // 2 + 1)
    return k if k % 2 else k - 1


def reset_metrics(metrics: nn.ModuleDict, stage: str) -> None:
    """Reset a stage's metrics in the current grad mode.

    `trainer.validate` resets metrics under inference mode, which leaves inference tensors as their states;
    a later `trainer.fit` validates under no_grad, where the metrics' in-place updates of those tensors fail.
    """
    for key, metric in metrics.items():
        if key.startswith(f"{stage}_"):
            metric.reset()


class AutoencoderModule(LightningModule):
    """Convolutional autoencoder or VAE trained to reconstruct images.

    The loss is the per-pixel MSE in the data's normalised space; a VAE adds `beta` times the KL divergence
    per input value (KL in nats / (C*H*W)), so that beta = 1 weighs both terms alike at any image size.
    Validation and test log `<stage>/loss`, `<stage>/mse`, `<stage>/psnr`, `<stage>/ssim` (and `<stage>/kl`,
    the KL per image in nats, for a VAE); mse, PSNR and SSIM are measured on images un-normalised to [0, 1]
    (data range 1), SSIM with a Gaussian window of the largest odd side <= min(11, S // 2 + 1) and sigma
    1.5 * side / 11, so that 8x8 images work. Training logs `train/loss` (and `train/kl`). Each validation
    epoch logs a grid of originals above their reconstructions and, for a VAE, a grid of prior samples.

    Args:
        net: The network; fields left unset come from its preset, `in_channels` and `image_size` from the
            data.
        optim: Optimizer and learning-rate schedule (default: AdamW, lr 1e-3).
        beta: Weight of the VAE's KL term (ignored for kind='ae').
        mean: Per-channel mean the data was normalised with; None: the DataModule's `mean`.
        std: Per-channel standard deviation the data was normalised with; None: the DataModule's `std`.
        num_images: Images per row of the logged grids (0 logs none).
    """

    # `--checkpoint.best auto` keeps the best checkpoint by this validation metric (and mode).
    checkpoint_metric: tuple[str, str] | None = ("val/loss", "min")

    def __init__(
        self,
        net: AutoencoderConfig = AutoencoderConfig(),  # noqa: B008 (a dataclass default, never mutated)
        optim: OptimConfig = OptimConfig(name="adamw", lr=1e-3),  # noqa: B008
        beta: float = 1.0,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        num_images: int = 8,
    ) -> None:
        super().__init__()
        if beta < 0:
            raise UserError(f"model.beta must be >= 0, got {beta}")
        if num_images < 0:
            raise UserError(f"model.num_images must be >= 0, got {num_images}")
        self.cfg = resolve(as_config(AutoencoderConfig, net), PRESETS)
        self.optim_cfg = as_config(OptimConfig, optim)
        self.beta, self.num_images = beta, num_images
        self.mean = list(mean) if mean is not None else None
        self.std = list(std) if std is not None else None
        # Plain dicts and lists, so that checkpoints never pickle classes.
        self.save_hyperparameters(
            {
                "net": to_dict(self.cfg), "optim": to_dict(self.optim_cfg), "beta": beta,
                "mean": self.mean, "std": self.std, "num_images": num_images,
            }
        )  # fmt: skip
        self.net: Autoencoder | None = None
        self.metrics = nn.ModuleDict()
        self._shown: torch.Tensor | None = None  # first validation images, for the reconstruction grid

    def configure_model(self) -> None:
        """Build the network and metrics once the data's sizes are known (idempotent)."""
        if self.net is not None:
            return
        data = attached_datamodule(self)
        fill_from_data(self.cfg, data, {"in_channels": "channels", "image_size": "image_size"})
        self.mean = self._normalisation("mean", self.mean, data)
        self.std = self._normalisation("std", self.std, data)
        if min(self.std) <= 0:
            raise UserError(f"model.std must be > 0, got {self.std}")
        self.hparams.update(net=to_dict(self.cfg), mean=self.mean, std=self.std)
        self.net = parallelize(self, lambda: Autoencoder(self.cfg))  # the strategy's sharding plan
        # FSDP2 gathers the root's own parameters (latent projections, head) only around forward();
        # sample() calls decode() directly, so decode() must count as a forward (a no-op when unsharded).
        register_fsdp_forward_method(self.net, "decode")
        k = ssim_window(self.cfg.image_size)
        for stage in ("val", "test"):
            # Keys carry a suffix: ModuleDict refuses names that clash with Module methods ("train").
            self.metrics[f"{stage}_mse"] = MeanSquaredError()
            self.metrics[f"{stage}_psnr"] = PeakSignalNoiseRatio(data_range=1.0)
            self.metrics[f"{stage}_ssim"] = StructuralSimilarityIndexMeasure(
                data_range=1.0, kernel_size=k, sigma=1.5 * k / 11
            )

    def _normalisation(self, name: str, value: list[float] | None, data: object) -> list[float]:
        if value is None and data is not None and getattr(data, name, None) is not None:
            value = [float(v) for v in getattr(data, name)]
        if value is None:
            raise UserError(f"model.{name} is not set and the data does not provide '{name}'")
        if len(value) not in (1, self.cfg.in_channels):
            raise UserError(
                f"model.{name} has {len(value)} values; the images have {self.cfg.in_channels} channels"
            )
        return list(value)

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, H, W) in [0, 1]
        """Undo the data's normalisation and clip to [0, 1]."""
        mean = torch.tensor(self.mean, device=x.device, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=torch.float32).view(1, -1, 1, 1)
        return (x.float() * std + mean).clamp(0.0, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, H, W)
        """The reconstruction (a VAE decodes its mean code in eval mode)."""
        return self.net(x)[0]

    def _shared_step(self, batch: torch.Tensor | tuple[torch.Tensor, ...], stage: str) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch  # labels, if any, are not used
        recon, mu, logvar = self.net(x)
        loss = F.mse_loss(recon, x)
        size = x.shape[0]
        values = {}
        if logvar is not None:
            kl = kl_divergence(mu, logvar).mean()
            loss = loss + self.beta * kl / x[0].numel()
            values["kl"] = kl
        values["loss"] = loss
        # Training logs per step (TensorBoard then shows plain `train/loss`); evaluation per epoch.
        if stage == "train":
            log_train(self, values, size)
            return loss
        for name, value in values.items():
            self.log(f"{stage}/{name}", value, prog_bar=name == "loss", sync_dist=True, batch_size=size)
        self._update_metrics(x, recon.detach(), stage)
        return loss

    def _update_metrics(self, x: torch.Tensor, recon: torch.Tensor, stage: str) -> None:
        # SSIM's windowed variances (E[x^2] - E[x]^2, by convolution) lose their digits in bf16 autocast.
        with torch.autocast(x.device.type, enabled=False):
            target, pred = self.to_unit(x), self.to_unit(recon)
            for name in ("mse", "psnr", "ssim"):
                metric = self.metrics[f"{stage}_{name}"]
                metric.update(pred, target)
                self.log(f"{stage}/{name}", metric, on_step=False, on_epoch=True, batch_size=x.shape[0])

    def training_step(self, batch: torch.Tensor | tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        """One optimisation step's loss."""
        return self._shared_step(batch, "train")

    def validation_step(self, batch: torch.Tensor | tuple[torch.Tensor, ...], batch_idx: int) -> None:
        """Validation loss and image metrics; keeps the first images for the epoch's grids."""
        if batch_idx == 0 and self.num_images:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            self._shown = x[: self.num_images].detach()
        self._shared_step(batch, "val")

    def test_step(self, batch: torch.Tensor | tuple[torch.Tensor, ...], batch_idx: int) -> None:
        """Test loss and image metrics."""
        self._shared_step(batch, "test")

    def predict_step(self, batch: torch.Tensor | tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        """Reconstructions of the batch's images."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(x)

    def on_validation_epoch_start(self) -> None:
        """Fresh metric states (see `reset_metrics`)."""
        reset_metrics(self.metrics, "val")

    def on_test_epoch_start(self) -> None:
        """Fresh metric states (see `reset_metrics`)."""
        reset_metrics(self.metrics, "test")

    @torch.no_grad()
    def on_validation_epoch_end(self) -> None:
        """Log originals above their reconstructions and, for a VAE, samples from the prior."""
        if self._shown is None:
            return
        x, self._shown = self._shown, None
        # Every rank runs the network (a sharded one needs all ranks); log_image writes on rank 0 only.
        pairs = torch.cat([self.to_unit(x), self.to_unit(self(x))])
        log_image(self, "val/reconstructions", pairs, nrow=len(x))
        if self.cfg.kind == "vae":
            gen = torch.Generator().manual_seed(SAMPLE_SEED)
            samples = self.net.sample(2 * self.num_images, generator=gen)
            log_image(self, "val/samples", self.to_unit(samples), nrow=self.num_images)

    def configure_optimizers(self) -> dict:
        """The optimizer and its warm-up + cosine schedule."""
        return optimizer_and_schedule(self, list(self.parameters()), self.optim_cfg)
