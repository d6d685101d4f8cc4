"""What the families' LightningModules share: the optimizer recipe, the LR schedule, sample logging, and
for the language models (transformer, rnn) the epoch metrics and the text sample."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torchmetrics import MeanMetric, Metric

from bigtrain.errors import UserError
from bigtrain.lightning_compat import attached_trainer


@dataclass(kw_only=True)
class OptimConfig:
    """Optimizer and learning-rate schedule, in optimizer steps (DESIGN.md convention 10)."""

    name: Literal["adamw", "sgd"] = "adamw"
    """Optimizer: AdamW, or SGD with Nesterov momentum."""
    lr: float = 1e-3
    """Peak learning rate, reached at the end of the warm-up."""
    weight_decay: float = 0.0
    """Decoupled weight decay, applied to weights of rank >= 2 only (not biases or norms)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW's betas."""
    momentum: float = 0.9
    """SGD's momentum."""
    warmup_steps: int = 0
    """Linear warm-up from 0 to `lr` over this many optimizer steps."""
    decay_steps: int | None = None
    """Cosine decay length in optimizer steps, counted from step 0; None: the whole run."""
    min_lr: float = 0.0
    """Learning rate at the end of the cosine decay."""

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise UserError(f"model.optim.lr must be > 0, got {self.lr}")
        if self.warmup_steps < 0:
            raise UserError(f"model.optim.warmup_steps must be >= 0, got {self.warmup_steps}")


def build_optimizer(params: list[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW or SGD, with weight decay on matrices and kernels only."""
    decay = [p for p in params if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in params if p.requires_grad and p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))


def lr_factor(step: int, cfg: OptimConfig, total_steps: int) -> float:
    """Multiplier of the peak LR at an optimizer step: linear warm-up, then cosine to `min_lr`."""
    if step < cfg.warmup_steps:
        return (step + 1) / (cfg.warmup_steps + 1)
    decay = cfg.decay_steps if cfg.decay_steps is not None else total_steps
    if decay <= cfg.warmup_steps:
        return 1.0
    progress = min(1.0, (step - cfg.warmup_steps) / (decay - cfg.warmup_steps))
    floor = cfg.min_lr / cfg.lr
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def optimizer_and_schedule(module: LightningModule, params: list[nn.Parameter], cfg: OptimConfig) -> dict:
    """The `configure_optimizers` return value for one optimizer with the warm-up + cosine schedule."""
    opt = build_optimizer(params, cfg)
    total = _total_steps(module)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, cfg, total))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _total_steps(module: LightningModule) -> int:
    trainer = attached_trainer(module)
    if trainer is None:
        return 1
    total = trainer.estimated_stepping_batches
    return int(total) if math.isfinite(total) else 1


def image_grid(images: torch.Tensor, nrow: int = 8, pad: int = 1) -> torch.Tensor:
    """Tile a (N, C, H, W) batch into one (C, H', W') image with values in [0, 1] (min-max scaled)."""
    x = images.detach().float().cpu()
    lo, hi = x.amin(), x.amax()
    x = (x - lo) / (hi - lo).clamp_min(1e-8)
    n, c, h, w = x.shape
    ncol = min(nrow, n)
    nrows = math.ceil(n / ncol)
    grid = torch.ones(c, nrows * (h + pad) + pad, ncol * (w + pad) + pad)
    for i in range(n):
        r, col = divmod(i, ncol)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, top : top + h, left : left + w] = x[i]
    return grid


def log_image(module: LightningModule, tag: str, images: torch.Tensor, nrow: int = 8) -> None:
    """Log a grid of images to TensorBoard, if a TensorBoard logger is attached (rank 0 only)."""
    experiment = _tensorboard(module)
    if experiment is not None:
        experiment.add_image(tag, image_grid(images, nrow), global_step=module.global_step)


def log_text(module: LightningModule, tag: str, text: str) -> None:
    """Log a text sample to TensorBoard, if a TensorBoard logger is attached (rank 0 only)."""
    experiment = _tensorboard(module)
    if experiment is not None:
        # Markdown would eat newlines and markup characters of generated text; a code block keeps them.
        experiment.add_text(tag, "```\n" + text + "\n```", global_step=module.global_step)


def _tensorboard(module: LightningModule) -> Any:
    trainer = attached_trainer(module)
    if trainer is None or not trainer.is_global_zero:
        return None
    from lightning.pytorch.loggers import TensorBoardLogger

    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def attached_datamodule(module: LightningModule) -> Any | None:
    """The DataModule of the trainer the module is attached to, or None (e.g. in load_from_checkpoint)."""
    trainer = attached_trainer(module)
    return getattr(trainer, "datamodule", None) if trainer is not None else None


SAMPLE_SEED = 1234
"""Seed of the generator text samples are drawn with, so each epoch's sample is comparable."""

Generate = Callable[[Tensor, int, torch.Generator], Tensor]
"""(prompt ids (1, T), new tokens, generator) -> ids (1, T + new)."""


def lm_epoch_metrics(stage: str, loss_mean: MeanMetric) -> dict[str, Tensor]:
    """`<stage>/loss`, `/ppl` (exp of the mean loss) and `/bpc` (loss in bits per token) from a mean."""
    loss = loss_mean.compute()  # synchronised across ranks by torchmetrics
    loss_mean.reset()
    return {f"{stage}/loss": loss, f"{stage}/ppl": loss.exp(), f"{stage}/bpc": loss / math.log(2)}


def fresh_metric(metric: Metric) -> None:
    """Reset a metric at the start of an evaluation epoch.

    `trainer.validate` runs under inference mode, so a reset there leaves inference tensors that the
    validation inside `trainer.fit` (plain no_grad) may not update in place; resetting at each epoch's start
    makes the state in the mode that will update it.
    """
    metric.reset()


def text_sample(module: LightningModule, generate: Generate, n_tokens: int) -> str | None:
    """Text generated from a newline, decoded by the attached DataModule; fixed seed, global RNG untouched.

    Every rank generates (a sharded net needs all ranks in each forward); `log_text` keeps rank 0's.
    """
    data = attached_datamodule(module)
    if n_tokens <= 0 or data is None or not hasattr(data, "decode"):
        return None
    prompt = _newline_prompt(data)
    idx = torch.tensor([prompt], dtype=torch.long, device=module.device)  # (1, 1)
    gen = torch.Generator(device=module.device).manual_seed(SAMPLE_SEED)
    out = generate(idx, n_tokens, gen)[0].tolist()
    # A vocabulary padded beyond the data's has ids the DataModule cannot decode.
    limit = getattr(data, "vocab_size", None) or math.inf
    return data.decode([i for i in out if i < limit])


def log_text_sample(module: LightningModule, generate: Generate, n_tokens: int) -> str | None:
    """A `text_sample`, also logged to TensorBoard under `samples/text`; None when there is none."""
    sample = text_sample(module, generate, n_tokens)
    if sample is not None:
        log_text(module, "samples/text", sample)
    return sample


def _newline_prompt(data: object) -> list[int]:
    try:
        ids = data.encode("\n")  # type: ignore[attr-defined]
    except (KeyError, ValueError, UserError):  # a vocabulary without a newline
        ids = []
    return list(ids)[-1:] or [0]
