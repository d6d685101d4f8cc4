"""The peak FLOP/s a device can do, for MFU: a dense datasheet table for GPUs, a measured matmul peak on CPUs.

GPU peaks are the datasheets' dense (not 2:4-sparse) tensor-core figures per device. Lightning's
`get_available_flops` covers more devices but lists the H200 with its sparse figures and does not match the
plain name `NVIDIA H200`, so the devices below are looked up here first and Lightning is the fall-back.
A CPU has no datasheet figure that fits: its peak is a short fp32 matmul benchmark, measured once and cached
under the user's cache folder, keyed by CPU model, torch version and thread count.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

from bigtrain.files import write_json_atomic

_T = 1e12
# Dense TFLOP/s per device: (fp32, tf32, bf16, fp16), from the vendors' datasheets.
DENSE_TFLOPS: dict[str, tuple[float, float, float, float]] = {
    "a100": (19.5, 156.0, 312.0, 312.0),
    "h100 pcie": (51.2, 378.0, 756.0, 756.0),
    "h100 nvl": (60.0, 417.5, 835.0, 835.0),
    "h100": (66.9, 494.7, 989.4, 989.4),  # SXM
    "h200 nvl": (60.0, 417.5, 835.0, 835.0),
    "h200": (66.9, 494.7, 989.4, 989.4),  # SXM
    "b200": (75.0, 1125.0, 2250.0, 2250.0),
    "l40s": (91.6, 183.0, 362.0, 362.0),
}
_COLUMN = {"fp32": 0, "tf32": 1, "bf16": 2, "fp16": 3}


def compute_dtype(precision: str, device: torch.device) -> str:
    """The matmul dtype of a Lightning precision setting: bf16, fp16, tf32, fp32 or fp64."""
    text = str(precision)
    if text.startswith("bf16"):
        return "bf16"
    if text.startswith("16"):
        return "fp16"
    if text.startswith("64"):
        return "fp64"
    tf32 = device.type == "cuda" and torch.get_float32_matmul_precision() != "highest"
    return "tf32" if tf32 else "fp32"


def table_key(device_name: str) -> str | None:
    """The DENSE_TFLOPS row of a CUDA device name (e.g. `NVIDIA H100 80GB HBM3` -> `h100`), or None."""
    name = device_name.lower()
    for chip in ("h200", "h100"):
        if chip in name:
            if "nvl" in name:
                return f"{chip} nvl"
            return "h100 pcie" if chip == "h100" and ("pcie" in name or "hbm2e" in name) else chip
    for chip in ("b200", "l40s", "a100"):
        if chip in name:
            return chip
    return None


def gpu_peak_flops(device: torch.device, dtype: str) -> float | None:
    """Dense peak FLOP/s of a CUDA device in `dtype`, from the table or else Lightning's; None if unknown."""
    key = table_key(torch.cuda.get_device_name(device))
    if key is not None:
        return DENSE_TFLOPS[key][_COLUMN[dtype]] * _T if dtype in _COLUMN else None
    from lightning.fabric.utilities.throughput import get_available_flops

    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}.get(dtype)
    flops = get_available_flops(device, torch_dtype or torch.float32)
    return float(flops) if flops else None


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure_matmul_flops(n: int = 512, seconds: float = 0.5) -> float:
    """Best fp32 FLOP/s of an n x n matmul on the CPU over about `seconds` (after one warm-up).

    The best of many short products, not the mean: a busy machine slows some of them, not the hardware's
    peak (n = 512 reaches the same rate as larger sizes with one thread, in a fraction of the time).
    """
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best, deadline = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def cache_dir() -> Path:
    """bigtrain's folder under the user's cache folder ($XDG_CACHE_HOME or ~/.cache)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "bigtrain"


def cpu_peak_flops() -> float:
    """The CPU's fp32 matmul peak with this torch and thread count: measured once, then read from cache."""
    key = f"{cpu_model()} | torch {torch.__version__} | {torch.get_num_threads()} threads"
    path = cache_dir() / "cpu_peak_flops.json"
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    if isinstance(cached, dict) and isinstance(cached.get(key), (int, float)):
        return float(cached[key])
    flops = measure_matmul_flops()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, {**(cached if isinstance(cached, dict) else {}), key: flops})
    except OSError:
        pass  # a read-only home still gets MFU, measured again next time
    return flops


def peak_flops(device: torch.device, precision: str, override_tflops: float | None = None) -> float | None:
    """Peak FLOP/s per device for MFU: the override, the GPU table, or the CPU's measured matmul peak."""
    if override_tflops is not None:
        return override_tflops * _T
    if device.type == "cuda":
        return gpu_peak_flops(device, compute_dtype(precision, device))
    if device.type == "cpu":
        return cpu_peak_flops()
    return None
