"""`bigtrain debug --tiny` passes on a recipe of each family; cluster-sized ones shrink to this machine."""

from __future__ import annotations

import json

import pytest

from bigtrain.commands.debug import main

IMAGES = ["--data.num_samples", "64", "--data.val_fraction", "0.25"]
RECIPES = [
    ("cnn/resnet152-fsdp", IMAGES),
    ("transformer/gpt-1b-fsdp", []),
    ("rnn/builtin-char", []),
    ("autoencoder/glyphs", IMAGES),
    ("gan/glyphs", IMAGES),
]


@pytest.mark.parametrize(("recipe", "extra"), RECIPES)
def test_debug_tiny_passes_on_each_family(tmp_path, monkeypatch, capsys, recipe, extra):
    monkeypatch.chdir(tmp_path)
    code = main([recipe, "--tiny", *extra])
    out = capsys.readouterr().out
    assert code == 0, out
    (path,) = tmp_path.glob("runs/*/*/debug.json")
    report = json.loads(path.read_text())
    assert report["debug"] and report["passed"]
    statuses = {c["check"]: c["status"] for c in report["checks"]}
    assert list(statuses) == ["data", "shapes", "grads", "learns", "nan", "speed"]
    expected = "skip" if recipe.startswith("gan/") else "pass"
    assert statuses.pop("learns") == expected and set(statuses.values()) == {"pass"}, out
    if recipe.endswith("-fsdp"):
        assert "trainer.strategy: 'fsdp' -> 'single'" in out and "-> 'tiny' (the family's smallest)" in out
        assert "trainer.num_nodes" in out and "data.source" in out
        assert "trainer.precision: 'bf16-mixed' -> '32-true'" in out
    assert "all checks passed" in out
