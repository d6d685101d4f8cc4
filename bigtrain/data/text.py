"""Language-model windows over text: the built-in corpus, your files, Tiny Shakespeare, or token files.

Training batches are random windows of block_size + 1 tokens, as nanoGPT's get_batch draws them, except that
each window's start is a pure function of (seed, epoch, sample index): the order is the same for any number
of workers or ranks and can be replayed on resume. Validation windows are fixed and evenly spaced.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader

from bigtrain.data.base import BatchDataset, BigtrainDataModule, sample_generator, split_index
from bigtrain.data.corpus import builtin_corpus
from bigtrain.data.download import download_file
from bigtrain.data.tokens import (
    DTYPES,
    TokenFile,
    Tokenizer,
    dtype_for,
    make_tokenizer,
    read_meta,
    read_text,
    tokenizer_for,
    too_big,
)
from bigtrain.errors import UserError, unknown

SOURCES = ("builtin", "text", "shakespeare", "tokens")
SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
SHAKESPEARE_DIR = "~/.cache/bigtrain/shakespeare"

Tokens = np.ndarray | TokenFile
"""A split's tokens: an in-memory array, or a lazily memory-mapped slice of a token file."""


def read_windows(tokens: Tokens, starts: np.ndarray, size: int, vocab_limit: int | None = None) -> np.ndarray:
    """Tokens [start, start + size) for each start, as one (len(starts), size) array, in one gather; ids >=
    vocab_limit (token files only) are a UserError."""
    offsets = starts[:, None] + np.arange(size)  # (B, size)
    if not isinstance(tokens, TokenFile):
        return tokens[offsets]
    windows = tokens.gather(offsets)
    if vocab_limit is not None and windows.max() >= vocab_limit:
        row, col = np.unravel_index(int(np.argmax(windows >= vocab_limit)), windows.shape)
        pos = tokens.start + int(starts[row]) + int(col)
        raise too_big(tokens.path, pos, int(windows[row, col]), vocab_limit)
    return windows


def _pairs(windows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.from_numpy(windows.astype(np.int64))  # (B, T + 1)
    return ids[:, :-1], ids[:, 1:]  # (B, T), (B, T): the target is the input shifted by one


class TrainWindows(BatchDataset):
    """`num_samples` random windows per epoch; each start depends only on (seed, epoch, index)."""

    def __init__(
        self, tokens: Tokens, block_size: int, num_samples: int, seed: int, vocab_limit: int | None = None
    ) -> None:
        self.tokens = tokens
        self.block_size = block_size
        self.num_samples = num_samples
        self.seed = seed
        self.vocab_limit = vocab_limit

    def __len__(self) -> int:
        return self.num_samples

    def start(self, i: int, generator: torch.Generator | None = None) -> int:
        """Window start for sampler value i (= epoch * len + index), uniform over every valid start."""
        epoch, index = split_index(i, len(self))
        starts = len(self.tokens) - self.block_size
        return int(
            torch.randint(starts, (1,), generator=sample_generator(self.seed, epoch, index, generator))
        )

    def get_batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y), each (B, T): the windows of these sampler values."""
        generator = torch.Generator()
        starts = np.array([self.start(i, generator) for i in indices], dtype=np.int64)
        return _pairs(read_windows(self.tokens, starts, self.block_size + 1, self.vocab_limit))


class ValWindows(BatchDataset):
    """Fixed windows: back to back (sharing a boundary token) by default, else `num_samples` evenly spaced."""

    def __init__(
        self, tokens: Tokens, block_size: int, num_samples: int | None = None, vocab_limit: int | None = None
    ) -> None:
        self.tokens = tokens
        self.block_size = block_size
        self.last = len(tokens) - block_size - 1  # the largest valid start
        self.num_samples = num_samples or (len(tokens) - 1) // block_size
        self.tiled = num_samples is None
        self.vocab_limit = vocab_limit

    def __len__(self) -> int:
        return self.num_samples

    def starts(self, indices: list[int]) -> np.ndarray:
        """Window starts for sampler values; the epoch part is ignored."""
        index = np.asarray(indices, dtype=np.int64) % len(self)
        if self.tiled:
            return index * self.block_size
        return index * self.last // max(1, len(self) - 1)

    def start(self, i: int) -> int:
        """Window start for sampler value i; the epoch part is ignored."""
        return int(self.starts([i])[0])

    def get_batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y), each (B, T): the windows of these sampler values."""
        return _pairs(read_windows(self.tokens, self.starts(indices), self.block_size + 1, self.vocab_limit))


class TextDataModule(BigtrainDataModule):
    """Character- or byte-level language-model data: batches (x, y) of shape (B, T), y = x shifted by one.

    After `setup()`: `vocab_size`, `block_size`, `encode(str) -> list[int]`, `decode(list[int]) -> str`.
    Text is split by position, the first 1 - val_fraction for training and the rest for validation (nanoGPT);
    the test loader reuses the validation windows.

    Args:
        source: builtin (a generated corpus of stories, no download), text (your UTF-8 files), shakespeare
            (Tiny Shakespeare) or tokens (binary token files, memory-mapped, for corpora larger than memory).
        path: text: a UTF-8 file, or a folder whose .txt/.md files are read in sorted order and joined with
            newlines. shakespeare: the folder where input.txt is or will be downloaded (default
            ~/.cache/bigtrain/shakespeare). tokens: a .bin token file, or a folder with train.bin and val.bin.
        download: shakespeare only: fetch input.txt (1,115,394 bytes, checksummed) if it is not there yet.
        tokenizer: char (one id per distinct character of the whole text) or byte (UTF-8 bytes, vocabulary
            256). Not used for token files, whose meta.json says how to decode them.
        token_dtype: tokens only: the id type of the files, unless a meta.json beside them gives one.
        vocab_size: tokens only: the vocabulary size; needed when no meta.json lies beside the files, and may
            exceed its value (a padded embedding).
        block_size: Context length T; each window holds block_size + 1 tokens.
        val_fraction: Fraction of the tokens, at the end, held out for validation (not used with a folder
            holding train.bin and val.bin).
        train_samples: Training windows per epoch; None: enough to cover the training split about once,
            rounded to whole global batches.
        val_samples: Validation windows, evenly spaced; None: back-to-back windows over the whole split.
        batch_size: Global batch size, split across data-parallel ranks.
        micro_batch_size: Per-device micro-batch; gradients accumulate over micro-batches up to the per-device
            share of the global batch (null: no accumulation).
        num_workers: DataLoader worker processes per rank.
        seed: Seed of the window order; the data seen is a pure function of (seed, epoch, position).
    """

    def __init__(
        self,
        *,
        source: Literal["builtin", "text", "shakespeare", "tokens"] = "builtin",
        path: str | None = None,
        download: bool = False,
        tokenizer: Literal["char", "byte"] = "char",
        token_dtype: Literal["uint16", "uint32"] = "uint16",
        vocab_size: int | None = None,
        block_size: int = 64,
        val_fraction: float = 0.1,
        train_samples: int | None = None,
        val_samples: int | None = None,
        batch_size: int = 64,
        micro_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(
            batch_size=batch_size, micro_batch_size=micro_batch_size, num_workers=num_workers, seed=seed
        )
        self.save_hyperparameters()
        self.source = source
        self.path = path
        self.download = download
        self.tokenizer_name = tokenizer
        self.token_dtype = token_dtype
        self.requested_vocab_size = vocab_size
        self.block_size = block_size
        self.val_fraction = val_fraction
        self.train_samples = train_samples
        self.val_samples = val_samples
        self._check_values()
        self.vocab_size: int | None = None
        self.tokenizer: Tokenizer | None = None
        self._train: TrainWindows | None = None
        self._val: ValWindows | None = None

    def _check_values(self) -> None:
        if self.source not in SOURCES:
            raise unknown("data.source", str(self.source), SOURCES)
        if self.tokenizer_name not in ("char", "byte"):
            raise unknown("data.tokenizer", str(self.tokenizer_name), ("char", "byte"))
        if self.token_dtype not in DTYPES:
            raise unknown("data.token_dtype", str(self.token_dtype), DTYPES)
        if self.block_size < 1:
            raise UserError(f"data.block_size must be >= 1, got {self.block_size}")
        if not 0 < self.val_fraction < 1:
            raise UserError(f"data.val_fraction must be between 0 and 1 (exclusive), got {self.val_fraction}")
        if self.train_samples is not None and self.train_samples < self.batch_size:
            raise UserError(
                f"data.train_samples {self.train_samples} is less than one batch; "
                f"use at least data.batch_size = {self.batch_size}, or null"
            )
        if self.val_samples is not None and self.val_samples < 1:
            raise UserError(f"data.val_samples must be >= 1 or null, got {self.val_samples}")
        if self.requested_vocab_size is not None and self.source != "tokens":
            raise UserError("data.vocab_size applies only to source 'tokens'; text sources derive it")
        if self.requested_vocab_size is not None and self.requested_vocab_size < 1:
            raise UserError(f"data.vocab_size must be >= 1, got {self.requested_vocab_size}")
        if self.path is None and self.source in ("text", "tokens"):
            raise UserError(f"data.path is required with source '{self.source}'")
        if self.path is not None and self.source == "builtin":
            raise UserError("data.path is not used with source 'builtin'; remove it or pick source 'text'")
        if self.download and self.source != "shakespeare":
            raise UserError(f"data.download applies only to source 'shakespeare', not '{self.source}'")

    def _shakespeare_file(self) -> Path:
        where = Path(self.path or SHAKESPEARE_DIR).expanduser()
        return where if where.is_file() or where.suffix == ".txt" else where / "input.txt"

    def prepare_data(self) -> None:
        """Download Tiny Shakespeare when asked (one process per node)."""
        if self.source == "shakespeare" and self.download:
            download_file(SHAKESPEARE_URL, self._shakespeare_file(), SHAKESPEARE_SHA256)

    def setup(self, stage: str | None = None) -> None:
        """Read and tokenise the text (or map the token files), split it, and build the window datasets."""
        if self._train is not None:
            return
        vocab_limit = None
        if self.source == "tokens":
            train, val = self._token_splits()
            vocab_limit = self.vocab_size
        else:
            train, val = self._text_splits()
        self._check_split("train", train)
        self._check_split("val", val)
        if isinstance(train, TokenFile) and isinstance(val, TokenFile):
            train.check_below(self.vocab_size)
            val.check_below(self.vocab_size)
        samples = self.train_samples or self._covering_samples(len(train))
        self._train = TrainWindows(train, self.block_size, samples, self.seed, vocab_limit)
        self._val = ValWindows(val, self.block_size, self.val_samples, vocab_limit)

    def _text_splits(self) -> tuple[np.ndarray, np.ndarray]:
        if self.source == "builtin":
            text = builtin_corpus()
        elif self.source == "shakespeare":
            file = self._shakespeare_file()
            if not file.is_file():
                raise UserError(
                    f"Tiny Shakespeare not found at {file}; set data.download=true to fetch it "
                    "or data.path to the folder holding input.txt"
                )
            text = read_text(file)
        else:
            text = read_text(self.path)
        tok = make_tokenizer(self.tokenizer_name, text if self.tokenizer_name == "char" else "")
        ids = tok.encode_array(text, dtype_for(tok.vocab_size))
        self.tokenizer, self.vocab_size = tok, tok.vocab_size
        n_train = int(len(ids) * (1 - self.val_fraction))
        return ids[:n_train], ids[n_train:]

    def _token_splits(self) -> tuple[TokenFile, TokenFile]:
        where = Path(self.path).expanduser()
        if where.is_dir():
            files = [where / "train.bin", where / "val.bin"]
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise UserError(
                    f"data.path {where} has no {' or '.join(missing)}; expected train.bin and val.bin"
                )
            meta = read_meta(where)
        elif where.is_file():
            meta = read_meta(where.parent)
        else:
            raise UserError(f"data.path {where} does not exist; give a .bin token file or a folder of them")
        self.vocab_size = self._token_vocab(meta, where)
        self.tokenizer = tokenizer_for(meta, self.vocab_size)
        dtype = meta["dtype"] if meta else self.token_dtype
        if where.is_dir():
            return TokenFile(files[0], dtype), TokenFile(files[1], dtype)
        whole = TokenFile(where, dtype)
        n_train = int(len(whole) * (1 - self.val_fraction))
        return whole.slice(0, n_train), whole.slice(n_train, len(whole))

    def _token_vocab(self, meta: dict | None, where: Path) -> int:
        asked = self.requested_vocab_size
        if meta is None:
            if asked is None:
                raise UserError(
                    f"data.vocab_size is required for {where}: no meta.json beside it says the vocabulary"
                )
            return asked
        if asked is not None and asked < meta["vocab_size"]:
            raise UserError(
                f"data.vocab_size {asked} is below the {meta['vocab_size']} in meta.json; "
                f"remove it or set at least {meta['vocab_size']}"
            )
        return asked or meta["vocab_size"]

    def data_sizes(self) -> dict[str, Any]:
        """vocab_size and block_size (set as attributes too); token files are not read when data.vocab_size
        is given (they can be terabytes)."""
        if self.source == "tokens" and self.requested_vocab_size:
            self.vocab_size = self.requested_vocab_size
        else:
            self.setup("fit")
        return {"vocab_size": self.vocab_size, "block_size": self.block_size}

    def sample_shape(self) -> tuple[int, ...]:
        """(T,): one window of token ids."""
        return (self.block_size,)

    def _check_split(self, name: str, tokens: Tokens) -> None:
        if len(tokens) < self.block_size + 1:
            where = f"{tokens.path} " if isinstance(tokens, TokenFile) else ""
            raise UserError(
                f"the {name} split {where}has {len(tokens)} tokens, fewer than data.block_size + 1 = "
                f"{self.block_size + 1}; use data.block_size <= {max(len(tokens) - 1, 1)}, more text, "
                "or another data.val_fraction"
            )

    def _covering_samples(self, n_tokens: int) -> int:
        """Whole global batches of windows that together hold about n_tokens targets."""
        return max(1, round(n_tokens / (self.block_size * self.batch_size))) * self.batch_size

    def _datasets(self) -> tuple[TrainWindows, ValWindows]:
        if self._train is None or self._val is None:
            raise RuntimeError("TextDataModule.setup() must run before its loaders, encode or decode")
        return self._train, self._val

    def train_dataloader(self) -> DataLoader:
        """Random training windows, seeded per (epoch, index), split across ranks."""
        return self.loader(self._datasets()[0], train=True)

    def val_dataloader(self) -> DataLoader:
        """The fixed validation windows."""
        return self.loader(self._datasets()[1], train=False)

    def test_dataloader(self) -> DataLoader:
        """The validation windows again: text has no separate test split."""
        return self.loader(self._datasets()[1], train=False)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (char tokenizer: a character outside the vocabulary is a UserError)."""
        self._datasets()
        return self.tokenizer.encode(text)

    def decode(self, ids: list[int]) -> str:
        """The text of token ids."""
        self._datasets()
        return self.tokenizer.decode(ids)
