"""Non-finite guard: a NaN or Inf loss or gradient is caught at the step where it happens.

Every backward pass keeps its loss; just before each optimizer step (after backward, before the update, so
the weights are still those of the previous step) those losses and the gradients of that optimizer's
parameters are checked, and all ranks agree through one small all-reduce. Then, by `mode`:

- `stop` (default): save the last good state (weights, optimizer and loop state before the bad update) as
  `<checkpoints>/nonfinite-step=<k>.ckpt` and end the run with one line (exit status 2) naming step k and
  the culprit: `loss`, or the first parameter whose gradient is non-finite.
- `skip`: drop the gradients so that the optimizer step changes nothing, count it and go on; after
  `max_skips` skipped steps, stop as above. The LR schedule and `trainer.global_step` still advance over a
  skipped step; the count is logged as `nonfinite_skipped`.
- `off`: no checks.

Either way the persistent buffers (BatchNorm running statistics and counts), which the bad batch's forward
pass has already updated, are put back as they were before the step.

Set from the command line (`--nonfinite.mode skip --nonfinite.max_skips 20`) or a recipe (`nonfinite:`
with `mode` and `max_skips`).

Works with automatic and manual optimization (the GAN): Lightning calls `on_before_optimizer_step` from
inside every `optimizer.step()`. With a fp16 GradScaler, Inf gradients are the scaler's business (it skips
those steps itself), so only the loss is checked. Step k counts optimizer steps from 1: the update that
would take `trainer.global_step` from k-1 to k.

What a step costs (the guard runs on every optimizer step, so it is kept to a few kernels):

- A step is checked by one number: the sum of its losses and of one fused norm over all the gradients (a
  float32 2-norm `_foreach_norm`, a handful of kernels whatever the parameter count), instead of one
  `isfinite` per parameter: the sum is finite when every loss and gradient element is. The culprit is only
  looked for, element by element, on the rare step whose sum is not finite (which also tells a NaN or Inf
  from a sum beyond float32's range).
- The persistent buffers are copied into storage kept from the first step (one fused copy, no allocation),
  and only when the module has any.
- With one process there is no collective at all; with several, one all-reduce of that number.
- One host read of that number per step remains in `stop`/`skip` mode. It cannot be deferred without
  changing what the modes promise: deciding whether step k's update happens (and saving the state before
  it) needs the answer before the optimizer runs, and the optimizers bigtrain builds (unfused AdamW/SGD)
  cannot skip a step on the device. `off` does no work and no read.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.distributed import ReduceOp

from bigtrain.callbacks.checkpoints import checkpoint_folder
from bigtrain.checkpoints.save import save_atomically
from bigtrain.errors import UserError
from bigtrain.torch_compat import copy_each_, norms_float32, own_persistent_buffers

Mode = Literal["skip", "stop", "off"]
PREFIX = "nonfinite-step="


class NonFiniteError(UserError):
    """A non-finite loss or gradient ended the run (after saving the last good state)."""


class NonFiniteGuard(Callback):
    """Catch a NaN/Inf loss or gradient before it reaches the weights; skip the step or stop the run."""

    def __init__(self, mode: Mode = "stop", max_skips: int = 10) -> None:
        """Guard every optimizer step against non-finite losses and gradients.

        Args:
            mode: stop (save the last good state, then end the run with an error), skip (leave the weights
                unchanged for that step and go on, at most `max_skips` times), or off.
            max_skips: In skip mode, the number of steps that may be skipped before the run stops.
        """
        super().__init__()
        if mode not in ("skip", "stop", "off"):
            raise UserError(f"nonfinite.mode must be one of skip, stop, off; got {mode!r}")
        if max_skips < 0:
            raise UserError(f"nonfinite.max_skips must be >= 0, got {max_skips}")
        self.mode = mode
        self.max_skips = max_skips
        self.skipped = 0
        self._start_fit(None)

    def _start_fit(self, tracked: list[tuple[str, torch.Tensor]] | None) -> None:
        # The buffers copied at every step; training updates them in place (BatchNorm), so they are the
        # same tensors all fit long.
        self._tracked = tracked
        self._buffers: dict[str, torch.Tensor] = {}  # an earlier fit's copy may have other devices or shapes
        # An earlier fit that stopped (or was interrupted) inside a step left the flag down: the first step
        # of this fit must take its copy all the same.
        self._snapshot_due = True
        self._losses: list[torch.Tensor] = []  # this optimizer step's (detached) losses; none left from a
        # fit that stopped between a backward pass and its optimizer step

    # State -------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The skip count survives a resume, so `max_skips` limits the whole run."""
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # noqa: D102
        self.skipped = int(state_dict["skipped"])

    # Checks ------------------------------------------------------------------------------------------

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Find the persistent buffers once (the module is placed and restored by now), not every step."""
        self._start_fit(persistent_buffers(pl_module) if self.mode != "off" else None)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        self._tracked = None

    def on_train_batch_start(  # noqa: D102
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.mode != "off" and self._snapshot_due:
            # Forward passes update running statistics (BatchNorm) before any check can run: a bad step's
            # are undone from this copy, taken at the first batch of each optimizer step.
            self._snapshot()
            self._snapshot_due = False

    def _snapshot(self) -> None:
        buffers = dict(self._tracked)  # set by on_train_start whenever the mode is not off
        if not buffers:
            return
        if self._buffers.keys() != buffers.keys():  # the first step (or buffers that changed)
            self._buffers = {name: buf.detach().clone() for name, buf in buffers.items()}
            return
        with torch.no_grad():  # the same buffers as last step: copy in place, one fused copy
            copy_each_(list(self._buffers.values()), list(buffers.values()))

    def on_before_backward(  # noqa: D102
        self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor
    ) -> None:
        if self.mode == "off":
            return
        self._losses.append(loss.detach())  # checked with the gradients, at the optimizer step

    def on_before_optimizer_step(  # noqa: D102
        self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if self.mode == "off":
            return
        losses, self._losses = self._losses, []
        params = [p for group in optimizer.param_groups for p in group["params"]]
        check_grads = getattr(trainer.precision_plugin, "scaler", None) is None
        culprit = self._agree(trainer, losses, params if check_grads else [])
        if culprit is None:
            self._snapshot_due = True
            return
        step = trainer.global_step + 1
        if culprit != "loss":
            culprit = f"gradient of {parameter_name(pl_module, params[culprit])}"
        self._restore_buffers(pl_module)
        if self.mode == "skip" and self.skipped < self.max_skips:
            self._skip(trainer, params, step, culprit)
            return
        self._stop(trainer, step, culprit)

    def _agree(
        self, trainer: Trainer, losses: list[torch.Tensor], params: list[torch.Tensor]
    ) -> int | str | None:
        """'loss', the index of the first parameter with a non-finite gradient, or None; rank-independent."""
        device = trainer.strategy.root_device
        total = checksum(losses, params)
        if trainer.world_size > 1:
            # One all-reduce of one number: a sum is non-finite when a term is, on any rank (a shard, FSDP2).
            total = trainer.strategy.reduce(total.to(device), reduce_op=ReduceOp.SUM)
        if math.isfinite(total.item()):  # the one host read: the update below depends on it
            return None
        # A rare step: find the culprit, the same on every rank (or none: a sum of large finite values, beyond
        # float32's range, overflows too).
        loss_bad = any_nonfinite(losses).to(device=device, dtype=torch.float32)
        first = first_nonfinite(params).to(device=device, dtype=torch.float32)
        local = torch.stack([loss_bad, -first])
        if trainer.world_size > 1:
            local = trainer.strategy.reduce(local, reduce_op=ReduceOp.MAX)
        loss_any, minus_first = local.tolist()
        if loss_any > 0:
            return "loss"
        index = int(-minus_first)
        return index if index < len(params) else None

    def _restore_buffers(self, pl_module: LightningModule) -> None:
        with torch.no_grad():
            for name, buf in persistent_buffers(pl_module):
                if name in self._buffers:
                    buf.copy_(self._buffers[name])

    def _skip(self, trainer: Trainer, params: list[torch.Tensor], step: int, culprit: str) -> None:
        for p in params:
            p.grad = None  # optimizers leave a parameter without a gradient untouched
        self.skipped += 1
        self._snapshot_due = True
        if trainer.is_global_zero:
            print(
                f"bigtrain: warning: non-finite {culprit} at step {step}: step skipped "
                f"({self.skipped} of at most {self.max_skips})",
                file=sys.stderr,  # line-buffered: the line is out at once
            )

    def _stop(self, trainer: Trainer, step: int, culprit: str) -> None:
        path = self.save(trainer, step)
        why = f" after {self.skipped} skipped step(s) (nonfinite.max_skips={self.max_skips})"
        raise NonFiniteError(
            f"non-finite {culprit} at step {step}{why if self.mode == 'skip' else ''}; "
            f"saved the state after step {step - 1} to {path}"
        )

    def on_train_batch_end(  # noqa: D102
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.mode == "skip":
            pl_module.log("nonfinite_skipped", float(self.skipped))  # per step, the default in this hook

    # Saving ------------------------------------------------------------------------------------------

    def save(self, trainer: Trainer, step: int) -> Path:
        """Save the current (last good) state atomically on every rank's behalf; returns its path."""
        return save_atomically(trainer, checkpoint_folder(trainer) / f"{PREFIX}{step}.ckpt")


def checksum(losses: list[torch.Tensor], params: list[torch.Tensor]) -> torch.Tensor:
    """A number that is finite when every loss and every (local shard of a) gradient is; a 0-d tensor, no
    host sync. It is not finite either when its float32 sum overflows over finite values (see `_agree`)."""
    parts = [_local(loss).reshape(-1) for loss in losses]
    # A rank's shard of a small parameter can be empty under FSDP: its norm is 0.
    grads = [_local(p.grad) for p in params if p.grad is not None]
    if grads:
        # A NaN or Inf anywhere in a gradient makes its norm non-finite: one fused 2-norm over all of them,
        # summed in float32, so finite half-precision values do not overflow it. (A max-abs norm cannot
        # overflow at all, but costs 25x more on a CPU.)
        norms = norms_float32(grads)
        try:
            parts.append(torch.stack(norms))
        except RuntimeError:  # gradients on several devices
            parts.append(torch.stack([n.to(grads[0].device) for n in norms]))
    return torch.cat(parts).sum() if parts else torch.zeros(())  # cat promotes dtypes


def any_nonfinite(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Whether any of the tensors holds a NaN or Inf; a 0-d tensor."""
    if not tensors:
        return torch.tensor(False)
    return torch.stack([~torch.isfinite(_local(t)).all() for t in tensors]).any()


def first_nonfinite(params: list[torch.Tensor]) -> torch.Tensor:
    """Index of the first parameter whose (local shard of the) gradient holds a NaN or Inf, else
    len(params); a 0-d tensor, so that no host sync happens here."""
    n = len(params)
    indices = [i for i, p in enumerate(params) if p.grad is not None]
    if not indices:
        return torch.tensor(n)
    finite = torch.stack([torch.isfinite(_local(params[i].grad)).all() for i in indices])
    where = torch.tensor(indices, device=finite.device)
    return torch.where(finite, torch.full_like(where, n), where).min()


def persistent_buffers(module: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The buffers a checkpoint keeps (BatchNorm statistics and counters, and the like), by dotted name."""
    out = []
    for prefix, sub in module.named_modules():
        for name, buf in own_persistent_buffers(sub):
            out.append((f"{prefix}.{name}" if prefix else name, buf))
    return out


def parameter_name(module: torch.nn.Module, param: torch.Tensor) -> str:
    """The dotted name of `param` in `module` (or its shape when it is not a parameter of `module`)."""
    for name, p in module.named_parameters():
        if p is param:
            return f"'{name}'"
    return f"a parameter of shape {tuple(param.shape)}"


def _local(tensor: torch.Tensor) -> torch.Tensor:
    # A DTensor (FSDP2, tensor parallel) is checked through this rank's shard; the ranks then agree.
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor
