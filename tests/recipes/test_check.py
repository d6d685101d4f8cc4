"""`bigtrain recipes check` on every packaged recipe and on broken ones, and `recipes diff`."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import yaml

from bigtrain.commands import recipes as command
from bigtrain.errors import UserError
from bigtrain.recipe_check import check, differences, flatten, resolved
from bigtrain.recipes import packaged_recipes

RECIPES = packaged_recipes()


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.name for r in RECIPES])
def test_check_passes_on_every_packaged_recipe(recipe):
    report = check(recipe.name, [])
    config = resolved(recipe.name, [])
    trainer = config["trainer"]
    world = int(trainer["num_nodes"]) * (trainer["devices"] if isinstance(trainer["devices"], int) else 1)
    assert report.lines()[0] == f"{recipe.name}: ok"
    assert report.params > 0
    assert report.batch.startswith(
        f"global {config['data']['init_args']['batch_size']} = {world} data-parallel"
    )
    assert report.verdict and "\n" not in report.verdict


@pytest.mark.parametrize("name", ["cnn/glyphs", "transformer/builtin-char"])
def test_meta_parameter_count_is_the_built_model_s(name):
    """The meta-device count matches the model `bigtrain fit` builds from the data it reads."""
    from bigtrain.plan.inputs import instantiate

    config = resolved(name, [])
    model, data = instantiate(config["model"]), instantiate(config["data"])
    data.setup("fit")
    model.trainer = SimpleNamespace(datamodule=data, world_size=1, global_rank=0, strategy=None)
    model.configure_model()  # on the CPU, with the sizes the data gives
    assert check(name, []).params == sum(p.numel() for p in model.parameters())


def test_check_reads_and_downloads_nothing(tmp_path):
    missing = tmp_path / "not-here"
    report = check("transformer/shakespeare-char-cpu", ["--data.path", str(missing)])
    assert "data not read; assumed vocab_size 256" in report.data
    assert not missing.exists()
    report = check("cnn/digits", ["--data.path", str(missing / "digits.csv.gz")])
    assert "assumed" in report.data and not missing.exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--model.init_args.net.preset", "nope"], "nope"),
        (["--trainer.max_stepz", "5"], "max_stepz"),
        (
            ["--trainer.devices", "2", "--trainer.strategy", "ddp", "--data.batch_size", "7"],
            "does not divide",
        ),
    ],
)
def test_check_refuses_broken_recipes(overrides, message):
    with pytest.raises(UserError, match=message):
        check("cnn/glyphs", overrides)


def test_check_of_a_broken_file_is_one_line_exit_2(tmp_path, bigtrain_cmd, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("base: cnn/glyphs\nmodel:\n  init_args:\n    net:\n      preset: huge-typo\n")
    out = bigtrain_cmd("recipes", "check", str(broken))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bigtrain: error: ") and "huge-typo" in lines[0], (
        out.stderr
    )
    assert command.main(["check", "cnn/glyphs", "--data.batch_size", "32"]) == 0
    good = capsys.readouterr().out
    assert "cnn/glyphs: ok" in good and "global 32 = 1 data-parallel rank(s) x 32" in good


def test_flatten_and_differences():
    a = {"trainer": {"max_steps": 5, "devices": 1}, "model": {"init_args": {"betas": [0.9, 0.99]}}, "x": {}}
    b = {"trainer": {"max_steps": 6, "devices": 1}, "model": {"init_args": {"betas": [0.9, 0.95]}}, "y": None}
    assert flatten(a) == {
        "trainer.max_steps": 5,
        "trainer.devices": 1,
        "model.init_args.betas": [0.9, 0.99],
        "x": {},
    }
    assert [row[0] for row in differences(a, b)] == ["model.init_args.betas", "trainer.max_steps", "x", "y"]
    assert differences(a, b)[-1] == ("y", "(not set)", None)


def test_diff_prints_the_resolved_keys_that_differ(capsys):
    assert command.main(["diff", "transformer/builtin-char", "transformer/shakespeare-char-cpu"]) == 0
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["data.init_args.batch_size"] == ["32", "12"]
    assert rows["data.init_args.source"] == ["builtin", "shakespeare"]
    assert rows["model.init_args.net.preset"] == ["tiny", "baby"]
    assert "model.class_path" not in rows and "recipe_name" not in rows  # same, and not the recipe's own
    assert command.main(["diff", "cnn/glyphs", "cnn/glyphs"]) == 0
    assert "resolve to the same config" in capsys.readouterr().out


def test_copy_of_a_based_recipe_still_finds_its_base(tmp_path):
    dest = command.copy("rnn/shakespeare-char", tmp_path)
    assert "base: rnn/builtin-char\n" in dest.read_text()
    assert differences(resolved(str(dest), []), resolved("rnn/shakespeare-char", [])) == []
    assert yaml.safe_load(dest.read_text())["trainer"]["max_steps"] == 3000


def test_readme_check_example_is_what_check_prints():
    import torch

    from tests.conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    block = readme.split("$ bigtrain recipes check transformer/gpt-1b-fsdp\n", 1)[1].split("```", 1)[0]
    lines = check("transformer/gpt-1b-fsdp", []).lines()
    if torch.cuda.is_available():  # the plan line is for this machine's device memory, 80 GB without CUDA
        lines, block = lines[:-1], block.rsplit("  plan", 1)[0]
    assert block.splitlines() == lines
