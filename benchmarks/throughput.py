"""Transformer training throughput: tokens/s, MFU and peak memory, eager and compiled.

    python -m benchmarks.throughput --device cuda --presets gpt2-124m gpt2-350m --context 1024 --out DIR

A forward+backward+AdamW step of bigtrain's GPT on random tokens, timed with CUDA events after warm-up.
MFU = achieved FLOP/s (6N + 12·L·C·T per token, nanoGPT's estimate) / the peak given with --peak-tflops.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import torch

from bigtrain.models.config import resolve
from bigtrain.models.transformer import GPT, PRESETS, GPTConfig


def bench_one(preset: str, args: argparse.Namespace, compiled: bool) -> dict:
    """Time `args.steps` training steps of one preset; returns the measured numbers."""
    device = torch.device(args.device)
    cfg = resolve(GPTConfig(preset=preset), PRESETS)
    cfg = dataclasses.replace(cfg, vocab_size=50304, block_size=args.context)
    torch.manual_seed(0)
    net = GPT(cfg).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=device.type == "cuda")
    step_fn = torch.compile(net) if compiled else net
    batch = args.batch[preset] if isinstance(args.batch, dict) else args.batch
    x = torch.randint(0, cfg.vocab_size, (batch, args.context + 1), device=device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=args.dtype == "bf16"):
            logits = step_fn(x[:, :-1])
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), x[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    start = time.perf_counter()
    for _ in range(args.warmup):
        step()
    _sync(device)
    warmup_s = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    _sync(device)
    elapsed = time.perf_counter() - start
    tokens_per_s = batch * args.context * args.steps / elapsed
    flops = net.flops_per_token(args.context) * tokens_per_s
    result = {
        "preset": preset,
        "params_M": round(net.num_params(non_embedding=False) / 1e6, 1),
        "compiled": compiled,
        "batch": batch,
        "context": args.context,
        "dtype": args.dtype,
        "tokens_per_s": round(tokens_per_s),
        "step_ms": round(1000 * elapsed / args.steps, 2),
        "tflops": round(flops / 1e12, 1),
        "mfu_peak": round(flops / (args.peak_tflops * 1e12), 4),
        "mfu_measured": round(flops / (args.measured_tflops * 1e12), 4),
        "peak_mem_GiB": _peak_gib(device),
        "warmup_s": round(warmup_s, 1),
    }
    return result


def _peak_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    """Run the benchmark grid, print a table, write JSON to --out."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--presets", nargs="+", default=["gpt2-124m", "gpt2-350m"])
    p.add_argument("--context", type=int, default=1024)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--compile", choices=["both", "off", "on"], default="both")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="datasheet dense bf16 peak")
    p.add_argument("--measured-tflops", type=float, default=790.0, help="measured bf16 matmul rate")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    modes = {"both": [False, True], "off": [False], "on": [True]}[args.compile]
    results = []
    for preset in args.presets:
        for compiled in modes:
            results.append(bench_one(preset, args, compiled))
            print(json.dumps(results[-1]), flush=True)
            if args.device == "cuda":
                torch.cuda.empty_cache()
    env = {
        "date": time.strftime("%Y-%m-%d"),
        "device": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    print_table(results, env)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "throughput.json").write_text(json.dumps({"env": env, "results": results}, indent=2))


def print_table(results: list[dict], env: dict) -> None:
    """A short markdown table of the results."""
    print(f"\n{env['device']}, torch {env['torch']}, {env['date']}")
    head = "| preset | params | compile | batch x ctx | tokens/s | TFLOP/s | MFU pk | MFU meas | GiB |"
    print(head)
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['preset']} | {r['params_M']}M | {'yes' if r['compiled'] else 'no'} "
            f"| {r['batch']}x{r['context']} "
            f"| {r['tokens_per_s']:,} | {r['tflops']} | {r['mfu_peak']:.1%} | {r['mfu_measured']:.1%} "
            f"| {r['peak_mem_GiB']} |"
        )


if __name__ == "__main__":
    main()
