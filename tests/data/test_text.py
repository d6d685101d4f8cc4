"""TextDataModule: sources, deterministic and resumable windows, ranks and workers, token files, errors."""

from __future__ import annotations

import hashlib
import math
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from torch import nn

from bigtrain.data import tokens as tokens_mod
from bigtrain.data.base import EpochSampler
from bigtrain.data.corpus import BUILTIN_SIZE, BUILTIN_VOCAB, builtin_corpus
from bigtrain.data.text import SHAKESPEARE_SHA256, TextDataModule
from bigtrain.data.tokens import write_tokens
from bigtrain.errors import UserError

REPO = Path(__file__).resolve().parents[2]
TEST_DATA = Path(os.environ.get("BIGTRAIN_TEST_DATA", REPO.parent / "shared" / "data"))
SHAKESPEARE = TEST_DATA / "tinyshakespeare" / "input.txt"
needs_shakespeare = pytest.mark.skipif(
    not SHAKESPEARE.is_file(), reason=f"Tiny Shakespeare not found at {SHAKESPEARE} (set BIGTRAIN_TEST_DATA)"
)


def batches(dm: TextDataModule, n: int | None = None, epoch: int = 0) -> list[tuple[torch.Tensor, ...]]:
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == n:
            break
    return out


def small_text(tmp_path: Path, text: str | None = None) -> Path:
    file = tmp_path / "small.txt"
    file.write_text(text or builtin_corpus()[:20_000], encoding="utf-8")
    return file


# The built-in corpus


def test_builtin_corpus_is_deterministic_and_as_documented():
    text = builtin_corpus()
    fresh = builtin_corpus.__wrapped__()  # bypass the in-memory cache
    assert fresh == text
    assert len(text) == BUILTIN_SIZE == len(text.encode("utf-8"))
    assert len(set(text)) == BUILTIN_VOCAB
    assert builtin_corpus.__wrapped__(seed=1) != text
    # Pinned: the same text on every Python version and platform (it is generated, not stored).
    assert hashlib.sha256(text.encode()).hexdigest().startswith("5ef3e1cedba3")
    assert "\n\n" in text and " plus " in text and "counted:" in text


def _ngram_cross_entropy(ids: np.ndarray, order: int, vocab: int) -> float:
    """Held-out (last 10%) cross-entropy in nats of an add-0.01 n-gram model counted on the first 90%."""
    ids = ids.astype(np.int64)
    context = np.zeros(len(ids) - order + 1, dtype=np.int64)
    for k in range(order - 1):  # the order - 1 preceding ids as one base-`vocab` number
        context = context * vocab + ids[k : len(ids) - order + 1 + k]
    target = ids[order - 1 :]
    split = int(len(ids) * 0.9) - order + 1
    pairs, pair_counts = np.unique(context[:split] * vocab + target[:split], return_counts=True)
    contexts, context_counts = np.unique(context[:split], return_counts=True)

    def lookup(keys: np.ndarray, table: np.ndarray, counts: np.ndarray) -> np.ndarray:
        at = np.minimum(np.searchsorted(table, keys), len(table) - 1)
        return np.where(table[at] == keys, counts[at], 0)

    seen = lookup(context[split:] * vocab + target[split:], pairs, pair_counts)
    total = lookup(context[split:], contexts, context_counts)
    return float(-np.mean(np.log((seen + 0.01) / (total + 0.01 * vocab))))


def test_builtin_corpus_is_learnable_but_not_trivial():
    dm = TextDataModule()
    dm.setup()
    ids = np.concatenate([dm._train.tokens, dm._val.tokens])
    ln_v = math.log(dm.vocab_size)
    trigram = _ngram_cross_entropy(ids, 3, dm.vocab_size)
    sixgram = _ngram_cross_entropy(ids, 6, dm.vocab_size)
    assert trigram < 0.35 * ln_v  # short contexts already predict most characters
    assert 0.15 < sixgram < trigram  # longer ones help, yet free choices keep the loss well above zero


def test_builtin_datamodule_shapes_and_shift():
    dm = TextDataModule(block_size=16, batch_size=8, train_samples=32)
    dm.setup()
    assert (dm.vocab_size, dm.block_size) == (BUILTIN_VOCAB, 16)
    x, y = batches(dm, 1)[0]
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])
    for row_x, row_y in zip(x, y, strict=True):  # each window is a real stretch of the corpus
        assert dm.decode(row_x.tolist()) + dm.decode(row_y[-1:].tolist()) in builtin_corpus()
    assert dm.decode(dm.encode("Ada counted: one, two.")) == "Ada counted: one, two."
    assert len(batches(dm)) == 4
    assert int(dm.train_dataloader().sampler.num_samples) == 32


def test_default_samples_cover_the_split_once():
    dm = TextDataModule(block_size=64, batch_size=64)
    dm.setup()
    n_train = int(BUILTIN_SIZE * 0.9)
    assert len(dm._train) % 64 == 0 and abs(len(dm._train) * 64 - n_train) <= 64 * 64 / 2
    assert len(dm._val) == (BUILTIN_SIZE - n_train - 1) // 64


# Determinism: a pure function of (seed, epoch, position)


def test_windows_depend_only_on_seed_epoch_and_position():
    make = lambda seed: TextDataModule(block_size=8, batch_size=4, train_samples=16, seed=seed)  # noqa: E731
    a, b, c = make(0), make(0), make(1)
    for dm in (a, b, c):
        dm.setup()
    first = batches(a, epoch=0)
    assert all(torch.equal(p[0], q[0]) for p, q in zip(first, batches(b, epoch=0), strict=True))
    assert not torch.equal(first[0][0], batches(c, 1, epoch=0)[0][0])
    assert not torch.equal(first[0][0], batches(a, 1, epoch=1)[0][0])
    assert torch.equal(batches(a, 1, epoch=1)[0][0], batches(b, 1, epoch=1)[0][0])
    assert a._train.start(3) == b._train.start(3) and a._train[3][0].tolist() == b._train[3][0].tolist()


def test_windows_identical_for_any_num_workers():
    runs = []
    for workers in (0, 2):
        dm = TextDataModule(block_size=16, batch_size=8, train_samples=48, num_workers=workers, seed=3)
        dm.setup()
        runs.append([x for x, _ in batches(dm, epoch=2)])
    assert len(runs[0]) == 6 and all(torch.equal(p, q) for p, q in zip(*runs, strict=True))


def test_two_ranks_see_exactly_the_single_process_global_batches():
    def loader_batches(world: int, rank: int) -> list[torch.Tensor]:
        dm = TextDataModule(block_size=8, batch_size=8, train_samples=64, seed=5)
        dm._ranks = lambda: (world, rank)
        dm.setup()
        return [x for x, _ in batches(dm, epoch=1)]

    single = loader_batches(1, 0)
    ranks = [loader_batches(2, r) for r in (0, 1)]
    assert len(single) == len(ranks[0]) == len(ranks[1]) == 8
    for step, whole in enumerate(single):
        parts = torch.cat([ranks[0][step], ranks[1][step]])
        assert parts.shape == whole.shape
        assert sorted(map(tuple, parts.tolist())) == sorted(map(tuple, whole.tolist()))

    # The same through the samplers directly: the ranks partition the indices, and every window matches.
    dm = TextDataModule(block_size=8, batch_size=8, train_samples=64, seed=5)
    dm.setup()
    samplers = [EpochSampler(dm._train, num_replicas=2, rank=r, shuffle=True, seed=5) for r in (0, 1)]
    for s in samplers:
        s.set_epoch(4)
    picked = [list(s) for s in samplers]
    assert not set(picked[0]) & set(picked[1])
    assert sorted(picked[0] + picked[1]) == [4 * 64 + i for i in range(64)]


def test_window_starts_are_uniform_over_every_valid_start(tmp_path):
    dm = TextDataModule(source="text", path=str(small_text(tmp_path, "abcdefghij" * 3)), block_size=4,
                        val_fraction=0.5, batch_size=1, train_samples=400)  # fmt: skip
    dm.setup()
    starts = Counter(dm._train.start(i) for i in range(400))
    assert set(starts) == set(range(15 - 4))  # 15 train tokens, windows of 5
    assert max(starts.values()) < 3 * 400 / 11


def test_validation_windows_are_fixed(tmp_path):
    dm = TextDataModule(source="text", path=str(small_text(tmp_path)), block_size=32, batch_size=4)
    dm.setup()
    val = dm._val
    n = len(val.tokens)
    assert len(val) == (n - 1) // 32
    assert [val.start(i) for i in range(3)] == [0, 32, 64]
    assert val.start(len(val) + 1) == 32  # the sampler's epoch offset is ignored
    first = [x for x, _ in dm.val_dataloader()]
    assert all(torch.equal(p, q) for p, q in zip(first, [x for x, _ in dm.val_dataloader()], strict=True))
    spaced = TextDataModule(source="text", path=str(small_text(tmp_path)), block_size=32, val_samples=5)
    spaced.setup()
    assert [spaced._val.start(i) for i in range(5)][::4] == [0, n - 33]
    assert torch.equal(spaced._val[4][1][-1:], torch.from_numpy(spaced._val.tokens[-1:].astype(np.int64)))


# Sources


def test_text_folder_and_byte_tokenizer(tmp_path):
    (tmp_path / "b.txt").write_text("ünïcödé " * 200, encoding="utf-8")
    (tmp_path / "a.md").write_text("plain " * 200, encoding="utf-8")
    dm = TextDataModule(source="text", path=str(tmp_path), tokenizer="byte", block_size=16, batch_size=4)
    dm.setup()
    assert dm.vocab_size == 256
    assert dm.encode("ü") == [0xC3, 0xBC] and dm.decode([0xC3, 0xBC, 0xC3]) == "ü\ufffd"
    whole = np.concatenate([dm._train.tokens, dm._val.tokens])
    assert bytes(whole.tolist()).decode("utf-8") == "plain " * 200 + "\n" + "ünïcödé " * 200


def test_token_folder_gives_the_same_batches_as_the_text(tmp_path):
    file = small_text(tmp_path)
    info = write_tokens(file, tmp_path / "tok", "char")
    kw = {"block_size": 16, "batch_size": 8, "train_samples": 32, "seed": 7}
    text_dm = TextDataModule(source="text", path=str(file), **kw)
    tok_dm = TextDataModule(source="tokens", path=str(tmp_path / "tok"), num_workers=2, **kw)
    for dm in (text_dm, tok_dm):
        dm.setup()
    assert tok_dm.vocab_size == text_dm.vocab_size == info["vocab_size"]
    assert tok_dm._train.tokens._mm is None  # setup's vocabulary scan let go of its map
    for (xa, ya), (xb, yb) in zip(batches(text_dm), batches(tok_dm), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert tok_dm._train.tokens._mm is None  # only the worker processes mapped the file
    val_a, val_b = (next(iter(dm.val_dataloader()))[0] for dm in (text_dm, tok_dm))
    assert torch.equal(val_a, val_b)
    assert tok_dm.decode(tok_dm.encode("Ada went")) == "Ada went"
    for name in ("_train", "_val"):  # the memory-mapped files hold exactly the in-memory tokens
        mapped, held = getattr(tok_dm, name).tokens, getattr(text_dm, name).tokens
        assert np.array_equal(mapped.window(0, len(mapped)), held)


def test_single_raw_token_file(tmp_path):
    ids = (np.arange(3000) % 300).astype(np.uint32)
    ids.tofile(tmp_path / "raw.bin")
    dm = TextDataModule(source="tokens", path=str(tmp_path / "raw.bin"), token_dtype="uint32", vocab_size=300,
                        block_size=8, batch_size=4)  # fmt: skip
    dm.setup()
    assert (len(dm._train.tokens), len(dm._val.tokens)) == (2700, 300)
    x, y = dm._val[0]
    assert x.tolist() == list(range(0, 8)) and y.tolist() == list(range(1, 9))
    assert dm.decode([1, 299]) == "1 299" and dm.encode("4 5") == [4, 5]
    (tmp_path / "b.bin").write_bytes(np.arange(2000, dtype=np.uint16).astype(np.uint16).tobytes())
    small = TextDataModule(source="tokens", path=str(tmp_path / "b.bin"), vocab_size=2000, block_size=4)
    small.setup()
    assert small._train[0][0].dtype == torch.long


def test_tokens_beyond_the_vocabulary(tmp_path, monkeypatch):
    (np.arange(1000) % 50).astype(np.uint16).tofile(tmp_path / "t.bin")
    path = str(tmp_path / "t.bin")
    with pytest.raises(UserError, match="token 40 at position 40 is >= vocab_size 40"):
        TextDataModule(source="tokens", path=path, vocab_size=40, block_size=4).setup()
    monkeypatch.setattr(tokens_mod, "SCAN_LIMIT_BYTES", 0)  # a huge file: only the windows are checked
    dm = TextDataModule(source="tokens", path=path, vocab_size=40, block_size=4, val_samples=10)
    dm.setup()
    with pytest.raises(UserError, match=r"t\.bin: token 4\d at position \d+ is >= vocab_size 40"):
        [dm._val[i] for i in range(10)]


@needs_shakespeare
def test_tiny_shakespeare(tmp_path):
    data = SHAKESPEARE.read_bytes()
    assert len(data) == 1_115_394 and hashlib.sha256(data).hexdigest() == SHAKESPEARE_SHA256
    (tmp_path / "input.txt").write_bytes(data)
    dm = TextDataModule(source="shakespeare", path=str(tmp_path), download=True)
    dm.prepare_data()  # checksum matches: nothing to fetch
    dm.setup()
    assert dm.vocab_size == 65
    assert (len(dm._train.tokens), len(dm._val.tokens)) == (1_003_854, 111_540)
    assert dm.decode(dm.encode(data[:2000].decode())) == data[:2000].decode()
    assert dm.decode(dm._val.tokens[:40].tolist()) == data[1_003_854:1_003_894].decode()
    (tmp_path / "input.txt").write_bytes(data[:-1])
    with pytest.raises(UserError, match="SHA-256"):
        TextDataModule(source="shakespeare", path=str(tmp_path), download=True).prepare_data()


# Errors a user can make


class Bigram(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.table: nn.Embedding | None = None
        self.losses: list[float] = []

    def configure_model(self) -> None:
        if self.table is None:
            self.table = nn.Embedding(self.trainer.datamodule.vocab_size, self.trainer.datamodule.vocab_size)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self.table(x).flatten(0, 1), y.flatten())
        self.losses.append(loss.item())
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.3)


def test_trains_inside_lightning():
    torch.manual_seed(0)
    dm = TextDataModule(block_size=32, batch_size=32, train_samples=320)
    model = Bigram()
    trainer = Trainer(accelerator="cpu", max_steps=60, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)  # fmt: skip
    trainer.fit(model, datamodule=dm)
    assert trainer.current_epoch >= 5  # epochs advance the sampler's window order
    first, last = model.losses[0], np.mean(model.losses[-10:])
    assert first > 0.9 * math.log(BUILTIN_VOCAB) and last < 0.65 * math.log(BUILTIN_VOCAB)


def test_data_sizes_leave_token_files_unread_when_the_vocabulary_is_given(tmp_path):
    """A token corpus can be terabytes: with data.vocab_size its sizes need no file (here: none exists)."""
    data = TextDataModule(
        source="tokens", path=str(tmp_path / "absent.bin"), vocab_size=50304, block_size=128
    )
    assert data.data_sizes() == {"vocab_size": 50304, "block_size": 128}
    assert data.sample_shape() == (128,)
    builtin = TextDataModule(block_size=16, batch_size=4)
    assert builtin.data_sizes() == {"vocab_size": BUILTIN_VOCAB, "block_size": 16}
