"""Helpers of the language models (transformer, rnn): epoch metrics and the text sample."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from lightning.pytorch import LightningModule
from torch import Tensor
from torchmetrics import MeanMetric, Metric

from bigtrain.errors import UserError
from bigtrain.models.attached import attached_datamodule
from bigtrain.models.tensorboard import log_text

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
