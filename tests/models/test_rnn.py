"""The rnn family: every preset builds, both tasks run, learn, sample and round-trip through checkpoints."""

from __future__ import annotations

import math

import lm_helpers as lm
import pytest
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, TensorDataset

from bigtrain.errors import UserError
from bigtrain.models.config import resolve
from bigtrain.models.lm import text_sample
from bigtrain.models.optim import OptimConfig
from bigtrain.models.rnn import CONFIGS, PRESETS, RNN, RNNConfig, RNNModule


class StripeImages(LightningDataModule):
    """Noisy 2x8x8 images whose label k is the row (2k) holding a bright stripe: the RNN must remember it."""

    num_classes, channels, image_size = 4, 2, 8

    def _loader(self, n: int, seed: int) -> DataLoader:
        gen = torch.Generator().manual_seed(seed)
        y = torch.randint(self.num_classes, (n,), generator=gen)
        x = 0.5 * torch.randn(n, self.channels, self.image_size, self.image_size, generator=gen)
        x[torch.arange(n), :, 2 * y, :] += 2.0
        return DataLoader(TensorDataset(x, y), batch_size=32)

    def train_dataloader(self) -> DataLoader:
        return self._loader(32 * 40, seed=0)

    def val_dataloader(self) -> DataLoader:
        return self._loader(128, seed=1)


def _net(task: str, cell: str) -> RNN:
    sizes = {"vocab_size": 11} if task == "lm" else {"num_classes": 4, "input_size": 16}
    return RNN(resolve(RNNConfig(preset="tiny", task=task, cell=cell, **sizes), PRESETS))


@pytest.mark.parametrize("task", ["lm", "classify"])
@pytest.mark.parametrize(("cls", "preset"), [(c, p) for c, presets in CONFIGS.items() for p in presets])
def test_every_preset_builds_on_meta(cls, preset, task):
    cfg = resolve(cls(preset=preset, task=task, vocab_size=65, num_classes=10, input_size=28), CONFIGS[cls])
    with torch.device("meta"):
        net = RNN(cfg)
    assert len(net.blocks()) == cfg.n_layer
    assert all(p.is_meta for p in net.parameters())
    assert (net.embed is not None) == (task == "lm")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_forward_shapes(cell):
    torch.manual_seed(0)
    assert _net("lm", cell)(torch.randint(11, (3, 7))).shape == (3, 7, 11)
    assert _net("classify", cell)(torch.randn(3, 2, 8, 8)).shape == (3, 4)


def test_classifier_reads_one_image_row_per_step():
    net = _net("classify", "gru")
    seen = {}
    net.layers[0].register_forward_hook(lambda mod, args, out: seen.update(seq=args[0]))
    x = torch.randn(3, 2, 8, 8)
    net(x)
    assert seen["seq"].shape == (3, 8, 16)
    torch.testing.assert_close(seen["seq"][1, 5], x[1, :, 5, :].flatten())


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_meta_build_then_init_equals_cpu_build(cell):
    lm.check_meta_init_equals_cpu_build(lambda: _net("lm", cell), torch.randint(11, (2, 9)))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_generate_carries_state_like_a_full_rerun(cell):
    torch.manual_seed(0)
    net = _net("lm", cell).eval()
    prompt = torch.randint(11, (2, 3))
    greedy = net.generate(prompt, 6, top_k=1)
    rerun = prompt
    for _ in range(6):
        rerun = torch.cat([rerun, net(rerun)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(greedy, rerun)
    state = torch.get_rng_state()
    a = net.generate(prompt, 20, generator=torch.Generator().manual_seed(5))
    b = net.generate(prompt, 20, generator=torch.Generator().manual_seed(5))
    assert torch.equal(torch.get_rng_state(), state)
    assert a.shape == (2, 23) and torch.equal(a, b)


# nn.LSTM returns views; FSDP2 warns in case they are changed in place, which nothing here does.
@pytest.mark.filterwarnings("ignore:FSDP2-wrapped module")
@pytest.mark.parametrize("task", ["lm", "classify"])
def test_layers_shard_with_fsdp2_from_meta(task):
    x = torch.randint(11, (2, 9)) if task == "lm" else torch.randn(2, 2, 8, 8)
    lm.check_shards_with_fsdp2_from_meta(lambda: _net(task, "lstm"), x, generates=task == "lm")


@pytest.fixture(scope="module")
def trained_lm():
    """A tiny LSTM trained for 40 steps on the pattern, with its loss before training."""
    torch.manual_seed(0)
    data = lm.PatternText()
    model = RNNModule(net=RNNConfig(preset="tiny"), optim=OptimConfig(lr=1e-2), sample_tokens=60)
    before = lm.quiet_trainer(1).validate(model, datamodule=data, verbose=False)[0]["val/loss"]
    trainer = lm.quiet_trainer(40)
    trainer.fit(model, datamodule=data)
    return trainer, model, data, before


def test_lm_learns_the_pattern_and_samples(trained_lm):
    trainer, model, data, before = trained_lm
    lm.check_learned_pattern(trainer, data, before)
    assert len(model.last_sample) == 61 and set(model.last_sample) <= set(data.chars)
    assert text_sample(model, model._generate, 60) == model.last_sample


def test_lm_checkpoint_roundtrip_without_pickle(trained_lm, tmp_path):
    trainer, model, data, _ = trained_lm
    x = torch.randint(data.vocab_size, (2, 16))
    lm.check_checkpoint_roundtrip(trainer, model, data, x, tmp_path / "rnn.ckpt")


def test_classifier_learns_and_round_trips(tmp_path):
    torch.manual_seed(0)
    data = StripeImages()
    model = RNNModule(net=RNNConfig(preset="tiny", task="classify", cell="gru"), optim=OptimConfig(lr=1e-2))
    trainer = lm.quiet_trainer(40)
    trainer.fit(model, datamodule=data)
    m = trainer.callback_metrics
    assert m["val/acc"] > 0.9
    assert m["val/loss"] < 0.5 * math.log(4)
    assert "val/ppl" not in m and model.last_sample is None
    assert (model.cfg.num_classes, model.cfg.input_size) == (4, 16)
    trainer.save_checkpoint(tmp_path / "cls.ckpt")
    torch.load(tmp_path / "cls.ckpt", weights_only=True)
    loaded = RNNModule.load_from_checkpoint(tmp_path / "cls.ckpt", weights_only=True)
    x = torch.randn(5, 2, 8, 8)
    torch.testing.assert_close(loaded.eval()(x), model.eval()(x))


def test_config_mistakes_are_user_errors():
    with pytest.raises(UserError, match="small"):
        RNNModule(net=RNNConfig(preset="smal"))
    model = RNNModule(net=RNNConfig(preset="tiny", task="classify", num_classes=3))
    with pytest.raises(UserError, match="num_classes"):
        lm.quiet_trainer(1).fit(model, datamodule=StripeImages())
