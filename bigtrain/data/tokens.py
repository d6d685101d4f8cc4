"""Tokenisers, UTF-8 text reading with useful errors, and flat binary token files (nanoGPT's train.bin).

A token file is a raw little-endian array of uint16 or uint32 ids with no header, so `np.memmap` reads any
window of a corpus larger than memory. A sidecar `meta.json` beside it says how to read and decode it:
`{"vocab_size": N, "dtype": "uint16", "tokenizer": "char", "chars": "..."}` (`chars` for char only).
"""

from __future__ import annotations

import codecs
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from bigtrain.errors import UserError

TEXT_SUFFIXES = (".txt", ".md")
DTYPES = ("uint16", "uint32")
CHUNK_BYTES = 1 << 22
"""Bytes read at a time when streaming text or scanning token files."""
SCAN_LIMIT_BYTES = 1 << 28
"""Token files up to this size are scanned for ids >= vocab_size in setup; larger ones per window only."""


def dtype_for(vocab_size: int) -> str:
    """The smallest token dtype that holds ids below `vocab_size`."""
    return "uint16" if vocab_size <= 1 << 16 else "uint32"


class CharTokenizer:
    """One id per distinct character, in sorted order (nanoGPT's shakespeare_char)."""

    kind = "char"

    def __init__(self, chars: str) -> None:
        self.chars = "".join(sorted(set(chars)))
        self.stoi = {ch: i for i, ch in enumerate(self.chars)}
        # Sorted code points let a whole text be encoded with one searchsorted.
        self._points = np.array([ord(ch) for ch in self.chars], dtype=np.int64)

    @property
    def vocab_size(self) -> int:
        """Number of distinct characters."""
        return len(self.chars)

    def encode_array(self, text: str, dtype: str = "uint32") -> np.ndarray:
        """Ids of `text` as a numpy array; a character outside the vocabulary is a UserError."""
        if not self.chars:
            raise UserError("the character vocabulary is empty: the training text had no characters")
        points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        ids = np.searchsorted(self._points, points)
        bad = (ids >= len(self._points)) | (self._points[np.minimum(ids, len(self._points) - 1)] != points)
        if bad.any():
            pos = int(np.argmax(bad))
            raise UserError(
                f"character {text[pos]!r} at position {pos} is not in the vocabulary "
                f"({self.vocab_size} characters seen in the training text)"
            )
        return ids.astype(dtype)

    def encode(self, text: str) -> list[int]:
        """Ids of `text`; a character outside the vocabulary is a UserError."""
        return self.encode_array(text).tolist()

    def decode(self, ids: Sequence[int]) -> str:
        """The text of `ids`."""
        try:
            return "".join(self.chars[i] for i in ids)
        except IndexError:
            raise UserError(f"token id out of range for {self.vocab_size} characters: {list(ids)}") from None


class ByteTokenizer:
    """UTF-8 bytes: vocabulary 256, any text encodes."""

    kind = "byte"
    vocab_size = 256

    def encode_array(self, text: str, dtype: str = "uint16") -> np.ndarray:
        """UTF-8 bytes of `text` as a numpy array."""
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(dtype)

    def encode(self, text: str) -> list[int]:
        """UTF-8 bytes of `text`."""
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        """The text of `ids`; invalid UTF-8 (a sample cut mid-character) becomes U+FFFD."""
        try:
            return bytes(ids).decode("utf-8", errors="replace")
        except ValueError:
            raise UserError(f"byte token ids must be in 0..255, got {list(ids)}") from None


class IdTokenizer:
    """Token files with no known tokenizer: text is the ids written out, separated by spaces."""

    kind = "ids"

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size

    def encode(self, text: str) -> list[int]:
        """Whitespace-separated integers below vocab_size."""
        try:
            ids = [int(word) for word in text.split()]
        except ValueError:
            raise UserError(f"expected space-separated token ids, got {text[:40]!r}") from None
        if any(not 0 <= i < self.vocab_size for i in ids):
            raise UserError(f"token ids must be in 0..{self.vocab_size - 1}, got {ids}")
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """The ids, separated by spaces."""
        return " ".join(str(int(i)) for i in ids)


Tokenizer = CharTokenizer | ByteTokenizer | IdTokenizer


def text_files(path: str | Path) -> list[Path]:
    """The file itself, or every .txt/.md file under a folder in sorted path order (UserError if none)."""
    path = Path(path).expanduser()
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise UserError(
            f"data.path {path} does not exist; give a UTF-8 text file or a folder of .txt/.md files"
        )
    files = sorted(
        p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES and not p.name.startswith(".")
    )
    if not files:
        raise UserError(f"data.path {path} holds no {'/'.join(TEXT_SUFFIXES)} files")
    return files


def _not_utf8(file: Path, offset: int, err: UnicodeDecodeError) -> UserError:
    bad = err.object[err.start : err.start + 1].hex()
    return UserError(
        f"{file} is not UTF-8 text: byte 0x{bad} at byte offset {offset} ({err.reason}); "
        "convert it to UTF-8 (e.g. iconv -t UTF-8)"
    )


def read_text(path: str | Path) -> str:
    """The whole text of a file, or of a folder's files joined with newlines; UTF-8 checked, not empty."""
    parts = []
    for file in text_files(path):
        data = file.read_bytes()
        try:
            parts.append(data.decode("utf-8"))
        except UnicodeDecodeError as err:
            raise _not_utf8(file, err.start, err) from None
    text = "\n".join(parts)
    if not text:
        raise UserError(f"data.path {path} holds no text (empty files)")
    return text


def _file_chunks(file: Path, chunk_bytes: int) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with open(file, "rb") as f:
        while True:
            block = f.read(chunk_bytes)
            pending = len(decoder.getstate()[0])  # bytes of a character split across blocks
            try:
                text = decoder.decode(block, final=not block)
            except UnicodeDecodeError as err:
                raise _not_utf8(file, offset - pending + err.start, err) from None
            offset += len(block)
            if text:
                yield text
            if not block:
                return


def stream_text(path: str | Path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[str]:
    """The same text as `read_text`, in pieces of about chunk_bytes, never all in memory."""
    for k, file in enumerate(text_files(path)):
        if k:
            yield "\n"
        yield from _file_chunks(file, chunk_bytes)


def make_tokenizer(kind: Literal["char", "byte"], chars: str = "") -> CharTokenizer | ByteTokenizer:
    """A char tokenizer over `chars`, or the byte tokenizer."""
    if kind == "char":
        return CharTokenizer(chars)
    if kind == "byte":
        return ByteTokenizer()
    raise UserError(f"unknown tokenizer '{kind}' (valid: byte, char)")


def _scan(path: Path, kind: str, chunk_bytes: int) -> tuple[str, int]:
    """(distinct characters, token count) of the text at `path`, in one streaming pass."""
    chars: set[str] = set()
    count = 0
    for piece in stream_text(path, chunk_bytes):
        if kind == "char":
            chars.update(piece)
            count += len(piece)
        else:
            count += len(piece.encode("utf-8"))
    return "".join(sorted(chars)), count


def write_tokens(
    text_path: str | Path,
    out_dir: str | Path,
    tokenizer: Literal["char", "byte"] = "char",
    *,
    val_fraction: float = 0.1,
    chunk_bytes: int = CHUNK_BYTES,
) -> dict:
    """Tokenise a text file or folder into out_dir/train.bin, val.bin and meta.json; returns the meta.

    Two streaming passes (vocabulary and length, then ids), so the text never has to fit in memory. The
    first 1 - val_fraction of the tokens go to train.bin, the rest to val.bin, as `TextDataModule` splits.
    """
    if not 0 < val_fraction < 1:
        raise UserError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    make_tokenizer(tokenizer)  # reject an unknown kind before reading anything
    chars, total = _scan(Path(text_path).expanduser(), tokenizer, chunk_bytes)
    if total == 0:
        raise UserError(f"{text_path} holds no text (empty files)")
    tok = make_tokenizer(tokenizer, chars)
    dtype = dtype_for(tok.vocab_size)
    n_train = int(total * (1 - val_fraction))
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    with open(out / "train.bin.part", "wb") as train, open(out / "val.bin.part", "wb") as val:
        for piece in stream_text(text_path, chunk_bytes):
            ids = tok.encode_array(piece, dtype)
            cut = max(0, min(len(ids), n_train - written))
            ids[:cut].tofile(train)
            ids[cut:].tofile(val)
            written += len(ids)
    meta = {"vocab_size": tok.vocab_size, "dtype": dtype, "tokenizer": tok.kind}
    if isinstance(tok, CharTokenizer):
        meta["chars"] = tok.chars
    meta |= {"train_tokens": n_train, "val_tokens": total - n_train}
    os.replace(out / "train.bin.part", out / "train.bin")
    os.replace(out / "val.bin.part", out / "val.bin")
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return meta


def read_meta(folder: Path) -> dict | None:
    """The meta.json in `folder`, checked, or None when there is none."""
    file = folder / "meta.json"
    if not file.is_file():
        return None
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{file} is not valid JSON ({err})") from None
    vocab = meta.get("vocab_size") if isinstance(meta, dict) else None
    if not isinstance(vocab, int) or vocab < 1:
        raise UserError(f"{file} must hold a positive integer 'vocab_size', e.g. {{\"vocab_size\": 50257}}")
    if meta.setdefault("dtype", dtype_for(vocab)) not in DTYPES:
        raise UserError(f"{file}: dtype {meta['dtype']!r} is not one of {', '.join(DTYPES)}")
    return meta


def tokenizer_for(meta: dict | None, vocab_size: int) -> Tokenizer:
    """How to decode a token file: its meta's chars, else bytes when the ids fit one, else the ids."""
    meta = meta or {}
    if meta.get("tokenizer") == "char" and isinstance(meta.get("chars"), str):
        return CharTokenizer(meta["chars"])
    if vocab_size <= 256:
        return ByteTokenizer()
    return IdTokenizer(vocab_size)


class TokenFile:
    """A window-readable slice of a token file; the memmap opens lazily in each process that reads.

    Only the path and numbers travel to DataLoader workers, never the mapped array.
    """

    def __init__(self, path: Path, dtype: str, start: int = 0, length: int | None = None) -> None:
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        size = self.path.stat().st_size
        if size % self.dtype.itemsize:
            raise UserError(
                f"{self.path} has {size} bytes, not a multiple of {self.dtype.itemsize} ({dtype}); "
                "wrong data.token_dtype, or a truncated file"
            )
        total = size // self.dtype.itemsize
        self.start = start
        self.length = total - start if length is None else length
        self._mm: np.memmap | None = None

    def __len__(self) -> int:
        return self.length

    def slice(self, start: int, stop: int) -> TokenFile:
        """Tokens [start, stop) of this slice, as another lazily opened TokenFile."""
        return TokenFile(self.path, self.dtype.name, self.start + start, stop - start)

    def window(self, start: int, size: int) -> np.ndarray:
        """A copy of tokens [start, start + size)."""
        if self._mm is None:
            self._mm = np.memmap(self.path, dtype=self.dtype, mode="r")
        begin = self.start + start
        return np.array(self._mm[begin : begin + size])

    def gather(self, offsets: np.ndarray) -> np.ndarray:
        """A copy of the tokens at these offsets (any shape), read in one indexing of the memmap."""
        if self._mm is None:
            self._mm = np.memmap(self.path, dtype=self.dtype, mode="r")
        return np.asarray(self._mm[self.start + offsets])

    def check_below(self, vocab_size: int) -> None:
        """UserError naming the first id >= vocab_size; skipped for files above SCAN_LIMIT_BYTES."""
        if self.length * self.dtype.itemsize > SCAN_LIMIT_BYTES or self.length == 0:
            return
        step = CHUNK_BYTES // self.dtype.itemsize
        for begin in range(0, self.length, step):
            chunk = self.window(begin, min(step, self.length - begin))
            if chunk.max() >= vocab_size:
                pos = int(np.argmax(chunk >= vocab_size))
                raise too_big(self.path, self.start + begin + pos, int(chunk[pos]), vocab_size)
        self._mm = None  # the scan ran in the main process; workers open their own

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_mm": None}


def too_big(path: Path, pos: int, token: int, vocab_size: int) -> UserError:
    """The error for a token id outside the vocabulary."""
    return UserError(
        f"{path}: token {token} at position {pos} is >= vocab_size {vocab_size}; "
        "set data.vocab_size above the largest id or fix meta.json"
    )
