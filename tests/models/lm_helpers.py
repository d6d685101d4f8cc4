"""Shared by the language-model tests (rnn, transformer): a learnable text, a quiet trainer, common checks."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

PATTERN = "the cat sat on the mat.\n"


class PatternText(LightningDataModule):
    """A repeated sentence as a character-level TextDataModule (vocab_size, block_size, encode, decode)."""

    def __init__(self, block_size: int = 32, batch_size: int = 16, train_batches: int = 40) -> None:
        super().__init__()
        self.chars = sorted(set(PATTERN))
        self.vocab_size = len(self.chars)
        self.block_size = block_size
        self.batch_size = batch_size
        self.train_batches = train_batches
        self.ids = torch.tensor(self.encode(PATTERN * 40))

    def encode(self, text: str) -> list[int]:
        return [self.chars.index(c) for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def _loader(self, n: int, seed: int) -> DataLoader:
        gen = torch.Generator().manual_seed(seed)
        starts = torch.randint(len(self.ids) - self.block_size - 1, (n,), generator=gen)
        x = torch.stack([self.ids[s : s + self.block_size] for s in starts])
        y = torch.stack([self.ids[s + 1 : s + 1 + self.block_size] for s in starts])
        return DataLoader(TensorDataset(x, y), batch_size=self.batch_size)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_batches * self.batch_size, seed=0)

    def val_dataloader(self) -> DataLoader:
        return self._loader(2 * self.batch_size, seed=1)


def quiet_trainer(max_steps: int, **kw) -> Trainer:
    """A CPU trainer without logger, checkpoints, progress bar, summary or sanity validation."""
    kw = {"logger": False, **kw}
    return Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kw,
    )


def check_meta_init_equals_cpu_build(build: Callable[[], nn.Module], x: torch.Tensor) -> None:
    """A network built on meta, materialised and initialised with the same seed equals a CPU build."""
    torch.manual_seed(3)
    cpu = build()
    with torch.device("meta"):
        meta = build()
    meta.to_empty(device="cpu")
    torch.manual_seed(3)
    meta.init_weights()
    for (name, a), b in zip(cpu.state_dict().items(), meta.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    assert torch.isfinite(meta(x)).all()


def check_shards_with_fsdp2_from_meta(
    build: Callable[[], nn.Module], x: torch.Tensor, generates: bool
) -> None:
    """The sharding plan: fully_shard each block then the root, init on meta, same net as a CPU build."""
    from torch.distributed.fsdp import fully_shard

    dist = torch.distributed
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        ref = build()
        with torch.device("meta"):
            net = build()
        for block in net.blocks():
            fully_shard(block)
        fully_shard(net)
        net.to_empty(device="cpu")
        torch.manual_seed(0)
        net.init_weights()
        out = net(x)
        out.sum().backward()
        torch.testing.assert_close(out, ref(x))
        if generates:  # generate steps through the root's forward, so its sharded weights are gathered
            assert net.generate(x[:, :2], 3).shape == (2, 5)
    finally:
        dist.destroy_process_group()


def check_learned_pattern(trainer: Trainer, data: PatternText, before: float) -> None:
    """Loss from chance to well below it; ppl and bpc agree with the loss; the training loss is logged."""
    m = trainer.callback_metrics
    chance = math.log(data.vocab_size)
    # Plain asserts here are not rewritten by pytest: the messages say what was seen.
    assert before == pytest.approx(chance, abs=0.3), f"untrained val/loss {before:.3f}, chance {chance:.3f}"
    assert m["val/loss"] < 0.4 * chance, f"val/loss {m['val/loss']:.3f}, chance {chance:.3f}"
    assert m["val/ppl"].item() == pytest.approx(math.exp(m["val/loss"].item()), rel=1e-5)
    assert m["val/bpc"].item() == pytest.approx(m["val/loss"].item() / math.log(2), rel=1e-5)
    assert "train/loss" in m


def check_checkpoint_roundtrip(
    trainer: Trainer, model: LightningModule, data: PatternText, x: torch.Tensor, path: Path
) -> None:
    """The checkpoint loads without pickle, holds the data's vocabulary and gives the same logits."""
    trainer.save_checkpoint(path)
    raw = torch.load(path, weights_only=True)
    assert raw["hyper_parameters"]["net"]["vocab_size"] == data.vocab_size
    loaded = type(model).load_from_checkpoint(path, weights_only=True)
    torch.testing.assert_close(loaded.eval()(x), model.eval()(x))
