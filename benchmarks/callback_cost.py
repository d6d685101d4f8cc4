"""Per-step cost of bigtrain's per-step callbacks (non-finite guard, preemption) on a tiny model.

    OMP_NUM_THREADS=1 taskset -c 0 python -m benchmarks.callback_cost --callbacks guard preemption

Times steps with `time.perf_counter()` at `on_train_batch_start` from step 200 on and prints the median in
ms, and the median time spent inside the chosen callbacks' per-step hooks (less noisy on a busy machine).
Run two builds side by side, each pinned to its own core, and compare the medians (never across days).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.utils.data import DataLoader, TensorDataset


class Tiny(LightningModule):
    """An MLP of `depth` Linear+BatchNorm blocks: tiny compute, a realistic number of parameter tensors."""

    def __init__(self, depth: int) -> None:
        super().__init__()
        blocks = [
            torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU())
            for _ in range(depth)
        ]
        self.net = torch.nn.Sequential(*blocks, torch.nn.Linear(32, 1))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


class StepTimer(Callback):
    """Records the wall time at the start of every batch, and opens the batch's entry in `spent`."""

    def __init__(self, spent: list[float]) -> None:
        self.times: list[float] = []
        self.spent = spent

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: D102
        self.times.append(time.perf_counter())
        self.spent.append(0.0)


HOOKS = ("on_train_batch_start", "on_before_backward", "on_before_optimizer_step", "on_train_batch_end")


def time_hooks(callback: Callback, spent: list[float]) -> None:
    """Add the wall time of each of `callback`'s per-step hooks to `spent[-1]` (one entry per step)."""
    for name in HOOKS:
        hook = getattr(callback, name)

        def timed(*args, _hook=hook, **kwargs):
            start = time.perf_counter()
            try:
                return _hook(*args, **kwargs)
            finally:
                spent[-1] += time.perf_counter() - start

        setattr(callback, name, timed)


def main() -> None:
    """Train the tiny model with the chosen callbacks and print the median step time."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--depth", type=int, default=16, help="blocks (4 parameter tensors each)")
    parser.add_argument("--callbacks", nargs="*", default=["guard", "preemption"])
    args = parser.parse_args()
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(64 * 32, 32), torch.randn(64 * 32, 1))
    spent: list[float] = []
    timer = StepTimer(spent)
    callbacks: list[Callback] = [timer]
    if "guard" in args.callbacks:
        from bigtrain.callbacks.nonfinite import NonFiniteGuard

        callbacks.append(NonFiniteGuard())
    if "preemption" in args.callbacks:
        from bigtrain.callbacks.preemption import Preemption

        callbacks.append(Preemption())
    for callback in callbacks[1:]:
        time_hooks(callback, spent)
    trainer = Trainer(
        max_steps=args.steps, accelerator="cpu", devices=1, callbacks=callbacks, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(Tiny(args.depth), DataLoader(data, batch_size=32, shuffle=True))
    steps = [b - a for a, b in zip(timer.times[200:], timer.times[201:], strict=False)]
    in_hooks = spent[200:] or [0.0]
    print(
        f"{'+'.join(args.callbacks) or 'none'}: median step {1e3 * statistics.median(steps):.3f} ms, "
        f"median time in their hooks {1e3 * statistics.median(in_hooks):.3f} ms/step"
    )


if __name__ == "__main__":
    main()
