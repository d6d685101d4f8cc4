"""TextDataModule refusals: bad values in __init__, bad data in setup, encode before setup, help."""

from __future__ import annotations

from pathlib import Path

import pytest

from bigtrain.data.text import TextDataModule
from bigtrain.data.tokens import write_tokens
from bigtrain.errors import UserError
from tests.data.test_text import small_text


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"source": "wiki"}, "unknown data.source 'wiki'"),
        ({"tokenizer": "bpe"}, "unknown data.tokenizer 'bpe'"),
        ({"token_dtype": "int8"}, "unknown data.token_dtype"),
        ({"block_size": 0}, "block_size must be >= 1"),
        ({"val_fraction": 0.0}, "val_fraction must be between 0 and 1"),
        ({"val_fraction": 1.0}, "val_fraction must be between 0 and 1"),
        ({"vocab_size": 100}, "vocab_size applies only to source 'tokens'"),
        ({"source": "tokens", "path": "x.bin", "vocab_size": 0}, "vocab_size must be >= 1"),
        ({"source": "text"}, "data.path is required"),
        ({"path": "a.txt"}, "not used with source 'builtin'"),
        ({"download": True}, "download applies only to source 'shakespeare'"),
        ({"train_samples": 10, "batch_size": 16}, "less than one batch"),
        ({"val_samples": 0}, "val_samples must be >= 1"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
    ],
)
def test_bad_values_fail_in_init(kwargs, match):
    with pytest.raises(UserError, match=match) as err:
        TextDataModule(**kwargs)
    assert "\n" not in str(err.value)


def _setup_error(tmp_path: Path, case: str) -> TextDataModule:
    if case == "missing":
        return TextDataModule(source="text", path=str(tmp_path / "nope.txt"))
    if case == "empty":
        (tmp_path / "e.txt").write_bytes(b"")
        return TextDataModule(source="text", path=str(tmp_path / "e.txt"))
    if case == "latin1":
        (tmp_path / "l.txt").write_bytes(b"caf" + "é".encode("latin-1") + b" au lait")
        return TextDataModule(source="text", path=str(tmp_path / "l.txt"))
    if case == "short":
        return TextDataModule(source="text", path=str(small_text(tmp_path, "x" * 200)), block_size=64)
    if case == "odd":
        (tmp_path / "odd.bin").write_bytes(b"\x01" * 1001)
        return TextDataModule(source="tokens", path=str(tmp_path / "odd.bin"), vocab_size=10)
    if case == "raw":
        (tmp_path / "r.bin").write_bytes(b"\x01\x00" * 1000)
        return TextDataModule(source="tokens", path=str(tmp_path / "r.bin"))
    if case == "no_val":
        (tmp_path / "train.bin").write_bytes(b"\x01\x00" * 1000)
        return TextDataModule(source="tokens", path=str(tmp_path), vocab_size=10)
    if case == "below_meta":
        write_tokens(small_text(tmp_path), tmp_path / "tok")
        return TextDataModule(source="tokens", path=str(tmp_path / "tok"), vocab_size=3)
    return TextDataModule(source="shakespeare", path=str(tmp_path / "none"))


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("missing", r"nope\.txt does not exist"),
        ("empty", "holds no text"),
        ("latin1", r"l\.txt is not UTF-8 text: byte 0xe9 at byte offset 3"),
        ("short", r"val split has 20 tokens, fewer than data.block_size \+ 1 = 65; use .*block_size <= 19"),
        ("odd", r"odd\.bin has 1001 bytes, not a multiple of 2"),
        ("raw", r"data.vocab_size is required for .*r\.bin"),
        ("no_val", "has no val.bin"),
        ("below_meta", "vocab_size 3 is below the"),
        ("shakespeare", "Tiny Shakespeare not found.*data.download=true"),
    ],
)
def test_bad_data_fails_in_setup(tmp_path, case, match):
    dm = _setup_error(tmp_path, case)
    with pytest.raises(UserError, match=match) as err:
        dm.setup()
    assert "\n" not in str(err.value)


def test_encode_before_setup_is_a_bug():
    with pytest.raises(RuntimeError, match="setup"):
        TextDataModule().encode("a")


def test_help_documents_every_argument():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(TextDataModule, "data")
    text = parser.format_help()
    for phrase in ("Context length T", "train.bin and val.bin", "Tiny Shakespeare", "larger than memory"):
        assert phrase in " ".join(text.split())
    assert parser.parse_args(["--data.source", "tokens", "--data.vocab_size", "7"]).data.vocab_size == 7


# Inside Lightning
