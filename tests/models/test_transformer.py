"""The transformer family: every preset builds, the tiny GPT is causal, learns, samples and round-trips."""

from __future__ import annotations

import lm_helpers as lm
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from bigtrain.errors import UserError
from bigtrain.models.config import resolve
from bigtrain.models.lm import text_sample
from bigtrain.models.optim import OptimConfig
from bigtrain.models.transformer import CONFIGS, GPT, PRESETS, GPTConfig, GPTModule


def _tiny(**kw) -> GPT:
    return GPT(resolve(GPTConfig(preset="tiny", block_size=16, vocab_size=11, **kw), PRESETS))


@pytest.mark.parametrize(("cls", "preset"), [(c, p) for c, presets in CONFIGS.items() for p in presets])
def test_every_preset_builds_on_meta(cls, preset):
    cfg = resolve(cls(preset=preset, block_size=1024, vocab_size=50304), CONFIGS[cls])
    with torch.device("meta"):
        net = GPT(cfg)
    assert len(net.blocks()) == cfg.n_layer
    assert all(p.is_meta for p in net.parameters())
    n = net.num_params(non_embedding=False)
    expected = {"gpt2-124m": 124.5e6, "gpt2-350m": 354.9e6, "gpt-760m": 773.6e6, "gpt-1b": 1.017e9}
    if preset in expected:
        assert n == pytest.approx(expected[preset], rel=0.01)
    assert net.flops_per_token() > 6 * net.num_params()


def test_forward_shape_and_causality():
    torch.manual_seed(0)
    net = _tiny().eval()
    idx = torch.randint(11, (3, 16))
    logits = net(idx)
    assert logits.shape == (3, 16, 11)
    changed = idx.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % 11
    # Positions before the change cannot see it.
    torch.testing.assert_close(net(changed)[:, :10], logits[:, :10])
    assert not torch.allclose(net(changed)[:, 10:], logits[:, 10:])
    with pytest.raises(ValueError, match="block_size"):
        net(torch.zeros(1, 17, dtype=torch.long))


def test_lm_head_is_tied_to_the_token_embedding():
    torch.manual_seed(0)
    net = _tiny()
    seen = {}
    net.ln_f.register_forward_hook(lambda mod, args, out: seen.update(stream=out))
    logits = net(torch.randint(11, (2, 8)))
    torch.testing.assert_close(logits, seen["stream"] @ net.wte.weight.T)
    assert [k for k in net.state_dict() if k.endswith(".weight") and "h." not in k] == [
        "wte.weight",
        "wpe.weight",
        "ln_f.weight",
    ]
    logits.sum().backward()
    assert net.wte.weight.grad is not None


def test_meta_build_then_init_equals_cpu_build():
    lm.check_meta_init_equals_cpu_build(_tiny, torch.randint(11, (2, 16)))


def test_gpt2_init_scales_residual_projections():
    torch.manual_seed(0)
    net = GPT(resolve(GPTConfig(preset="baby", n_layer=8, block_size=16, vocab_size=11), PRESETS))
    block = net.blocks()[0]
    assert block.attn.q.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert block.attn.proj.weight.std().item() == pytest.approx(0.02 / 4, rel=0.1)
    assert block.mlp.proj.weight.std().item() == pytest.approx(0.02 / 4, rel=0.1)
    assert net.wte.weight.std().item() == pytest.approx(0.02, rel=0.1)


def test_generate_crops_context_is_reproducible_and_leaves_global_rng():
    torch.manual_seed(0)
    net = _tiny().eval()
    prompt = torch.zeros(2, 1, dtype=torch.long)
    state = torch.get_rng_state()
    a = net.generate(prompt, 30, generator=torch.Generator().manual_seed(7))
    b = net.generate(prompt, 30, generator=torch.Generator().manual_seed(7))
    assert torch.equal(torch.get_rng_state(), state)
    assert a.shape == (2, 31) and torch.equal(a, b)
    greedy = net.generate(prompt, 5, top_k=1)
    assert torch.equal(greedy[:, 1], net(prompt)[:, -1].argmax(-1))


def test_blocks_shard_with_fsdp2_from_meta():
    lm.check_shards_with_fsdp2_from_meta(_tiny, torch.randint(11, (2, 16)), generates=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny GPT trained for 40 steps on the pattern, with its loss before training."""
    tmp = tmp_path_factory.mktemp("gpt")
    torch.manual_seed(0)
    data = lm.PatternText()
    model = GPTModule(
        net=GPTConfig(preset="tiny"), optim=OptimConfig(lr=3e-3, betas=(0.9, 0.99)), sample_tokens=60
    )
    before = lm.quiet_trainer(1).validate(model, datamodule=data, verbose=False)[0]["val/loss"]
    trainer = lm.quiet_trainer(40, logger=TensorBoardLogger(tmp, name="tb", version=0))
    trainer.fit(model, datamodule=data)
    return trainer, model, data, before, tmp


def test_learns_the_pattern(trained):
    trainer, model, data, before, _ = trained
    lm.check_learned_pattern(trainer, data, before)
    assert model.cfg.vocab_size == data.vocab_size and model.cfg.block_size == data.block_size


def test_text_sample_is_logged_and_reproducible(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer, model, data, _, tmp = trained
    assert model.last_sample is not None and len(model.last_sample) == 61
    assert model.last_sample.startswith("\n") and set(model.last_sample) <= set(data.chars)
    state = torch.get_rng_state()
    assert text_sample(model, model._generate, 60) == model.last_sample
    assert torch.equal(torch.get_rng_state(), state)
    events = EventAccumulator(str(tmp / "tb" / "version_0"), size_guidance={"tensors": 0})
    events.Reload()
    assert "samples/text/text_summary" in events.Tags()["tensors"]


def test_checkpoint_roundtrip_without_pickle(trained):
    trainer, model, data, _, tmp = trained
    x = torch.randint(data.vocab_size, (2, data.block_size))
    lm.check_checkpoint_roundtrip(trainer, model, data, x, tmp / "gpt.ckpt")


def test_config_mistakes_are_user_errors():
    with pytest.raises(UserError, match="gpt2-124m"):
        GPTModule(net=GPTConfig(preset="gpt2-124"))
    model = GPTModule(net=GPTConfig(preset="tiny", block_size=8))
    with pytest.raises(UserError, match="block_size"):
        lm.quiet_trainer(1).fit(model, datamodule=lm.PatternText(block_size=32))
