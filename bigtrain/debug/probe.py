"""The callback that watches a debug run: the loss of each step, time per phase, gradients, module outputs."""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn

from bigtrain.debug.tensors import describe

WARMUP_STEPS = 2
"""Steps left out of the time split (first-call allocations, lazy initialisation)."""
MEMORY_SNAPSHOT = "memory_snapshot.pickle"
"""Beside the Chrome trace on CUDA: the profiled steps' allocations, for https://pytorch.org/memory_viz."""
GRAD_STEPS = 3
"""Steps whose gradients are inspected: a zero-initialised residual branch (a last norm's scale of 0) gets
zero gradients at step 0 only, so "zero" means zero in each of these steps."""
"""Steps left out of the time split (first-call allocations, lazy initialisation)."""


@dataclass
class Observations:
    """What the probe saw; the checks judge it."""

    losses: list[float] = field(default_factory=list)
    phases: dict[str, list[float]] = field(default_factory=dict)
    shapes: list[tuple[str, str, int]] = field(default_factory=list)
    grads: dict[str, float | None] = field(default_factory=dict)
    """Each trainable parameter's largest gradient norm over the first GRAD_STEPS steps (None: never one;
    non-finite: at least once)."""
    nonfinite: dict[str, Any] | None = None
    """The first module whose output went non-finite: its name, step and input statistics."""
    anomaly: str | None = None
    top_ops: list[tuple[str, float, int]] = field(default_factory=list)
    peak_bytes: int | None = None
    planned_bytes: int | None = None
    cuda: bool = False
    """`bigtrain plan`'s estimate of the step's tensors on one device, to set beside the measured peak."""
    params: list[tuple[str, torch.dtype, int, bool]] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    """The learning rate of each optimizer's first group, held for the whole run."""


class DebugProbe(Callback):
    """Records each step's loss and phase times, step 0's module outputs and gradients, non-finite outputs."""

    def __init__(self, *, nan_hooks: bool, profile_steps: int = 3, trace: str | None = None) -> None:
        self.seen = Observations()
        self.nan_hooks = nan_hooks
        self.profile_steps = profile_steps
        self.trace = trace
        self._hooks: list[Any] = []
        self._t: dict[str, float] = {}
        self._step = 0
        self._batch = 0
        self._loss_seen = False
        self._profiler: Any = None
        self._cuda = False
        self.hold_lr = False
        self.learn_fraction: float | None = None
        """Stop once the loss is below this fraction of its first value (the learns check has passed)."""

    # -- set-up -------------------------------------------------------------------------------------------
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        self._cuda = self.seen.cuda = pl_module.device.type == "cuda"
        if self._cuda:
            torch.cuda.reset_peak_memory_stats(pl_module.device)
        if self.hold_lr:
            self.seen.lrs = _hold_lr(trainer, pl_module)
        self.seen.params = [
            (name, p.dtype, p.numel(), p.requires_grad) for name, p in pl_module.named_parameters()
        ]
        names = {m: n for n, m in pl_module.named_modules()}
        for module, name in names.items():
            if module is pl_module or not name:
                continue
            self._hooks.append(module.register_forward_hook(self._forward_hook(name)))

    def _forward_hook(self, name: str) -> Any:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if self._step == 0 and name.count(".") <= 2 and not isinstance(module, _CONTAINERS):
                first = _tensors(output)[:1]  # a VAE's net returns (reconstruction, mean, log-variance)
                shape = "x".join(map(str, first[0].shape)) if first else "-"
                own = sum(p.numel() for p in module.parameters())
                self.seen.shapes.append((name, shape, own))
            if self.nan_hooks and self.seen.nonfinite is None and _nonfinite(output):
                self.seen.nonfinite = {
                    "module": name,
                    "type": type(module).__name__,
                    "step": self._step,
                    "batch": self._batch,
                    "inputs": [describe(x) for x in _tensors(inputs)],
                    "output": [describe(x) for x in _tensors(output)],
                    "rows": bad_rows(output),
                }

        return hook

    # -- the step -----------------------------------------------------------------------------------------
    def _mark(self, key: str) -> None:
        if self._cuda:
            torch.cuda.synchronize()
        self._t[key] = time.perf_counter()

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, idx: int
    ) -> None:  # noqa: D102
        self._step, self._batch, self._loss_seen = trainer.global_step, idx, False
        if self._step == 0:
            torch.autograd.set_detect_anomaly(True, check_nan=True)  # names the backward node of a NaN
        if self._step == WARMUP_STEPS and self.profile_steps:
            self._profiler = _start_profiler(self._cuda)
            if self._cuda and self.trace:
                from bigtrain.torch_compat import record_cuda_memory

                record_cuda_memory(True)
        self._mark("start")

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor) -> None:  # noqa: D102
        if not self._loss_seen:  # a GAN steps twice: the first loss of a step stands for it
            self._loss_seen = True
            self.seen.losses.append(float(loss.detach().float()))
            self._mark("forward")

    def on_after_backward(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        self._mark("backward")

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Any) -> None:  # noqa: D102
        if self._step >= GRAD_STEPS:
            return
        names = {id(p): n for n, p in pl_module.named_parameters()}
        grads = self.seen.grads
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.requires_grad and id(p) in names:
                    name = names[id(p)]
                    norm = None if p.grad is None else float(p.grad.detach().float().norm())
                    grads[name] = norm if self._step == 0 else _merge(grads.get(name), norm)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:  # noqa: D102
        self._mark("end")
        if self._step == 0:
            torch.autograd.set_detect_anomaly(False)
        t = self._t
        if self._step >= WARMUP_STEPS and {"forward", "backward"} <= t.keys():
            for phase, (a, b) in {"forward": ("start", "forward"), "backward": ("forward", "backward"),
                                  "optimizer": ("backward", "end")}.items():  # fmt: skip
                self.seen.phases.setdefault(phase, []).append(t[b] - t[a])
        self._t = {}
        if self._profiler is not None and self._step >= WARMUP_STEPS + self.profile_steps - 1:
            self._stop_profiler()
        losses = self.seen.losses
        if losses and not math.isfinite(losses[-1]):
            trainer.should_stop = True  # nothing more to learn from a non-finite run
        timed = self._step + 1 >= max(WARMUP_STEPS + self.profile_steps, GRAD_STEPS)
        if (
            self.learn_fraction is not None
            and timed
            and losses
            and losses[-1] < losses[0] * self.learn_fraction
        ):
            trainer.should_stop = True  # learnt: the rest of --steps would show nothing new

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        self.finish(pl_module)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:  # noqa: D102
        torch.autograd.set_detect_anomaly(False)
        self.finish(pl_module)

    def finish(self, pl_module: LightningModule) -> None:
        """Remove the hooks, stop a running profiler, read the peak memory."""
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
        if self._profiler is not None:
            self._stop_profiler()
        if self._cuda:
            self.seen.peak_bytes = torch.cuda.max_memory_allocated(pl_module.device)
        else:
            self.seen.peak_bytes = _cpu_peak()

    def _stop_profiler(self) -> None:
        prof, self._profiler = self._profiler, None
        with _quiet_stderr():
            prof.__exit__(None, None, None)
        key = "self_cuda_time_total" if self._cuda else "self_cpu_time_total"
        events = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0), reverse=True)
        self.seen.top_ops = [(e.key, getattr(e, key, 0) / 1000.0, e.count) for e in events[:10]]
        if self.trace:
            prof.export_chrome_trace(self.trace)
            if self._cuda:
                from bigtrain.torch_compat import dump_cuda_memory, record_cuda_memory

                dump_cuda_memory(str(Path(self.trace).with_name(MEMORY_SNAPSHOT)))
                record_cuda_memory(False)


_CONTAINERS = (nn.ModuleList, nn.ModuleDict)


def _merge(old: float | None, new: float | None) -> float | None:
    """The larger gradient norm of two steps; a non-finite one wins (it is the finding)."""
    if old is None or new is None:
        return new if old is None else old
    if not math.isfinite(old) or not math.isfinite(new):
        return old if not math.isfinite(old) else new
    return max(old, new)


def _hold_lr(trainer: Trainer, pl_module: LightningModule) -> list[float]:
    """Set every optimizer to its base learning rate and stop its schedule: a warm-up of thousands of steps
    would otherwise keep a run of 50 from learning anything."""
    if pl_module.automatic_optimization:
        trainer.strategy.lr_scheduler_configs = []
    lrs = []
    for optimizer in trainer.optimizers:
        for group in optimizer.param_groups:
            group["lr"] = group.get("initial_lr", group["lr"])
        lrs.append(float(optimizer.param_groups[0]["lr"]))
    return lrs


def _start_profiler(cuda: bool) -> Any:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    prof = profile(activities=activities)
    with _quiet_stderr():
        prof.__enter__()
    return prof


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2: the profiler's C++ side writes a line there at each start and stop."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _cpu_peak() -> int:
    """The process's peak resident memory in bytes (Linux reports KiB); it includes the interpreter."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


def bad_rows(value: Any) -> list[int] | None:
    """Rows (first dimension: samples, for a batch-first tensor) of the first floating tensor in `value` that
    hold a NaN/Inf; None when it has no such tensor or no first dimension."""
    floats = [t for t in _tensors(value) if t.is_floating_point() and t.dim() > 0]
    if not floats:
        return None
    t = floats[0].detach()
    return (~torch.isfinite(t)).reshape(t.shape[0], -1).any(dim=1).nonzero().flatten().tolist()


def _nonfinite(value: Any) -> bool:
    return any(t.is_floating_point() and not bool(torch.isfinite(t).all()) for t in _tensors(value))
