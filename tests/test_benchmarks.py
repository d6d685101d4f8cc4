"""What `make bench`'s parts promise besides timings: the nanoGPT part is skipped with one line without Tiny
Shakespeare, its validation loss covers the whole split, and per-rank memory counts local shards."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import nanogpt, parallel

ROOT = Path(__file__).resolve().parents[1]


def test_nanogpt_part_is_skipped_with_one_line_without_tiny_shakespeare(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BIGTRAIN_TEST_DATA": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.nanogpt"], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    line = "nanoGPT protocol skipped: no Tiny Shakespeare input.txt (give --shakespeare DIR or set "
    assert done.stdout.splitlines() == [line + "BIGTRAIN_TEST_DATA)"]


def test_shakespeare_folder_comes_from_the_option_else_the_test_data(tmp_path, monkeypatch):
    (tmp_path / "tinyshakespeare").mkdir()
    monkeypatch.setenv("BIGTRAIN_TEST_DATA", str(tmp_path))
    assert nanogpt.shakespeare_dir(None) is None
    (tmp_path / "tinyshakespeare" / "input.txt").write_text("To be")
    assert nanogpt.shakespeare_dir(None) == tmp_path / "tinyshakespeare"
    assert nanogpt.shakespeare_dir(str(tmp_path)) is None  # given: that folder only


def test_full_validation_loss_averages_every_token_of_every_window():
    from bigtrain.data.text import TextDataModule

    data = TextDataModule(block_size=16, batch_size=5)
    data.setup("fit")
    counts = torch.zeros(data.vocab_size)
    for _, y in data.val_dataloader():
        counts += torch.bincount(y.flatten(), minlength=data.vocab_size)
    windows = len(data.val_dataloader().dataset)
    assert counts.sum() == windows * 16 and windows > 5  # back to back windows of the whole split

    class Unigram(torch.nn.Module):  # logits = log of the target frequencies: loss is their entropy
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (counts / counts.sum()).clamp_min(1e-12).log().expand(*x.shape, -1)

    p = counts[counts > 0] / counts.sum()
    assert nanogpt.full_val_loss(Unigram(), data) == pytest.approx(float(-(p * p.log()).sum()), rel=1e-5)


def test_local_state_bytes_counts_parameters_and_optimizer_state():
    net = torch.nn.Linear(10, 10)  # 110 parameters
    opt = torch.optim.AdamW(net.parameters())
    assert parallel.local_state_bytes(net, [opt]) == 110 * 4
    net(torch.randn(2, 10)).sum().backward()
    opt.step()  # exp_avg and exp_avg_sq per parameter, and a step count per tensor
    assert parallel.local_state_bytes(net, [opt]) == 3 * 110 * 4 + 2 * 4


def test_pinned_runs_all_finish_and_a_failure_ends_the_benchmark():
    import sys

    from benchmarks.contenders import run_pinned

    ok = [sys.executable, "-c", "import os; assert len(os.sched_getaffinity(0)) == 1"]
    run_pinned({"a": ok, "b": ok}, shift=1, what="test")  # each on one core
    with pytest.raises(SystemExit, match="test, b failed"):
        run_pinned({"a": ok, "b": [sys.executable, "-c", "raise SystemExit(3)"]}, shift=0, what="test")


def test_side_by_side_ratio_is_the_median_of_the_rounds_ratios():
    from benchmarks.side_by_side import ratio

    runs = {("recipe", "raw"): [{"step_ms": 10.0}, {"step_ms": 20.0}, {"step_ms": 10.0}],
            ("recipe", "bigtrain"): [{"step_ms": 11.0}, {"step_ms": 20.0}, {"step_ms": 13.0}]}  # fmt: skip
    assert ratio(runs, "recipe") == pytest.approx(1.1)  # ratios 1.1, 1.0, 1.3


def test_startup_recipes_need_their_local_data(tmp_path):
    from benchmarks.startup import data_args, recipes

    assert data_args("cnn/glyphs", tmp_path) == []
    assert data_args("cnn/digits", tmp_path) is None
    (tmp_path / "digits").mkdir()
    (tmp_path / "digits" / "digits.csv.gz").write_bytes(b"")
    assert data_args("cnn/digits", tmp_path) == ["--data.path", str(tmp_path / "digits" / "digits.csv.gz"),
                                                 "--data.download", "false"]  # fmt: skip
    names = recipes(tmp_path)
    assert "cnn/digits" in names and "cnn/glyphs" in names
    assert not [n for n in names if "fsdp" in n or "shakespeare" in n]
