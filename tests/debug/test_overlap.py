"""The data check's train/val overlap: validation samples that are training samples are counted and fail it;
the packaged image data has none, and a token stream split by position is not checkable."""

from __future__ import annotations

import json
from pathlib import Path

from bigtrain.commands.debug import main
from bigtrain.data import TextDataModule
from bigtrain.debug.overlap import train_val_overlap

SMALL = ["--data.num_samples", "64", "--data.val_fraction", "0.25", "--checks", "data"]


def data_row(tmp_path: Path, monkeypatch, capsys, *args: str) -> tuple[int, str, dict]:
    monkeypatch.chdir(tmp_path)
    code = main(["cnn/glyphs", *SMALL, *args])
    out = capsys.readouterr().out
    (found,) = tmp_path.glob("runs/*/*/debug.json")
    (row,) = json.loads(found.read_text())["checks"]
    return code, out, row


def test_a_validation_split_that_repeats_training_images_is_flagged(tmp_path, monkeypatch, capsys):
    code, out, row = data_row(tmp_path, monkeypatch, capsys, "--data", "tests.debug.broken.ValRepeatsTrain")
    assert code == 1, out
    assert row["status"] == "FAIL"
    assert row["details"]["overlap"] == {"checked": 16, "repeats": 4, "examples": [0, 1, 2, 3]}
    assert (
        "train/val overlap: 4 of 16 validation samples are training samples (e.g. val index 0, 1, 2, 3)"
        in out
    )


def test_the_packaged_glyphs_have_no_overlap(tmp_path, monkeypatch, capsys):
    code, out, row = data_row(tmp_path, monkeypatch, capsys)
    assert code == 0, out
    assert row["details"]["overlap"] == {"checked": 16, "repeats": 0, "examples": []}
    assert "; no validation sample of 16 is a training sample" in row["summary"]


def test_a_token_stream_split_by_position_is_not_checkable():
    data = TextDataModule(source="builtin", batch_size=8, block_size=64, num_workers=0, seed=0)
    data.setup("fit")
    assert train_val_overlap(data) == {
        "checkable": False,
        "why": "its splits are not sample tensors in memory",
    }
