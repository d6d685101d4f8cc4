"""Throughput, FLOPs, MFU and peak memory of a fit, in TensorBoard, the progress bar and `metrics.json`.

FLOPs. The first training batch runs under a dispatch mode that counts by torch's FLOP formulas, as
`FlopCounterMode` does but without its module tracker, which would change gradient rounding (for a GAN that
takes a generator step every k batches, the first k): the count is that of the real steps (forward, loss and
backward; for a GAN its discriminator and generator steps together), so nothing runs twice and training is
bit for bit unchanged. Every batch of
the run is taken to cost the same (fixed shapes); an optimizer step costs `accumulate_grad_batches` of them.

Timing. The clock starts after that first batch (which also carries warm-up) and stops while validating.
It is read only every `log_every_n_steps` batches, with one device synchronisation there, so the steps in
between queue on the GPU as they would without this callback. Sample and token counts come from the
batch's shape, which the host knows without waiting for the device. Rates and MFU are per device as
Lightning's `Throughput` computes them; totals assume every rank takes the same batch (as the global-batch
arithmetic makes them), so no collective is needed.
"""

from __future__ import annotations

import resource
import sys
import time
from typing import Any

import torch
from lightning.fabric.utilities.throughput import Throughput
from lightning.pytorch import Callback, LightningModule, Trainer

from bigtrain.callbacks.peak_flops import peak_flops
from bigtrain.errors import UserError
from bigtrain.strategies import data_parallel
from bigtrain.torch_compat import flop_counter

GIB = 2**30


def batch_counts(batch: Any) -> tuple[int, int]:
    """(samples, tokens) of a batch: its first tensor's rows, and its size when that holds token ids."""
    first = batch
    while isinstance(first, (tuple, list)) and first:
        first = first[0]
    if isinstance(first, dict) and first:
        first = next(iter(first.values()))
    if not isinstance(first, torch.Tensor) or first.dim() == 0:
        return 1, 0
    ids = first.dim() == 2 and not (first.is_floating_point() or first.is_complex())
    return first.shape[0], first.numel() if ids else 0


def peak_memory_gib(device: torch.device) -> float:
    """Peak memory so far: CUDA's max allocated on a GPU, else the process's peak resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / GIB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / GIB if sys.platform == "darwin" else peak * 1024 / GIB  # macOS: bytes, Linux: KiB


def duration(seconds: float) -> str:
    """`7m12s`, `1h03m`, `42.1s`."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


class ThroughputMeter(Callback):
    """Samples/s (tokens/s for token-id batches), FLOPs per optimizer step, TFLOP/s, MFU and peak memory.

    Args:
        enabled: Measure and report; false turns it off.
        peak_tflops: The device's peak TFLOP/s for MFU, for devices the built-in table does not know (or to
            compare against a measured peak); null: the table (A100, H100, H200, B200, L40S by precision) or
            on a CPU a measured fp32 matmul peak.
    """

    def __init__(self, enabled: bool = True, peak_tflops: float | None = None) -> None:
        if peak_tflops is not None and not peak_tflops > 0:
            raise UserError(f"throughput.peak_tflops must be > 0 or null, got {peak_tflops}")
        self.enabled = enabled
        self.peak_tflops = peak_tflops
        self._counter: Any = None  # a torch_compat.flop_counter() while the first batch runs
        self.t0: float | None = None  # set after the first batch; validation before it is not paused
        self._paused_at: float | None = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        # Totals count each data-parallel rank's batch once: tensor-parallel peers share theirs.
        self.world, _ = data_parallel(trainer)
        self.devices = trainer.world_size
        # Under tensor parallelism FlopCounterMode counts each sharded matrix product at its full size, so
        # no count is better than a wrong one.
        self.count_flops = self.devices == self.world
        self.every = trainer.log_every_n_steps
        # Only global rank 0 reports, so only it needs the peak (on a CPU, a short benchmark).
        self.peak = None
        if trainer.is_global_zero:
            self.peak = peak_flops(pl_module.device, str(trainer.precision), self.peak_tflops)
        self.meter = Throughput(available_flops=self.peak, world_size=self.world, window_size=2)
        self.start, self.first_step = time.perf_counter(), trainer.global_step
        self.flops_per_batch: int | None = None
        self.t0: float | None = None
        self.paused = 0.0
        self.batches = self.samples = self.tokens = 0
        self.averages: dict[str, float] = {}
        self.sequence = False
        self._counted = self._to_count = 0
        self._reported_step, self._reported_batches = trainer.global_step, 0

    def on_train_batch_start(  # noqa: D102
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.t0 is None and self._counter is None and self.count_flops:
            # A GAN with d_steps_per_g_step k repeats its pattern of D and G steps every k batches.
            self._counted, self._to_count = 0, max(1, int(getattr(pl_module, "d_steps_per_g_step", 1)))
            self._counter = flop_counter()
            self._counter.__enter__()

    def on_train_batch_end(  # noqa: D102
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        samples, tokens = batch_counts(batch)
        if self.t0 is None:
            self._counted += 1
            if self._counter is not None and self._counted < self._to_count:
                return  # the clock starts once every batch of the pattern is counted
            self._stop_counting()
            self.sequence = tokens > 0
            self.t0 = self._now(pl_module)
            self.meter.update(time=0.0, batches=0, samples=0, lengths=0 if self.sequence else None, flops=0)
            return
        self.batches += 1
        self.samples += samples
        self.tokens += tokens
        # Reports fall on Lightning's log steps, so their host reads join the loggers' own.
        step = trainer.global_step
        if self.every and step % self.every == 0 and step != self._reported_step:
            self._update(pl_module, self.batches - self._reported_batches)
            self._reported_step, self._reported_batches = step, self.batches
            if trainer.is_global_zero:
                self._report(trainer, pl_module)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        if self.t0 is not None and trainer.state.fn == "fit":
            self._paused_at = self._now(pl_module)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        if self._paused_at is not None:
            self.paused += self._now(pl_module) - self._paused_at
            self._paused_at = None

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        self._stop_counting()
        if self.t0 is None:
            return
        self.averages = self._averages(pl_module, trainer)
        # Lightning's results never hold these names, so the run's averages stay for metrics.json.
        trainer.callback_metrics.update(
            {k: torch.tensor(v, dtype=torch.float64) for k, v in self.averages.items()}
        )
        if trainer.is_global_zero:
            print(self.summary(trainer.global_step - self.first_step), flush=True)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:  # noqa: D102
        self._stop_counting()

    # ---- measuring ----------------------------------------------------------------------------------

    def _stop_counting(self) -> None:
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            self.flops_per_batch = int(self._counter.total) // max(1, self._counted)
            self._counter = None

    @staticmethod
    def _now(pl_module: LightningModule) -> float:
        """The time once the device has finished the work queued so far (the one sync, at log steps)."""
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter()

    def _update(self, pl_module: LightningModule, new_batches: int) -> None:
        elapsed = self._now(pl_module) - self.t0 - self.paused
        self.meter.update(
            time=elapsed,
            batches=self.batches,
            samples=self.samples,
            lengths=self.tokens if self.sequence else None,
            flops=(self.flops_per_batch or 0) * new_batches,
        )

    def _flops_per_step(self, trainer: Trainer) -> int:
        """FLOPs per optimizer step and device (a GAN batch: its D and G steps together)."""
        return (self.flops_per_batch or 0) * max(1, trainer.accumulate_grad_batches)

    def _common(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, float]:
        out = {"perf/peak_mem_gib": peak_memory_gib(pl_module.device)}
        if self.flops_per_batch:
            out["perf/flops_per_step"] = float(self._flops_per_step(trainer))
        return out

    def _report(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Log the last interval's rates to the loggers and the progress bar (global rank 0)."""
        got = self.meter.compute()
        rates = self._common(trainer, pl_module)
        names = [("samples", "samples_per_sec")] + ([("tokens", "items_per_sec")] if self.sequence else [])
        for name, key in names:
            if (per_device := got.get(f"device/{key}")) is not None:
                rates[f"perf/device/{name}_per_s"] = per_device
                rates[f"perf/{name}_per_s"] = per_device * self.world
        if (flops := got.get("device/flops_per_sec")) and self.flops_per_batch:
            rates["perf/tflops_per_s"] = flops / 1e12
            if (mfu := got.get("device/mfu")) is not None:
                rates["perf/mfu"] = mfu
        for logger in trainer.loggers:
            logger.log_metrics(rates, step=trainer.global_step)
        rate = rates.get(f"perf/{self._unit()}_per_s", 0.0)
        bar = {"tok/s" if self.sequence else "samples/s": f"{rate:,.0f}"}
        if "perf/mfu" in rates:
            bar["mfu"] = f"{100 * rates['perf/mfu']:.1f}%"
        # Lightning's results never hold these names, so they stay on the bar until the next report.
        trainer.progress_bar_metrics.update(bar)

    def _unit(self) -> str:
        return "tokens" if self.sequence else "samples"

    def _averages(self, pl_module: LightningModule, trainer: Trainer) -> dict[str, float]:
        """The run's average rates (after the first batch, validation left out) and its peak memory."""
        out = self._common(trainer, pl_module)
        elapsed = self._now(pl_module) - self.t0 - self.paused if self.t0 is not None else 0.0
        if self.batches == 0 or elapsed <= 0:
            return out
        for name, count in [("samples", self.samples)] + ([("tokens", self.tokens)] if self.sequence else []):
            out[f"perf/device/{name}_per_s"] = count / elapsed
            out[f"perf/{name}_per_s"] = count * self.world / elapsed
        if self.flops_per_batch:
            flops_per_s = self.flops_per_batch * self.batches / elapsed
            out["perf/tflops_per_s"] = flops_per_s / 1e12
            if self.peak:
                out["perf/mfu"] = flops_per_s / self.peak
        return out

    def summary(self, steps: int) -> str:
        """One line: `2000 steps in 7m12s · 9,840 tokens/s · 112 TFLOP/s · MFU 41.3% · peak 3.1 GiB`."""
        parts = [f"{steps} steps in {duration(time.perf_counter() - self.start)}"]
        avg = self.averages
        if (rate := avg.get(f"perf/{self._unit()}_per_s")) is not None:
            parts.append(f"{rate:,.0f} {self._unit()}/s")
        if (tflops := avg.get("perf/tflops_per_s")) is not None:
            rate = f"{tflops:.3g} TFLOP/s" if tflops >= 1 else f"{1000 * tflops:.3g} GFLOP/s"
            parts.append(rate + (" per device" if self.devices > 1 else ""))
        if (mfu := avg.get("perf/mfu")) is not None:
            parts.append(f"MFU {100 * mfu:.1f}%")
        parts.append(f"peak {avg['perf/peak_mem_gib']:.1f} GiB")
        return " · ".join(parts)
