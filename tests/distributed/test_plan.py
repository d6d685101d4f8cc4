"""`bigtrain plan`: the model facts, the per-strategy arithmetic, the recommendation and the command."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from bigtrain.data import ImageDataModule, TextDataModule
from bigtrain.errors import UserError
from bigtrain.models import load_all
from bigtrain.plan import (
    GIB,
    ParallelLayout,
    choose,
    estimate,
    layouts,
    model_facts,
    parse_memory,
    precision_of,
    recommend,
)

FAMILIES = load_all()


def _data(family: str):
    if family in ("transformer", "rnn"):
        data = TextDataModule(block_size=32, batch_size=8)
    else:
        data = ImageDataModule(source="glyphs", num_samples=64, batch_size=8)
    data.setup("fit")
    return data


def _built(module, data):
    """The module's real network, built on the CPU as configure_model does under a trainer."""
    module.trainer = SimpleNamespace(datamodule=data, world_size=1, global_rank=0, strategy=None)
    module.configure_model()
    module.trainer = None
    return module.net


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_meta_build_counts_the_real_parameters(family):
    """Every family: the meta-device facts equal the real network's counts; the module stays unbuilt."""
    (cls,) = FAMILIES[family].MODULES
    data = _data(family)
    module = cls()
    facts = model_facts(module, data)
    assert module.net is None, "planning must not build the module's own network"
    net = _built(cls(), data)
    assert facts.params == sum(p.numel() for p in net.parameters())
    blocks = [sum(p.numel() for p in b.parameters()) for b in net.blocks()]
    assert facts.max_block_params == max(blocks)
    assert facts.root_params == facts.params - sum(blocks)
    assert facts.activations(8, 4, 1, False) > 0
    # Checkpointing keeps less; activations grow with the batch.
    assert facts.activations(8, 4, 1, True) < facts.activations(8, 4, 1, False)
    assert facts.activations(16, 4, 1, False) > facts.activations(8, 4, 1, False)


def test_transformer_tensor_parallel_facts():
    facts = model_facts(FAMILIES["transformer"].GPTModule(net={"preset": "baby"}), _data("transformer"))
    C, L = 128, 4
    # q, k, v, proj (C x C each) and fc, proj (C x 4C each) per block, no biases in 'baby'.
    assert facts.tp_params == L * (4 * C * C + 2 * 4 * C * C)
    assert facts.tp_degrees == (2, 4)  # 4 heads
    T, V, m = 32, 63, 4
    b, d = 8, 2
    expected = L * b * T * C * (4 + (4 + 2 * m) / 2) * d + 2 * b * T * C * d + b * T * V * (d + 8)
    assert facts.activations(b, d, 2, False) == pytest.approx(expected)


def test_strategy_arithmetic():
    facts = model_facts(FAMILIES["transformer"].GPTModule(net={"preset": "baby"}), _data("transformer"))
    P, prec = facts.params, precision_of("bf16-mixed", "bf16")
    single = estimate(facts, ParallelLayout("single", "single", 1, 1), prec)
    ddp = estimate(facts, ParallelLayout("ddp", "ddp", 2, 2), prec)
    fsdp = estimate(facts, ParallelLayout("fsdp", "fsdp", 2, 2), prec)
    tp = estimate(facts, ParallelLayout("fsdp x TP2", "fsdp", 4, 2, 2), prec)
    assert single.states == ddp.states == 16 * P  # fp32 master weights, fp32 grads, two AdamW states
    assert fsdp.states == pytest.approx(8 * P, abs=4)
    assert tp.states == pytest.approx(16 * (facts.tp_params / 2 + P - facts.tp_params) / 2, abs=4)
    assert single.batch == 8 and ddp.batch == fsdp.batch == tp.batch == 4
    assert ddp.other > single.other  # the gradient buckets


def test_precision_and_memory_parsing():
    assert precision_of("32-true") == precision_of(None) == precision_of(32)
    assert (precision_of("bf16-mixed").param, precision_of("bf16-mixed").compute) == (4, 2)
    assert (precision_of("bf16-true").param, precision_of("bf16-true").compute) == (2, 2)
    assert precision_of("32-true", "bf16").compute == 2
    with pytest.raises(UserError, match="trainer.precision"):
        precision_of("8-bit")
    assert parse_memory("80GB") == parse_memory("80GiB") == parse_memory("80g") == 80 * GIB
    assert parse_memory("512MB") == 512 * 2**20
    assert parse_memory("1024") == 1024
    with pytest.raises(UserError, match="--device-memory"):
        parse_memory("lots")


def test_recommendation_is_the_cheapest_layout_that_fits():
    gpt, data = FAMILIES["transformer"].GPTModule(net={"preset": "tiny"}), _data("transformer")
    assert recommend(gpt, data, num_nodes=1, devices_per_node=1, device_memory=GIB).strategy == "single"
    assert recommend(gpt, data, num_nodes=1, devices_per_node=2, device_memory=GIB).strategy == "ddp"
    # gpt-1b with AdamW needs 16 GB for its states alone: too much for DDP on 16 GB devices.
    big = FAMILIES["transformer"].GPTModule(net={"preset": "gpt-1b", "vocab_size": 50304})
    facts = model_facts(big, data)
    rows = [estimate(facts, lay, precision_of("bf16-mixed")) for lay in layouts(facts, 2, 8)]
    choice = choose(rows, 16 * GIB)
    assert choice.fits and choice.strategy == "fsdp"
    assert choose(rows, GIB // 2).fits is False  # nothing fits: the smallest is returned, marked so


def test_plan_command_table_and_json(bigtrain_cmd):
    out = bigtrain_cmd(
        "plan",
        "transformer/gpt-1b-fsdp",
        "--nodes",
        "2",
        "--devices-per-node",
        "8",
        "--device-memory",
        "80GB",
    )
    assert out.returncode == 0, out.stderr
    assert "1,016,911,616 parameters" in out.stdout
    assert "recommendation: fsdp" in out.stdout
    out = bigtrain_cmd("plan", "cnn/glyphs", "--json", "--devices-per-node", "2", "--data.batch_size", "32")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    names = [row["layout"]["name"] for row in report["estimates"]]
    assert names == ["single", "ddp", "fsdp", "fsdp + AC"]
    assert report["recommendation"]["strategy"] == "ddp"
    assert report["estimates"][1]["batch"] == 16


def test_plan_command_errors_are_one_line(bigtrain_cmd):
    out = bigtrain_cmd("plan", "cnn/glyphs", "--device-memory", "lots")
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "--device-memory" in out.stderr
    out = bigtrain_cmd("plan", "cnn/glyphz")
    assert out.returncode == 2 and "unknown recipe" in out.stderr


def test_meta_trace_matches_real_saved_activations():
    """The traced estimate of a CNN equals what autograd really keeps for one training step on CPU."""
    data = _data("cnn")
    module = FAMILIES["cnn"].ResNetClassifier()
    facts = model_facts(module, data)
    net = _built(FAMILIES["cnn"].ResNetClassifier(), data).train()
    excluded = {t.untyped_storage().data_ptr() for t in [*net.parameters(), *net.buffers()]}
    kept: dict[int, int] = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in excluded:
            kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    x, y = data.train_set.get_batch(list(range(8)))  # rows 0-7, a whole batch at once as bigtrain reads it
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        torch.nn.functional.cross_entropy(net(x), y)
    assert facts.activations(8, 4, 1, False) == pytest.approx(sum(kept.values()), rel=0.05)
