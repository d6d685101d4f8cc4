"""TensorBoard helpers: image grids and text, written by rank 0 when a TensorBoard logger is attached."""

from __future__ import annotations

import math
from typing import Any

import torch
from lightning.pytorch import LightningModule

from bigtrain.lightning_compat import attached_trainer, logging_step


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
        experiment.add_image(tag, image_grid(images, nrow), global_step=_step(module))


def log_text(module: LightningModule, tag: str, text: str) -> None:
    """Log a text sample to TensorBoard, if a TensorBoard logger is attached (rank 0 only)."""
    experiment = _tensorboard(module)
    if experiment is not None:
        # Markdown would eat newlines and markup characters of generated text; a code block keeps them.
        experiment.add_text(tag, "```\n" + text + "\n```", global_step=_step(module))


def _step(module: LightningModule) -> int:
    """The step the module's scalars are logged at, so that samples line up with them in TensorBoard (for
    the GAN, `global_step` counts a D and a G step per batch, the scalars one step per batch)."""
    trainer = attached_trainer(module)
    return logging_step(trainer) if trainer is not None else module.global_step


def _tensorboard(module: LightningModule) -> Any:
    trainer = attached_trainer(module)
    if trainer is None or not trainer.is_global_zero:
        return None
    from lightning.pytorch.loggers import TensorBoardLogger

    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None
