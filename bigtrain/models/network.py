"""What the families' plain-PyTorch networks share: config checks, re-initialisation, a parameter count,
token sampling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bigtrain.errors import UserError


def check_all_set(cfg: object) -> None:
    """Raise UserError naming the fields of a network config that are still None."""
    unset = [k for k, v in vars(cfg).items() if v is None]
    if unset:
        raise UserError(
            f"model.net fields not set: {', '.join(unset)} (resolve the preset and fill the data)"
        )


class Network(nn.Module):
    """Base of a family's network: `init_weights()` and `num_params()`; the family adds `blocks()`."""

    @torch.no_grad()
    def init_weights(self) -> None:
        """(Re-)initialise every parameter and buffer in construction order (e.g. after `to_empty`).

        Each submodule resets its own through `reset_parameters()` (a BatchNorm also its running statistics),
        so a network built on the meta device and initialised here equals one built on the CPU.
        """
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def num_params(self) -> int:
        """Number of parameters."""
        return sum(p.numel() for p in self.parameters())

    # What `bigtrain plan` asks a network. A family with a closed form answers `activation_bytes`; the others
    # give an example batch and loss, which the planner traces on the meta device.

    def activation_bytes(
        self,
        batch: int,
        sample_shape: tuple[int, ...] | None,
        compute_bytes: int,
        tp: int,
        checkpointing: bool,
    ) -> float | None:
        """Activation bytes one device keeps for backward at `batch` samples; None: trace `example_loss`."""
        return None

    def example_input(
        self, batch: int, sample_shape: tuple[int, ...] | None, dtype: torch.dtype
    ) -> Tensor | None:
        """A batch of inputs shaped like the data's samples (on the default device); None: unknown shape."""
        return None if sample_shape is None else torch.empty(batch, *sample_shape, dtype=dtype)

    def example_loss(self, x: Tensor) -> Tensor:
        """One training forward and its loss on `example_input`: what autograd saves is what is counted."""
        return self(x).float().sum()


def sample_next(
    logits: Tensor, temperature: float, top_k: int | None, generator: torch.Generator | None
) -> Tensor:
    """Sample one token per row from (B, V) logits -> (B, 1), optionally from the top k only."""
    logits = logits.float() / max(temperature, 1e-8)
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, [-1]]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
