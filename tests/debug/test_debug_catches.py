"""`bigtrain debug` on broken variants of cnn/glyphs: each check names its fault, and the exit status is 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bigtrain.commands.debug import main

SMALL = ["--data.num_samples", "64", "--data.val_fraction", "0.25"]


def debug(tmp_path: Path, monkeypatch, capsys, *args: str) -> tuple[int, str, dict]:
    """Run `bigtrain debug cnn/glyphs ARGS` in tmp_path: exit status, report, debug.json."""
    monkeypatch.chdir(tmp_path)
    code = main(["cnn/glyphs", *SMALL, *args])
    out = capsys.readouterr().out
    found = list(tmp_path.glob("runs/*/*/debug.json"))
    assert len(found) == 1, out
    return code, out, json.loads(found[0].read_text())


def row(report: dict, check: str) -> dict:
    return next(c for c in report["checks"] if c["check"] == check)


def test_a_parameter_left_out_of_the_forward_is_named(tmp_path, monkeypatch, capsys):
    code, out, report = debug(
        tmp_path, monkeypatch, capsys, "--model", "tests.debug.broken.UnusedParameter", "--checks", "grads"
    )
    assert code == 1 and report["debug"] is True and not report["passed"]
    grads = row(report, "grads")
    assert grads["status"] == "FAIL"
    assert sorted(grads["details"]["no_grad"]) == ["forgotten.bias", "forgotten.weight"]
    assert "no gradient (unused in the loss, or detached): forgotten.weight" in out


def test_a_detached_branch_is_named(tmp_path, monkeypatch, capsys):
    code, out, report = debug(
        tmp_path, monkeypatch, capsys, "--model", "tests.debug.broken.DetachedBranch", "--checks", "grads"
    )
    assert code == 1
    assert set(row(report, "grads")["details"]["no_grad"]) == {
        "net.stem.inner.0.weight", "net.stem.inner.1.weight", "net.stem.inner.1.bias"
    }  # fmt: skip
    assert "net.stem.inner.0.weight" in out


def test_a_learning_rate_of_0_does_not_learn(tmp_path, monkeypatch, capsys):
    code, out, report = debug(
        tmp_path, monkeypatch, capsys, "--model", "tests.debug.broken.ZeroLR", "--checks", "learns",
        "--steps", "8",
    )  # fmt: skip
    assert code == 1
    learns = row(report, "learns")
    assert learns["status"] == "FAIL" and "did not fall below 0.3 x start" in learns["summary"]
    losses = learns["details"]["losses"]
    assert len(losses) == 8 and losses[-1] == pytest.approx(losses[0])


def test_a_forward_nan_inside_one_block_is_named(tmp_path, monkeypatch, capsys):
    code, out, report = debug(
        tmp_path, monkeypatch, capsys, "--model", "tests.debug.broken.NaNInOneBlock", "--checks", "nan,grads"
    )
    assert code == 1
    nan = row(report, "nan")
    assert nan["status"] == "FAIL"
    forward = nan["details"]["forward"]
    assert (forward["module"], forward["type"], forward["step"]) == (
        "net.stages.1.0.conv1",
        "PoisonedConv",
        0,
    )
    assert forward["inputs"][0]["nonfinite"] == 0  # its input was finite: this module made the NaN
    assert "net.stages.1.0.conv1 (PoisonedConv) output non-finite" in out
    assert "returned nan" in nan["details"]["backward"]


def test_labels_out_of_range_stop_the_run_before_a_step(tmp_path, monkeypatch, capsys):
    code, out, report = debug(tmp_path, monkeypatch, capsys, "--data", "tests.debug.broken.LabelsOutOfRange")
    assert code == 1
    data = row(report, "data")
    assert data["status"] == "FAIL"
    assert "batch[1] holds values" in data["summary"] and "outside 0..9 (data num_classes = 10)" in out
    assert {c["status"] for c in report["checks"] if c["check"] != "data"} == {"skip"}


def test_a_step_that_raises_is_reported_as_a_failed_run(tmp_path, monkeypatch, capsys):
    code, out, report = debug(
        tmp_path, monkeypatch, capsys, "--model", "tests.debug.broken.WrongHead", "--checks", "shapes"
    )
    assert code == 1
    run = row(report, "run")
    assert run["status"] == "FAIL" and run["summary"].startswith("RuntimeError: mat1 and mat2 shapes")
