"""BatchNorm that normalises over the global batch on any device and backend (gloo included).

torch's `nn.SyncBatchNorm` refuses CPU tensors and replaces each layer by a plain SyncBatchNorm, which loses a
family's own BatchNorm subclass (its `reset_parameters`, used again when a meta-device model is
materialised). Here each BatchNorm keeps its class and parameters; only its class gains a forward that
reduces the batch statistics across the data-parallel ranks with autograd-aware all-reduces.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from bigtrain.torch_compat import BatchNormBase, check_input_dim

_SYNCED: dict[type, type] = {}


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks of a group, differentiable: the gradient of each rank's input is the summed
    gradient (torch's own autograd all_reduce is deprecated, and its replacement is a private module)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, group: Any) -> torch.Tensor:  # noqa: D102
        ctx.group = group
        out = x.clone()
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: D102
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


def _all_reduce_sum(x: torch.Tensor, group: Any) -> torch.Tensor:
    return _AllReduceSum.apply(x, group)


class SyncedBatchNorm(BatchNormBase):
    """Mixin placed before a BatchNorm class: training-mode statistics over all data-parallel ranks."""

    sync_group: Any = None
    """The data-parallel process group (None: the default group)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, ...) -> (B, C, ...)
        """Batch statistics over every rank's share of the global batch in training, running ones in eval."""
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        if dist.get_world_size(self.sync_group) == 1:
            return super().forward(x)
        check_input_dim(self, x)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        dims = [0, *range(2, x.dim())]
        # In fp32 whatever the input's dtype, as torch's batch_norm does: a bf16 element count or sum is
        # inexact, and fp32 parameters (FSDP mixed precision keeps them) would otherwise promote the output.
        xf = x.to(torch.promote_types(x.dtype, torch.float32))
        group = self.sync_group or dist.group.WORLD
        local_n = torch.tensor([x.numel() // x.shape[1]], dtype=torch.float32, device=x.device)
        n = _all_reduce_sum(local_n, group=group)
        # Two passes (mean, then squared deviations) match a single process's variance to rounding.
        mean = _all_reduce_sum(xf.sum(dims), group=group) / n
        centred = xf - mean.view(shape)
        var = _all_reduce_sum(centred.pow(2).sum(dims), group=group) / n
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach() * n / (n - 1).clamp_min(1))
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        self.num_batches_tracked.add_(1)
        momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
        self.running_var.lerp_(unbiased_var.to(self.running_var.dtype), momentum)


def sync_batchnorm(net: nn.Module, group: Any = None) -> int:
    """Make every BatchNorm in `net` normalise over the ranks of `group`, in place; returns how many."""
    count = 0
    for module in net.modules():
        if not isinstance(module, BatchNormBase) or isinstance(module, nn.SyncBatchNorm):
            continue
        if not isinstance(module, SyncedBatchNorm):
            cls = type(module)
            if cls not in _SYNCED:
                _SYNCED[cls] = type(f"Synced{cls.__name__}", (SyncedBatchNorm, cls), {})
            module.__class__ = _SYNCED[cls]
        module.sync_group = group
        count += 1
    return count
