"""The optimizer recipe the families share: AdamW or SGD with decay on matrices only, and a linear warm-up
then cosine learning-rate schedule counted in optimizer steps."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from lightning.pytorch import LightningModule
from torch import nn

from bigtrain.errors import UserError
from bigtrain.lightning_compat import attached_trainer


@dataclass(kw_only=True)
class OptimConfig:
    """Optimizer and learning-rate schedule, in optimizer steps (the same optimisation at any scale)."""

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
        numbers = {"lr": self.lr, "weight_decay": self.weight_decay, "momentum": self.momentum}
        numbers |= {"min_lr": self.min_lr, "betas": self.betas[0], "betas ": self.betas[1]}
        for name, value in numbers.items():
            # A YAML `.nan` or `.inf` parses as a float and would poison every weight at the first step.
            if not math.isfinite(value):
                raise UserError(f"model.optim.{name.strip()} must be a finite number, got {value}")
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
