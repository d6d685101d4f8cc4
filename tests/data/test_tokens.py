"""Tokenisers, UTF-8 reading with byte offsets, and token files written by write_tokens."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bigtrain.data import tokens as tokens_mod
from bigtrain.data.tokens import (
    ByteTokenizer,
    CharTokenizer,
    IdTokenizer,
    TokenFile,
    read_meta,
    read_text,
    stream_text,
    tokenizer_for,
    write_tokens,
)
from bigtrain.errors import UserError

MIXED = "Grüße, ☃ and 𝄞!\nsecond line — ok"


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and message
    return message


def test_char_tokenizer_round_trip_and_sorted_vocab():
    tok = CharTokenizer(MIXED)
    assert tok.chars == "".join(sorted(set(MIXED)))
    assert tok.vocab_size == len(set(MIXED))
    ids = tok.encode(MIXED)
    assert ids[:2] == [tok.chars.index("G"), tok.chars.index("r")]
    assert tok.decode(ids) == MIXED
    assert np.array_equal(tok.encode_array(MIXED, "uint16"), np.array(ids, dtype=np.uint16))


def test_char_tokenizer_unknown_character_is_a_user_error():
    tok = CharTokenizer("abc")
    with pytest.raises(UserError, match=r"'z' at position 2 is not in the vocabulary \(3 characters"):
        tok.encode("abzc")
    with pytest.raises(UserError, match="out of range"):
        tok.decode([0, 7])


def test_byte_tokenizer_round_trip_and_replacement():
    tok = ByteTokenizer()
    ids = tok.encode(MIXED)
    assert ids == list(MIXED.encode("utf-8")) and max(ids) < 256 == tok.vocab_size
    assert tok.decode(ids) == MIXED
    cut = tok.encode("☃")[:2]  # a sample that ends mid-character
    assert tok.decode(cut) == "\ufffd"
    with pytest.raises(UserError, match=r"0\.\.255"):
        tok.decode([300])


def test_id_tokenizer_round_trip():
    tok = IdTokenizer(1000)
    assert tok.decode([5, 999, 0]) == "5 999 0"
    assert tok.encode("5 999 0") == [5, 999, 0]
    with pytest.raises(UserError, match=r"0\.\.999"):
        tok.encode("1000")
    with pytest.raises(UserError, match="space-separated"):
        tok.encode("five")


def test_tokenizer_for_meta():
    assert isinstance(tokenizer_for({"tokenizer": "char", "chars": "ab"}, 2), CharTokenizer)
    assert isinstance(tokenizer_for(None, 256), ByteTokenizer)
    assert isinstance(tokenizer_for({"vocab_size": 50257}, 50257), IdTokenizer)


def test_read_text_folder_sorted_joined_with_newlines(tmp_path):
    (tmp_path / "b.txt").write_text("second", encoding="utf-8")
    (tmp_path / "a.md").write_text("first", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text("third", encoding="utf-8")
    (tmp_path / "skip.csv").write_text("not text", encoding="utf-8")
    assert read_text(tmp_path) == "first\nsecond\nthird"
    assert read_text(tmp_path / "b.txt") == "second"


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1 << 20])
def test_stream_text_matches_read_text_at_any_chunk_size(tmp_path, chunk):
    (tmp_path / "a.txt").write_text(MIXED * 3, encoding="utf-8")
    (tmp_path / "b.txt").write_text("☃𝄞" * 5, encoding="utf-8")
    assert "".join(stream_text(tmp_path, chunk)) == read_text(tmp_path)


@pytest.mark.parametrize("chunk", [3, 4, 1 << 20])
def test_non_utf8_names_file_and_byte_offset(tmp_path, chunk):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("é".encode() * 10 + b"\xff tail")  # the bad byte sits at offset 20
    with pytest.raises(UserError, match=r"latin1\.txt is not UTF-8 text: byte 0xff at byte offset 20") as err:
        read_text(bad)
    one_line(err)
    with pytest.raises(UserError, match="at byte offset 20"):
        list(stream_text(bad, chunk))


def test_truncated_utf8_at_end_of_file(tmp_path):
    bad = tmp_path / "cut.txt"
    bad.write_bytes(b"ab" + "☃".encode()[:2])
    with pytest.raises(UserError, match="at byte offset 2"):
        list(stream_text(bad, 3))


def test_text_path_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist") as err:
        read_text(tmp_path / "nope.txt")
    one_line(err)
    with pytest.raises(UserError, match=r"holds no \.txt/\.md files"):
        read_text(tmp_path)
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(UserError, match="holds no text"):
        read_text(tmp_path)


@pytest.mark.parametrize("kind", ["char", "byte"])
def test_write_tokens_round_trip(tmp_path, kind):
    text = (MIXED + "\n") * 200
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text(text, encoding="utf-8")
    (tmp_path / "in" / "b.txt").write_text("tail ☃", encoding="utf-8")
    meta = write_tokens(tmp_path / "in", tmp_path / "out", kind, chunk_bytes=5)
    full = text + "\n" + "tail ☃"
    tok = CharTokenizer(full) if kind == "char" else ByteTokenizer()
    expected = np.array(tok.encode(full), dtype=np.uint16)
    n_train = int(len(expected) * 0.9)
    train = np.fromfile(tmp_path / "out" / "train.bin", dtype=np.uint16)
    val = np.fromfile(tmp_path / "out" / "val.bin", dtype=np.uint16)
    assert np.array_equal(train, expected[:n_train]) and np.array_equal(val, expected[n_train:])
    on_disk = json.loads((tmp_path / "out" / "meta.json").read_text(encoding="utf-8"))
    assert on_disk == meta
    assert meta["vocab_size"] == tok.vocab_size and meta["dtype"] == "uint16" and meta["tokenizer"] == kind
    assert (meta["train_tokens"], meta["val_tokens"]) == (n_train, len(expected) - n_train)
    assert meta.get("chars") == (tok.chars if kind == "char" else None)
    assert tokenizer_for(meta, meta["vocab_size"]).decode(np.concatenate([train, val]).tolist()) == full
    assert not list((tmp_path / "out").glob("*.part"))


def test_write_tokens_errors(tmp_path):
    (tmp_path / "e.txt").write_bytes(b"")
    with pytest.raises(UserError, match="holds no text"):
        write_tokens(tmp_path / "e.txt", tmp_path / "out")
    with pytest.raises(UserError, match="val_fraction"):
        write_tokens(tmp_path / "e.txt", tmp_path / "out", val_fraction=1.0)
    with pytest.raises(UserError, match="unknown tokenizer 'bpe'"):
        write_tokens(tmp_path / "e.txt", tmp_path / "out", "bpe")  # type: ignore[arg-type]


def test_token_file_windows_are_lazy_and_never_carry_the_map(tmp_path):
    ids = np.arange(1000, dtype=np.uint32)
    ids.tofile(tmp_path / "t.bin")
    tf = TokenFile(tmp_path / "t.bin", "uint32")
    assert len(tf) == 1000 and tf._mm is None
    part = tf.slice(100, 300)
    assert len(part) == 200
    assert np.array_equal(part.window(10, 5), ids[110:115])
    assert part._mm is not None
    assert part.__getstate__()["_mm"] is None  # what a worker receives: a path, not an array


def test_token_file_size_must_be_a_multiple_of_the_dtype(tmp_path):
    (tmp_path / "odd.bin").write_bytes(b"\x00" * 7)
    with pytest.raises(UserError, match=r"odd\.bin has 7 bytes, not a multiple of 2 \(uint16\)") as err:
        TokenFile(tmp_path / "odd.bin", "uint16")
    one_line(err)


def test_check_below_finds_the_first_bad_id(tmp_path, monkeypatch):
    ids = np.zeros(5000, dtype=np.uint16)
    ids[3001] = 70
    ids[4000] = 99
    ids.tofile(tmp_path / "t.bin")
    monkeypatch.setattr(tokens_mod, "CHUNK_BYTES", 1024)  # several chunks
    tf = TokenFile(tmp_path / "t.bin", "uint16")
    tf.check_below(100)
    with pytest.raises(UserError, match="token 70 at position 3001 is >= vocab_size 65"):
        tf.check_below(65)
    with pytest.raises(UserError, match="token 70 at position 3001"):
        tf.slice(2000, 5000).check_below(65)


def test_read_meta_errors(tmp_path):
    assert read_meta(tmp_path) is None
    (tmp_path / "meta.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(UserError, match="not valid JSON"):
        read_meta(tmp_path)
    (tmp_path / "meta.json").write_text('{"dtype": "uint16"}', encoding="utf-8")
    with pytest.raises(UserError, match="vocab_size"):
        read_meta(tmp_path)
    (tmp_path / "meta.json").write_text('{"vocab_size": 10, "dtype": "int8"}', encoding="utf-8")
    with pytest.raises(UserError, match="dtype 'int8'"):
        read_meta(tmp_path)
    (tmp_path / "meta.json").write_text('{"vocab_size": 70000}', encoding="utf-8")
    assert read_meta(tmp_path)["dtype"] == "uint32"
