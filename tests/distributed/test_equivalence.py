"""Same seed, same global batch: `single` (1 process), `ddp` and `fsdp` (2 gloo ranks) train identically.

For every family the training losses of the first 20 steps agree within 1e-6 (relative) and the final
weights, gathered into one state dict, within 1e-5; the GAN's two losses and both networks included. The
options run too: FSDP's activation checkpointing, CPU offload, parameters kept after forward
(`reshard_after_forward false`) and tensor parallel (2 ranks, and 2 x 2 on 4 ranks), and DDP's
`find_unused_parameters`, are exact in fp32 and held to the same bounds, and so is gradient clipping at a
norm that bites, under ddp, fsdp and fsdp x TP. bf16 mixed precision is held to bf16's precision, and its
Linear layers must have computed in bf16 (in fp32 everywhere else).

All fits of one rank count run in one launch (tests/distributed/run_fits.py), the 1-rank and 2-rank
launches side by side, so the whole comparison pays the start-up of torch and Lightning only twice.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dist_helpers import (
    FAMILIES,
    STEPS,
    fit_args,
    launch,
    max_rel_loss_diff,
    max_weight_diff,
    read_losses,
    read_weights,
    wait,
)

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

LOSS_RTOL = 1e-6
"""Measured <= 2.1e-7 (about 2 float32 ulps): the README's bound."""
WEIGHT_ATOL = 1e-5
"""Measured <= 6.3e-6 (the CNN's, after 20 AdamW steps)."""
FSDP2 = ["--trainer.strategy", "fsdp", "--trainer.devices", "2"]
DDP2 = ["--trainer.strategy", "ddp", "--trainer.devices", "2"]
AC = "--trainer.strategy.activation_checkpointing"

OPTIONS: dict[str, tuple[str, list[str], int]] = {
    "fsdp-tp2": ("transformer", [*FSDP2, "--trainer.strategy.tensor_parallel_size", "2"], STEPS),
    "fsdp-checkpointing": ("transformer", [*FSDP2, AC, "true"], STEPS),
    "fsdp-offload": ("rnn", [*FSDP2, "--trainer.strategy.cpu_offload", "true"], STEPS),
    "ddp-find-unused": ("transformer", [*DDP2, "--trainer.strategy.find_unused_parameters", "true"], STEPS),
    "fsdp-no-reshard": ("transformer", [*FSDP2, "--trainer.strategy.reshard_after_forward", "false"], STEPS),
    # BatchNorm layers recompute (and so update their running statistics twice) under checkpointing: the
    # losses still match; the buffers do not, so only losses are compared.
    "fsdp-checkpointing-bn": ("cnn", [*FSDP2, AC, "true"], 5),
    "fsdp-bf16": ("transformer", [*FSDP2, "--trainer.strategy.mixed_precision", "bf16"], 5),
}
"""name -> (family, extra arguments, steps) of the 2-rank runs of FSDP's options."""

SGD = ["--model.optim.name", "sgd", "--model.optim.lr", "0.1"]
"""AdamW would undo most of a clip (it divides by the gradient's own scale); SGD's step is the gradient's."""
CLIP = [*SGD, "--trainer.gradient_clip_val", "0.05"]
"""Far below the transformer's gradient norms, so every step clips."""
CLIPPED: dict[str, list[str]] = {
    "ddp": DDP2,
    "fsdp": FSDP2,
    "fsdp-tp2": [*FSDP2, "--trainer.strategy.tensor_parallel_size", "2"],
}
"""name -> strategy arguments of the 2-rank clipped runs, each compared with the clipped single process."""


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Every family under single (1 process) and ddp / fsdp (2 ranks), plus FSDP's options."""
    work = tmp_path_factory.mktemp("equivalence")
    one = {f"{f}-single": fit_args(f, work / f"{f}-single", "--trainer.strategy", "single") for f in FAMILIES}
    two = {
        f"{f}-{s}": fit_args(f, work / f"{f}-{s}", "--trainer.strategy", s, "--trainer.devices", "2")
        for f in FAMILIES
        for s in ("ddp", "fsdp")
    }
    two.update({name: fit_args(f, work / name, *extra, steps=n) for name, (f, extra, n) in OPTIONS.items()})
    one["clip-single"] = fit_args("transformer", work / "clip-single", "--trainer.strategy", "single", *CLIP)
    one["loose-single"] = fit_args("transformer", work / "loose-single", "--trainer.strategy", "single", *SGD)
    for name, extra in CLIPPED.items():
        two[f"clip-{name}"] = fit_args("transformer", work / f"clip-{name}", *extra, *CLIP)
    launches = [(launch(one, 1, work), 1), (launch(two, 2, work), 2)]
    for proc, nproc in launches:
        wait(proc, work, nproc)
    return work


def _losses_prefix(ref: dict[str, list[float]], n: int) -> dict[str, list[float]]:
    return {name: values[:n] for name, values in ref.items()}


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_two_ranks_train_exactly_like_one_process(runs, family, strategy):
    ref, run = runs / f"{family}-single", runs / f"{family}-{strategy}"
    losses = read_losses(run)
    assert all(len(v) == STEPS for v in losses.values()), {k: len(v) for k, v in losses.items()}
    if family == "gan":
        assert {"train/d_loss", "train/g_loss"} <= losses.keys()
    loss_diff = max_rel_loss_diff(read_losses(ref), losses)
    weight_diff = max_weight_diff(read_weights(ref), read_weights(run))
    print(f"{family} {strategy}: max rel loss diff {loss_diff:.2e}, max weight diff {weight_diff:.2e}")
    assert loss_diff <= LOSS_RTOL
    assert weight_diff <= WEIGHT_ATOL


@pytest.mark.parametrize("name", list(OPTIONS))
def test_fsdp_options_run_and_match_fp32(runs, name):
    family, _, steps = OPTIONS[name]
    ref, run = runs / f"{family}-single", runs / name
    losses = read_losses(run)
    assert all(len(v) == steps for v in losses.values())
    loss_diff = max_rel_loss_diff(_losses_prefix(read_losses(ref), steps), losses)
    print(f"{family} {name}: max rel loss diff {loss_diff:.2e}")
    dtypes = json.loads((run / "compute_dtypes.json").read_text())
    if name == "fsdp-bf16":
        assert dtypes == ["bfloat16"]  # every Linear layer computed in bf16
        assert loss_diff <= 2e-2  # bf16 keeps 8 bits of mantissa: the same run, rounded
        return
    assert dtypes == ["float32"]
    assert loss_diff <= LOSS_RTOL
    if steps == STEPS and name != "fsdp-checkpointing-bn":
        assert max_weight_diff(read_weights(ref), read_weights(run)) <= WEIGHT_ATOL


@pytest.mark.parametrize(
    ("run", "expected"),
    [("gan-ddp", True), ("transformer-ddp", False), ("cnn-ddp", False), ("ddp-find-unused", True)],
)
def test_find_unused_parameters_reaches_ddp(runs, run, expected):
    """null (the default): on only for manual optimization (the GAN); `true` turns it on for any model."""
    assert json.loads((runs / run / "ddp.json").read_text()) == {"find_unused_parameters": expected}


@pytest.mark.parametrize("name", list(CLIPPED))
def test_gradient_clipping_clips_the_global_norm_under_every_strategy(runs, name):
    ref, run = runs / "clip-single", runs / f"clip-{name}"
    loss_diff = max_rel_loss_diff(read_losses(ref), read_losses(run))
    weight_diff = max_weight_diff(read_weights(ref), read_weights(run))
    print(f"clipped transformer {name}: max rel loss diff {loss_diff:.2e}, max weight diff {weight_diff:.2e}")
    assert loss_diff <= LOSS_RTOL and weight_diff <= WEIGHT_ATOL
    # The clip bites: the same run clipped at the recipe's 1.0 trains differently after its first step.
    clipped, loose = read_losses(ref)["train/loss"], read_losses(runs / "loose-single")["train/loss"]
    print(f"last loss clipped at 0.05: {clipped[-1]:.4f}, at 1.0: {loose[-1]:.4f}")
    assert clipped[0] == loose[0] and abs(clipped[-1] - loose[-1]) > 1e-2 * abs(loose[-1]), (clipped, loose)


def test_2d_fsdp_x_tensor_parallel_on_4_ranks_matches_one_process(runs):
    """data_parallel 2 x tensor_parallel 2 for the transformer, and a meta-device build sharded at birth."""
    work = runs
    four = ["--trainer.strategy", "fsdp", "--trainer.devices", "4"]
    tp2, meta = ["--trainer.strategy.tensor_parallel_size", "2"], ["--trainer.strategy.meta_init", "true"]
    spec = {
        "transformer-2d": fit_args("transformer", work / "transformer-2d", *four, *tp2),
        "transformer-meta": fit_args("transformer", work / "transformer-meta", *four, *meta, steps=3),
    }
    wait(launch(spec, 4, work), work, 4)
    ref = work / "transformer-single"
    loss_diff = max_rel_loss_diff(read_losses(ref), read_losses(work / "transformer-2d"))
    weight_diff = max_weight_diff(read_weights(ref), read_weights(work / "transformer-2d"))
    print(f"transformer fsdp 2x2: max rel loss diff {loss_diff:.2e}, max weight diff {weight_diff:.2e}")
    assert loss_diff <= LOSS_RTOL and weight_diff <= WEIGHT_ATOL
    # Initialised shard by shard: every rank drew its own shard, so no quarter repeats another.
    meta = read_weights(work / "transformer-meta")
    weight = meta["net.h.0.mlp.fc.weight"]
    quarters = weight.chunk(4)
    assert all(not quarters[0].equal(q) for q in quarters[1:])
    assert 0.01 < weight.std().item() < 0.04  # GPT-2's N(0, 0.02), not uninitialised memory
    assert len(read_losses(work / "transformer-meta")["train/loss"]) == 3
