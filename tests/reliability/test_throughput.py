"""Throughput, FLOPs, MFU and peak memory: reported for every family, counted right, training unchanged."""

from __future__ import annotations

import json
import re

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from torch import nn

from bigtrain.callbacks.throughput import ThroughputMeter, batch_counts

# Built-in data, a few steps, a log every step so that every interval is reported.
CASES = {
    "cnn/glyphs": ["--data.num_samples", "256", "--data.batch_size", "32"],
    "autoencoder/glyphs": ["--data.num_samples", "256", "--data.batch_size", "32"],
    "gan/glyphs": ["--data.num_samples", "256", "--data.batch_size", "32"],
    "rnn/builtin-char": ["--data.train_samples", "256", "--data.batch_size", "32"],
    "transformer/builtin-char": ["--data.train_samples", "256", "--data.batch_size", "32"],
}
COMMON = ["--trainer.enable_progress_bar", "false", "--trainer.limit_val_batches", "0"]
COMMON += ["--trainer.log_every_n_steps", "1", "--trainer.max_steps", "4", "--data.num_workers", "0"]
COMMON += ["--trainer.enable_checkpointing", "false"]
PERF = ["perf/samples_per_s", "perf/tflops_per_s", "perf/mfu", "perf/peak_mem_gib", "perf/flops_per_step"]
SUMMARY = re.compile(
    r"^\d+ steps in \S+ · [\d,]+ (samples|tokens)/s · .*FLOP/s · MFU [\d.]+% · peak [\d.]+ GiB$"
)


@pytest.mark.parametrize("recipe", sorted(CASES))
def test_every_family_reports_throughput_mfu_and_memory(recipe, bigtrain_cmd, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = bigtrain_cmd("fit", "--recipe", recipe, *COMMON, *CASES[recipe], "--run_dir", str(run), env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    sequence = recipe.startswith(("rnn", "transformer"))
    expected = PERF + (["perf/tokens_per_s", "perf/device/tokens_per_s"] if sequence else [])
    metrics = json.loads((run / "metrics.json").read_text())
    assert all(metrics.get(name, 0) > 0 for name in expected), metrics
    # MFU: achieved FLOP/s over the CPU's matmul peak, measured in this run and cached.
    (peak,) = json.loads((tmp_path / "cache" / "bigtrain" / "cpu_peak_flops.json").read_text()).values()
    assert metrics["perf/mfu"] == pytest.approx(metrics["perf/tflops_per_s"] * 1e12 / peak, rel=1e-5)
    events = EventAccumulator(str(run)).Reload()
    for name in expected:
        values = [e.value for e in events.Scalars(name)]
        assert values and min(values) > 0, (name, values)
    lines = [line for line in result.stdout.splitlines() if "steps in" in line]
    assert len(lines) == 1 and SUMMARY.match(lines[0]), result.stdout[-1500:]
    assert ("tokens/s" in lines[0]) == sequence


def test_batch_counts_tokens_only_for_token_ids():
    ids, images = torch.zeros(4, 16, dtype=torch.long), torch.zeros(4, 1, 8, 8)
    assert batch_counts((ids, ids)) == (4, 64)
    assert batch_counts((images, torch.zeros(4, dtype=torch.long))) == (4, 0)
    assert batch_counts(torch.zeros(4, 16)) == (4, 0)  # float rows: features, not token ids


def _fit(module: LightningModule, data, steps: int, callbacks: list) -> Trainer:
    trainer = Trainer(
        accelerator="cpu",
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=callbacks,
    )
    trainer.fit(module, datamodule=data)
    return trainer


def _gpt(batch_size: int = 8):
    from bigtrain.data import TextDataModule
    from bigtrain.models.transformer import GPTModule

    data = TextDataModule(source="builtin", tokenizer="char", block_size=128, batch_size=batch_size)
    return GPTModule(net={"preset": "tiny"}, sample_tokens=0), data


def test_transformer_flops_per_step_match_a_hand_count(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    module, data = _gpt()
    meter = ThroughputMeter()
    _fit(module, data, 1, [meter])
    cfg = module.cfg
    L, d, T, V, B = cfg.n_layer, cfg.n_embd, cfg.block_size, cfg.vocab_size, 8
    # Forward per token: 2 FLOPs per weight of every matrix product (q, k, v, out: 4d^2; MLP: 2*m*d^2;
    # the tied LM head: d*V) plus attention's two (T x d) products per layer (scores, weighted values),
    # each 2*T*d. Backward: twice the forward (the input's gradient and the weight's).
    forward = 2 * (L * (4 + 2 * cfg.mlp_ratio) * d * d + d * V) + L * 2 * 2 * T * d
    hand = 3 * forward * B * T
    assert meter.flops_per_batch == pytest.approx(hand, rel=0.10)


def test_cnn_flops_per_step_match_a_hand_count(tmp_path, monkeypatch):
    from bigtrain.data import ImageDataModule
    from bigtrain.models.cnn import ResNetClassifier

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    data = ImageDataModule(source="glyphs", num_samples=64, batch_size=16)
    module, meter = ResNetClassifier(net={"preset": "tiny"}), ThroughputMeter()
    layers: list[tuple[nn.Module, torch.Size]] = []

    class Shapes(Callback):  # records each layer's output shape once
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if not layers:
                for m in pl_module.modules():
                    if isinstance(m, (nn.Conv2d, nn.Linear)):
                        m.register_forward_hook(lambda mod, i, out: layers.append((mod, out.shape)))

    _fit(module, data, 1, [Shapes(), meter])
    macs = []
    for layer, out in layers:
        if isinstance(layer, nn.Conv2d):  # each output element: C_in/groups * k*k multiply-adds
            k = layer.kernel_size[0] * layer.kernel_size[1]
            macs.append(out.numel() * layer.in_channels // layer.groups * k)
        else:
            macs.append(out.numel() * layer.in_features)
    forward = 2 * sum(macs)
    # Backward: twice the forward, less the first convolution's input gradient (the images need none).
    hand = 3 * forward - 2 * macs[0]
    assert len(layers) > 5 and meter.flops_per_batch == pytest.approx(hand, rel=0.10)


def _weights(module: LightningModule) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _gan():
    from bigtrain.data import ImageDataModule
    from bigtrain.models.gan import DCGANModule

    return DCGANModule(net={"preset": "tiny"}), ImageDataModule(
        source="glyphs", num_samples=64, batch_size=16
    )


def _autoencoder():
    from bigtrain.data import ImageDataModule
    from bigtrain.models.autoencoder import AutoencoderModule

    return AutoencoderModule(net={"preset": "tiny"}), ImageDataModule(
        source="glyphs", num_samples=64, batch_size=16
    )


@pytest.mark.parametrize("build", [_gpt, _gan, _autoencoder], ids=["transformer", "gan", "autoencoder"])
def test_training_is_bit_identical_with_and_without_the_meter(build, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    runs = []
    for callbacks in ([], [ThroughputMeter()]):
        seed_everything(0)
        module, data = build()
        trainer = _fit(module, data, 4, callbacks)
        runs.append((_weights(module), {k: float(v) for k, v in trainer.callback_metrics.items()}))
    (plain, plain_metrics), (measured, measured_metrics) = runs
    assert measured_metrics.get("perf/flops_per_step", 0) > 0  # the meter was there and counted
    assert plain.keys() == measured.keys()
    assert all(torch.equal(plain[k], measured[k]) for k in plain)
    assert all(plain_metrics[k] == measured_metrics[k] for k in plain_metrics)


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("NVIDIA H200", "h200"),
        ("NVIDIA H200 NVL", "h200 nvl"),
        ("NVIDIA H100 80GB HBM3", "h100"),
        ("NVIDIA H100 PCIe", "h100 pcie"),
        ("NVIDIA H100 NVL", "h100 nvl"),
        ("NVIDIA A100-SXM4-80GB", "a100"),
        ("NVIDIA B200", "b200"),
        ("NVIDIA L40S", "l40s"),
        ("NVIDIA L4", None),
    ],
)
def test_gpu_names_find_their_dense_peak_row(name, key):
    from bigtrain.callbacks.peak_flops import table_key

    assert table_key(name) == key


def test_gpu_peak_is_dense_and_follows_the_precision(monkeypatch):
    from bigtrain.callbacks import peak_flops as peaks

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    cuda = torch.device("cuda", 0)
    assert peaks.peak_flops(cuda, "bf16-mixed") == pytest.approx(989.4e12)
    assert peaks.peak_flops(cuda, "16-mixed") == pytest.approx(989.4e12)
    monkeypatch.setattr(torch, "get_float32_matmul_precision", lambda: "high")
    assert peaks.peak_flops(cuda, "32-true") == pytest.approx(494.7e12)  # TF32 tensor cores
    monkeypatch.setattr(torch, "get_float32_matmul_precision", lambda: "highest")
    assert peaks.peak_flops(cuda, "32-true") == pytest.approx(66.9e12)
    assert peaks.peak_flops(cuda, "bf16-mixed", override_tflops=790.0) == pytest.approx(790e12)


def test_cpu_peak_is_measured_once_and_cached(tmp_path, monkeypatch):
    from bigtrain.callbacks import peak_flops as peaks

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls = []
    monkeypatch.setattr(peaks, "measure_matmul_flops", lambda: calls.append(1) or 5e10)
    assert peaks.peak_flops(torch.device("cpu"), "32-true") == 5e10
    assert peaks.peak_flops(torch.device("cpu"), "32-true") == 5e10
    assert len(calls) == 1
    cached = json.loads((tmp_path / "bigtrain" / "cpu_peak_flops.json").read_text())
    assert list(cached.values()) == [5e10] and f"torch {torch.__version__}" in next(iter(cached))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 97)  # another thread count: measured anew
    peaks.peak_flops(torch.device("cpu"), "32-true")
    assert len(calls) == 2


def test_a_bad_peak_override_is_one_line(bigtrain_cmd, tmp_path):
    result = bigtrain_cmd(
        "fit", "--recipe", "cnn/glyphs", "--throughput.peak_tflops", "0", "--run_dir", str(tmp_path)
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "bigtrain: error: throughput.peak_tflops must be > 0 or null, got 0.0"
    )


def _gan_flops(tmp_path, **module_args) -> int:
    from bigtrain.data import ImageDataModule
    from bigtrain.models.gan import DCGANModule

    seed_everything(0)
    data = ImageDataModule(source="glyphs", num_samples=64, batch_size=16)
    meter = ThroughputMeter()
    _fit(DCGANModule(net={"preset": "tiny"}, **module_args), data, 4, [meter])
    return meter.flops_per_batch


def test_gan_counts_its_discriminator_and_generator_steps_together(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    both = _gan_flops(tmp_path)  # every batch: a D step and a G step
    d_only = _gan_flops(tmp_path, d_steps_per_g_step=100)  # 4 batches, D steps only
    every_other = _gan_flops(tmp_path, d_steps_per_g_step=2)  # a D step, then a D and a G step
    # The last counts both batches of its pattern: per batch, the mean of a D-only and a D-and-G batch.
    assert 0 < d_only < both
    assert every_other == pytest.approx((d_only + both) / 2, rel=1e-6)


def test_flops_per_optimizer_step_include_accumulated_batches(tmp_path, monkeypatch):
    from bigtrain.data import ImageDataModule
    from bigtrain.models.cnn import ResNetClassifier

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    data = ImageDataModule(source="glyphs", num_samples=128, batch_size=16)
    meter = ThroughputMeter()
    trainer = Trainer(
        accelerator="cpu",
        max_steps=2,
        accumulate_grad_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[meter],
    )
    trainer.fit(ResNetClassifier(net={"preset": "tiny"}), datamodule=data)
    assert trainer.callback_metrics["perf/flops_per_step"] == 2 * meter.flops_per_batch > 0


@pytest.mark.distributed
@pytest.mark.parametrize(
    ("strategy", "data_parallel"),
    [
        (["--trainer.strategy", "ddp"], 2),
        (["--trainer.strategy", "fsdp", "--trainer.strategy.tensor_parallel_size", "2"], 1),
    ],
    ids=["ddp", "tensor-parallel"],
)
def test_totals_count_each_data_parallel_batch_once(strategy, data_parallel, bigtrain_cmd, tmp_path):
    run = tmp_path / "run"
    args = ["fit", "--recipe", "transformer/builtin-char", *COMMON, *CASES["transformer/builtin-char"]]
    result = bigtrain_cmd(*args, "--trainer.devices", "2", *strategy, "--run_dir", str(run))
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((run / "metrics.json").read_text())
    per_device = metrics["perf/device/tokens_per_s"]
    assert metrics["perf/tokens_per_s"] == pytest.approx(data_parallel * per_device)
    # Under tensor parallelism the counter would count sharded products at full size: no FLOPs, no MFU.
    assert ("perf/mfu" in metrics) == (data_parallel == 2)
    assert ("perf/flops_per_step" in metrics) == (data_parallel == 2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_gpu_run_reports_mfu_against_the_dense_bf16_peak(tmp_path):
    from bigtrain.callbacks.peak_flops import DENSE_TFLOPS, table_key

    module, data = _gpt(batch_size=16)
    meter = ThroughputMeter()
    trainer = Trainer(
        accelerator="cuda",
        devices=1,
        precision="bf16-mixed",
        max_steps=6,
        log_every_n_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
        callbacks=[meter],
    )
    trainer.fit(module, datamodule=data)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert metrics["perf/flops_per_step"] > 0 and 0 < metrics["perf/mfu"] < 1, metrics
    assert 0 < metrics["perf/peak_mem_gib"] <= torch.cuda.max_memory_allocated() / 2**30
    if (key := table_key(torch.cuda.get_device_name())) is not None:
        assert meter.peak == pytest.approx(DENSE_TFLOPS[key][2] * 1e12)  # the bf16 column
