"""Strategies through `bigtrain fit`: refusals before launching, FSDP options and bf16 on 2 ranks."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from dist_helpers import HERE, QUICK, child_env, fit_args, launch, read_losses, read_weights, wait
from lightning.pytorch import Callback
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def _bigtrain(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bigtrain", "fit", *args], env=child_env(), capture_output=True, text=True,
        timeout=timeout, cwd=HERE,
    )  # fmt: skip


def _one_line_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("bigtrain: error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    for word in words:
        assert word in errors[0]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("devices", "option", "words"),
    [
        ("3", "data_parallel_size", ("data_parallel_size 2", "3 ranks")),
        ("2", "tensor_parallel_size", ("tensor_parallel_size 2", "ResNet has no tensor-parallel plan")),
    ],
    ids=["degree-does-not-divide", "tp-without-a-plan"],
)
def test_a_layout_the_recipe_cannot_take_exits_2_before_launching(tmp_path, devices, option, words):
    proc = _bigtrain(
        "--recipe", "cnn/glyphs", "--trainer.accelerator", "cpu", "--trainer.devices", devices,
        "--trainer.strategy", "fsdp", f"--trainer.strategy.{option}", "2", "--run_dir", str(tmp_path),
    )  # fmt: skip
    _one_line_error(proc, *words)


@pytest.mark.distributed
@pytest.mark.slow
def test_lightning_launches_fsdp_with_bf16_checkpointing_and_cpu_offload(tmp_path):
    """The plain command line, ranks started by Lightning itself (not torchrun), every FSDP option at once."""
    run = tmp_path / "run"
    proc = _bigtrain(
        "--recipe", "transformer/builtin-char", "--data.batch_size", "8", "--data.block_size", "32",
        "--model.sample_tokens", "0", *QUICK, "--trainer.max_steps", "3", "--trainer.devices", "2",
        "--trainer.strategy", "fsdp", "--trainer.strategy.mixed_precision", "bf16",
        "--trainer.strategy.activation_checkpointing", "true", "--trainer.strategy.cpu_offload", "true",
        "--trainer.strategy.timeout_s", "120", "--run_dir", str(run),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    losses = json.loads((run / "losses.json").read_text())["train/loss"]
    assert len(losses) == 3 and all(0 < v < 10 for v in losses)
    assert "mixed_precision: bf16" in (run / "config.yaml").read_text()


class ComputeDtypes(Callback):
    """Test-only (launched ranks import it by name): the dtypes BatchNorm and conv layers compute in.

    Rank 0 writes `<run>/dtypes.json`: {"norm_weight" | "norm_input" | "norm_output" | "conv_weight": [dtype
    names seen in training forwards]}. The pre-hooks run after FSDP's own: they see the gathered parameters.
    """

    def on_train_start(self, trainer, pl_module) -> None:  # noqa: D102
        self.seen: dict[str, set[str]] = {}

        def note(key: str, t: torch.Tensor) -> None:
            self.seen.setdefault(key, set()).add(str(t.dtype).removeprefix("torch."))

        def norm_pre(module, args) -> None:
            if module.training:
                note("norm_weight", module.weight)
                note("norm_input", args[0])

        def norm_post(module, args, out) -> None:
            if module.training:
                note("norm_output", out)

        def conv_pre(module, args) -> None:
            if module.training:
                note("conv_weight", module.weight)

        for module in pl_module.modules():
            if isinstance(module, _BatchNorm):
                module.register_forward_pre_hook(norm_pre)
                module.register_forward_hook(norm_post)
            elif isinstance(module, nn.Conv2d):
                module.register_forward_pre_hook(conv_pre)

    def on_train_end(self, trainer, pl_module) -> None:  # noqa: D102
        if trainer.is_global_zero:
            seen = {k: sorted(v) for k, v in self.seen.items()}
            (Path(trainer.default_root_dir) / "dtypes.json").write_text(json.dumps(seen))


@pytest.mark.distributed
@pytest.mark.slow
def test_fsdp_bf16_keeps_batchnorm_in_fp32_on_2_ranks(tmp_path):
    """FSDP bf16 on a BatchNorm family: conv layers in bf16, BatchNorm on fp32 parameters, synced or not.

    torch's batch_norm refuses bf16 parameters beside its fp32 running statistics ("expected scalar type
    BFloat16 but found Float": in training without sync, in validation with it).
    """
    extra = [
        "--trainer.callbacks+=test_strategy_launches.ComputeDtypes",
        "--trainer.limit_val_batches", "1", "--trainer.val_check_interval", "2",
        "--trainer.devices", "2", "--trainer.strategy", "fsdp", "--trainer.strategy.mixed_precision", "bf16",
    ]  # fmt: skip
    runs = {}
    for sync in ("true", "false"):
        sync_arg = ["--trainer.strategy.sync_batchnorm", sync]
        runs[f"sync-{sync}"] = fit_args("cnn", tmp_path / f"sync-{sync}", *extra, *sync_arg, steps=4)
    wait(launch(runs, 2, tmp_path), tmp_path, 2)
    for name in runs:
        run = tmp_path / name
        losses = read_losses(run)["train/loss"]
        assert len(losses) == 4 and all(math.isfinite(v) and 0 < v < 10 for v in losses), (name, losses)
        dtypes = json.loads((run / "dtypes.json").read_text())
        assert dtypes == {
            "conv_weight": ["bfloat16"],
            "norm_weight": ["float32"],
            "norm_input": ["bfloat16"],
            "norm_output": ["bfloat16"],
        }, name
        weights = read_weights(run)  # the sharded master copy: fp32 throughout
        assert {str(v.dtype) for k, v in weights.items() if not k.endswith("num_batches_tracked")} == {
            "torch.float32"
        }, name
