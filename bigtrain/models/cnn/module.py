"""The image-classification LightningModule: a ResNet, cross-entropy, top-1 and top-5 accuracy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from bigtrain.errors import UserError
from bigtrain.models.attached import attached_datamodule
from bigtrain.models.cnn.model import PRESETS, ResNet, ResNetConfig
from bigtrain.models.config import as_config, fill_from_data, resolve, to_dict
from bigtrain.models.optim import OptimConfig, optimizer_and_schedule
from bigtrain.models.train_metrics import log_train
from bigtrain.strategies.parallelize import parallelize

STAGES = ("train", "val", "test")


def reset_metrics(metrics: nn.ModuleDict, stage: str) -> None:
    """Reset a stage's metrics in the current grad mode.

    `trainer.validate` resets metrics under inference mode, which leaves inference tensors as their states;
    a later `trainer.fit` validates under no_grad, where in-place metric updates of those tensors fail.
    """
    for key, metric in metrics.items():
        if key.startswith(f"{stage}_"):
            metric.reset()


class ResNetClassifier(LightningModule):
    """Image classifier: a ResNet trained with cross-entropy.

    Logs `<stage>/loss`, `<stage>/acc` (top-1) and, with more than 5 classes, `<stage>/acc_top5` for the
    stages train, val and test. With 5 classes or fewer top-5 accuracy is always 1 and is not logged.

    Args:
        net: The network; fields left unset come from its preset, `in_channels` and `num_classes` from
            the data.
        optim: Optimizer and learning-rate schedule (default: SGD, lr 0.1, momentum 0.9, weight decay 5e-4,
            200 warm-up steps, cosine decay over the run).
        label_smoothing: Label smoothing of the training loss; validation and test losses are plain
            cross-entropy so that they compare across runs.
    """

    # `--checkpoint.best auto` keeps the best checkpoint by this validation metric (and mode).
    checkpoint_metric: tuple[str, str] | None = ("val/acc", "max")

    def __init__(
        self,
        net: ResNetConfig = ResNetConfig(),  # noqa: B008 (a dataclass default, never mutated)
        optim: OptimConfig = OptimConfig(  # noqa: B008
            name="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, warmup_steps=200
        ),
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise UserError(f"model.label_smoothing must be in [0, 1), got {label_smoothing}")
        self.cfg = resolve(as_config(ResNetConfig, net), PRESETS)
        self.optim_cfg = as_config(OptimConfig, optim)
        self.label_smoothing = label_smoothing
        # Plain dicts, so that checkpoints never pickle classes.
        self.save_hyperparameters(
            {"net": to_dict(self.cfg), "optim": to_dict(self.optim_cfg), "label_smoothing": label_smoothing}
        )
        self.net: ResNet | None = None
        self.metrics = nn.ModuleDict()

    def configure_model(self) -> None:
        """Build the network and metrics once the data's sizes are known (idempotent)."""
        if self.net is not None:
            return
        fill_from_data(
            self.cfg, attached_datamodule(self), {"in_channels": "channels", "num_classes": "num_classes"}
        )
        self.hparams["net"] = to_dict(self.cfg)
        self.net = parallelize(self, lambda: ResNet(self.cfg))  # the strategy's sharding plan
        n = self.cfg.num_classes
        for stage in STAGES:
            # Keys carry a suffix: ModuleDict refuses names such as "train" that clash with Module methods.
            # Training steps skip the labels' range check, a host sync per step (cross_entropy has just
            # refused any label out of range).
            check = stage != "train"
            self.metrics[f"{stage}_acc"] = MulticlassAccuracy(
                n, top_k=1, average="micro", validate_args=check
            )
            if n > 5:
                self.metrics[f"{stage}_acc_top5"] = MulticlassAccuracy(
                    n, top_k=5, average="micro", validate_args=check
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, num_classes)
        """Class logits."""
        return self.net(x)

    def _shared_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        logits = self.net(x)  # (B, num_classes)
        smoothing = self.label_smoothing if stage == "train" else 0.0
        loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
        size = x.shape[0]
        # Training logs per step (TensorBoard then shows plain `train/loss`); evaluation per epoch.
        if stage == "train":
            log_train(self, {"loss": loss}, size)
        else:
            self.log(f"{stage}/loss", loss, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=size)
        for name in ("acc", "acc_top5"):
            key = f"{stage}_{name}"
            if key in self.metrics:
                self.metrics[key].update(logits.detach(), y)
                if stage != "train":  # train accuracy: logged once, at the epoch's end (a log call costs)
                    self.log(f"{stage}/{name}", self.metrics[key], on_epoch=True, batch_size=size)
        return loss

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """One optimisation step's loss."""
        return self._shared_step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        """Validation loss and accuracy."""
        self._shared_step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        """Test loss and accuracy."""
        self._shared_step(batch, "test")

    def predict_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Predicted class of each image."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.net(x).argmax(dim=-1)

    def on_train_epoch_start(self) -> None:
        """Fresh metric states (see `reset_metrics`)."""
        reset_metrics(self.metrics, "train")

    def on_train_epoch_end(self) -> None:
        """Log the epoch's train accuracy, updated at every step."""
        for name in ("acc", "acc_top5"):
            if f"train_{name}" in self.metrics and self.metrics[f"train_{name}"].update_called:
                self.log(f"train/{name}", self.metrics[f"train_{name}"], on_epoch=True)

    def on_validation_epoch_start(self) -> None:
        """Fresh metric states (see `reset_metrics`)."""
        reset_metrics(self.metrics, "val")

    def on_test_epoch_start(self) -> None:
        """Fresh metric states (see `reset_metrics`)."""
        reset_metrics(self.metrics, "test")

    def configure_optimizers(self) -> dict:
        """The optimizer and its warm-up + cosine schedule."""
        return optimizer_and_schedule(self, list(self.parameters()), self.optim_cfg)
