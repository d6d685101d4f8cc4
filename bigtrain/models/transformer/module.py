"""The GPT LightningModule: next-token cross-entropy, perplexity and bits per token, text samples."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torchmetrics import MeanMetric

from bigtrain.models.attached import attached_datamodule
from bigtrain.models.config import as_config, fill_from_data, resolve, to_dict
from bigtrain.models.lm import fresh_metric, lm_epoch_metrics, log_text_sample
from bigtrain.models.optim import OptimConfig, optimizer_and_schedule
from bigtrain.models.train_metrics import log_train
from bigtrain.models.transformer.model import GPT, PRESETS, GPTConfig
from bigtrain.strategies.parallelize import parallelize


class GPTModule(LightningModule):
    """A GPT language model: next-token cross-entropy at every position, with text samples.

    Args:
        net: The network (a preset plus overrides); block_size and vocab_size come from the data.
        optim: Optimizer and learning-rate schedule.
        sample_tokens: Tokens of generated text logged under `samples/text` after each validation; 0: none.
    """

    # `--checkpoint.best auto` keeps the best checkpoint by this validation metric (and mode).
    checkpoint_metric: tuple[str, str] | None = ("val/loss", "min")

    def __init__(
        self,
        net: GPTConfig = GPTConfig(),  # noqa: B008 (never mutated: resolve() copies it)
        optim: OptimConfig = OptimConfig(  # noqa: B008 (a dataclass default, never mutated)
            lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1, warmup_steps=100, min_lr=1e-4
        ),
        sample_tokens: int = 200,
    ) -> None:
        super().__init__()
        self.cfg = resolve(as_config(GPTConfig, net), PRESETS)
        self.optim_cfg = as_config(OptimConfig, optim)
        self.sample_tokens = sample_tokens
        # Plain dicts so checkpoints never pickle classes.
        self.save_hyperparameters(
            {"net": to_dict(self.cfg), "optim": to_dict(self.optim_cfg), "sample_tokens": sample_tokens}
        )
        self.net: GPT | None = None
        self.loss_mean = nn.ModuleDict({"val": MeanMetric(), "test": MeanMetric()})
        self.last_sample: str | None = None

    def configure_model(self) -> None:
        """Build the network once its data-derived sizes are known (idempotent)."""
        if self.net is not None:
            return
        fill_from_data(
            self.cfg, attached_datamodule(self), {"vocab_size": "vocab_size", "block_size": "block_size"}
        )
        self.hparams["net"] = to_dict(self.cfg)
        self.net = parallelize(self, lambda: GPT(self.cfg))  # the strategy's sharding plan

    def forward(self, idx: Tensor) -> Tensor:
        """Token ids (B, T) -> logits (B, T, vocab_size)."""
        return self.net(idx)

    def _shared_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch  # (B, T), (B, T)
        logits = self.net(x)  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        if stage == "train":
            log_train(self, {"loss": loss}, x.shape[0])
        else:
            self.loss_mean[stage].update(loss.detach(), weight=y.numel())
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """One optimisation step's loss."""
        return self._shared_step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """Accumulate the validation loss."""
        self._shared_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """Accumulate the test loss."""
        self._shared_step(batch, "test")

    def on_validation_epoch_start(self) -> None:
        """Fresh metric state, made in this loop's grad mode (see `fresh_metric`)."""
        fresh_metric(self.loss_mean["val"])

    def on_test_epoch_start(self) -> None:
        """Fresh metric state, made in this loop's grad mode (see `fresh_metric`)."""
        fresh_metric(self.loss_mean["test"])

    def on_validation_epoch_end(self) -> None:
        """Log val/loss, val/ppl, val/bpc and a generated text sample."""
        if self.loss_mean["val"].update_called:
            self.log_dict(lm_epoch_metrics("val", self.loss_mean["val"]), sync_dist=True)
        if self.trainer.sanity_checking:
            return
        self.last_sample = log_text_sample(self, self._generate, self.sample_tokens)

    def on_test_epoch_end(self) -> None:
        """Log test/loss, test/ppl, test/bpc."""
        if self.loss_mean["test"].update_called:
            self.log_dict(lm_epoch_metrics("test", self.loss_mean["test"]), sync_dist=True)

    def _generate(self, idx: Tensor, n: int, generator: torch.Generator) -> Tensor:
        return self.net.generate(idx, n, generator=generator)

    def configure_optimizers(self) -> dict:
        """AdamW with warm-up and cosine decay (see OptimConfig)."""
        return optimizer_and_schedule(self, list(self.parameters()), self.optim_cfg)
