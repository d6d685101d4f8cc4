"""The RNN LightningModule: a character-level language model or a row-wise image classifier."""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from bigtrain.models.attached import attached_datamodule
from bigtrain.models.config import as_config, fill_from_data, resolve, to_dict
from bigtrain.models.lm import fresh_metric, lm_epoch_metrics, log_text_sample
from bigtrain.models.optim import OptimConfig, optimizer_and_schedule
from bigtrain.models.rnn.model import PRESETS, RNN, RNNConfig
from bigtrain.models.train_metrics import log_train
from bigtrain.strategies.parallelize import parallelize


class RNNModule(LightningModule):
    """An LSTM/GRU trained either as a language model (`net.task: lm`) or an image classifier (`classify`).

    Language modelling takes TextDataModule batches (ids (B, T), next ids (B, T)); classification takes
    ImageDataModule batches (images (B, C, H, W), labels (B,)) and reads each image row by row.

    Args:
        net: The network (a preset plus overrides); the sizes come from the data.
        optim: Optimizer and learning-rate schedule (gradient clipping: `trainer.gradient_clip_val`).
        sample_tokens: Tokens of generated text logged under `samples/text` after each validation (task
            'lm'); 0: none.
    """

    # `--checkpoint.best auto` keeps the best checkpoint by this validation metric (and mode).
    checkpoint_metric: tuple[str, str] | None = ("val/loss", "min")

    def __init__(
        self,
        net: RNNConfig = RNNConfig(),  # noqa: B008 (never mutated: resolve() copies it)
        optim: OptimConfig = OptimConfig(lr=2e-3),  # noqa: B008 (a dataclass default, never mutated)
        sample_tokens: int = 200,
    ) -> None:
        super().__init__()
        self.cfg = resolve(as_config(RNNConfig, net), PRESETS)
        self.optim_cfg = as_config(OptimConfig, optim)
        self.sample_tokens = sample_tokens
        # Plain dicts so checkpoints never pickle classes.
        self.save_hyperparameters(
            {"net": to_dict(self.cfg), "optim": to_dict(self.optim_cfg), "sample_tokens": sample_tokens}
        )
        self.lm = self.cfg.task == "lm"
        self.net: RNN | None = None
        self.loss_mean = nn.ModuleDict({"val": MeanMetric(), "test": MeanMetric()})
        self.acc: nn.ModuleDict | None = None
        self.last_sample: str | None = None

    def configure_model(self) -> None:
        """Build the network once its data-derived sizes are known (idempotent)."""
        if self.net is not None:
            return
        data = attached_datamodule(self)
        if self.lm:
            fill_from_data(self.cfg, data, {"vocab_size": "vocab_size"})
        else:
            fill_from_data(self.cfg, data, {"num_classes": "num_classes"})
            fill_from_data(self.cfg, _row_features(data), {"input_size": "input_size"})
            n = self.cfg.num_classes
            self.acc = nn.ModuleDict({"val": MulticlassAccuracy(n), "test": MulticlassAccuracy(n)})
        self.hparams["net"] = to_dict(self.cfg)
        self.net = parallelize(self, lambda: RNN(self.cfg))  # the strategy's sharding plan

    def forward(self, x: Tensor) -> Tensor:
        """lm: ids (B, T) -> logits (B, T, V); classify: images (B, C, H, W) -> logits (B, classes)."""
        return self.net(x)

    def _shared_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch  # lm: (B, T), (B, T); classify: (B, C, H, W), (B,)
        logits = self.net(x)  # lm: (B, T, V); classify: (B, classes)
        loss = F.cross_entropy(logits.flatten(0, -2), y.flatten())
        if stage == "train":
            log_train(self, {"loss": loss}, x.shape[0])
            return loss
        self.loss_mean[stage].update(loss.detach(), weight=y.numel())
        if not self.lm:
            self.acc[stage].update(logits.detach(), y)
            self.log(f"{stage}/acc", self.acc[stage], on_step=False, on_epoch=True)
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """One optimisation step's loss."""
        return self._shared_step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """Accumulate the validation loss (and accuracy)."""
        self._shared_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """Accumulate the test loss (and accuracy)."""
        self._shared_step(batch, "test")

    def _log_epoch_loss(self, stage: str) -> None:
        mean = self.loss_mean[stage]
        if not mean.update_called:
            return
        metrics = lm_epoch_metrics(stage, mean)
        # Perplexity and bits per token mean nothing for a classifier.
        self.log_dict(metrics if self.lm else {f"{stage}/loss": metrics[f"{stage}/loss"]}, sync_dist=True)

    def _fresh_metrics(self, stage: str) -> None:
        fresh_metric(self.loss_mean[stage])
        if self.acc is not None:
            fresh_metric(self.acc[stage])

    def on_validation_epoch_start(self) -> None:
        """Fresh metric state, made in this loop's grad mode (see `fresh_metric`)."""
        self._fresh_metrics("val")

    def on_test_epoch_start(self) -> None:
        """Fresh metric state, made in this loop's grad mode (see `fresh_metric`)."""
        self._fresh_metrics("test")

    def on_validation_epoch_end(self) -> None:
        """Log the epoch's validation loss (lm: also ppl, bpc and a text sample)."""
        self._log_epoch_loss("val")
        if not self.lm or self.trainer.sanity_checking:
            return
        self.last_sample = log_text_sample(self, self._generate, self.sample_tokens)

    def on_test_epoch_end(self) -> None:
        """Log the epoch's test loss (lm: also ppl and bpc)."""
        self._log_epoch_loss("test")

    def _generate(self, idx: Tensor, n: int, generator: torch.Generator) -> Tensor:
        return self.net.generate(idx, n, generator=generator)

    def configure_optimizers(self) -> dict:
        """AdamW (see OptimConfig); gradient clipping is the trainer's `gradient_clip_val`."""
        return optimizer_and_schedule(self, list(self.parameters()), self.optim_cfg)


def _row_features(data: object) -> SimpleNamespace | None:
    """The features per row of the data's images (channels * image_size), for `fill_from_data`."""
    channels, size = getattr(data, "channels", None), getattr(data, "image_size", None)
    if channels is None or size is None:
        return None
    return SimpleNamespace(input_size=channels * size)
