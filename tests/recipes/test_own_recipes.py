"""Your own recipes: ./recipes and BIGTRAIN_RECIPES folders beside the packaged ones, and `recipes new`."""

from __future__ import annotations

import os

import pytest
import yaml

from bigtrain.commands import recipes as command
from bigtrain.errors import UserError
from bigtrain.recipe_check import differences, resolved
from bigtrain.recipes import RECIPES_ENV, all_recipes, find, found_recipes, recipes_dir


def recipe(folder, name: str, max_steps: int, base: str = "cnn/glyphs"):
    path = folder / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# bigtrain fit --recipe {name}\n# {folder.name}'s {name}\nbase: {base}\n")
    path.write_text(path.read_text() + yaml.safe_dump({"trainer": {"max_steps": max_steps}}))
    return path


@pytest.fixture
def folders(tmp_path, monkeypatch):
    """./recipes (the current directory's) and two BIGTRAIN_RECIPES folders, sharing some names."""
    monkeypatch.chdir(tmp_path)
    local, team, lab = tmp_path / "recipes", tmp_path / "team", tmp_path / "lab"
    recipe(local, "cnn/glyphs", 1)  # hides the packaged one, and builds on it
    recipe(team, "cnn/glyphs", 2)
    recipe(team, "shared/lm", 3, base="transformer/builtin-char")
    recipe(lab, "shared/lm", 4)
    recipe(lab, "solo", 5)
    monkeypatch.setenv(RECIPES_ENV, os.pathsep.join([str(team), str(lab)]))
    return local, team, lab


def test_the_first_folder_holding_a_name_wins(folders):
    local, team, lab = folders
    assert find("cnn/glyphs").resolve() == local / "cnn" / "glyphs.yaml"
    assert find("shared/lm") == team / "shared" / "lm.yaml"
    assert find("solo") == lab / "solo.yaml"
    assert find("lm") == team / "shared" / "lm.yaml"  # a bare name, unique among the winners
    assert resolved("cnn/glyphs", [])["trainer"]["max_steps"] == 1
    assert resolved("shared/lm", [])["model"]["class_path"].endswith("GPTModule")
    sources = [(r.name, r.source) for r in found_recipes() if r.name in ("cnn/glyphs", "shared/lm")]
    assert sources == [
        ("cnn/glyphs", "./recipes"),
        ("cnn/glyphs", str(team)),
        ("cnn/glyphs", "packaged"),
        ("shared/lm", str(team)),
        ("shared/lm", str(lab)),
    ]
    assert {r.name: r.source for r in all_recipes()}["cnn/glyphs"] == "./recipes"


def test_list_says_where_each_comes_from_and_which_wins(folders, capsys, monkeypatch):
    local, team, lab = folders
    assert command.main(["list"]) == 0
    where: dict[str, list[str]] = {}
    for line in capsys.readouterr().out.splitlines()[1:]:  # plain lines off a terminal: columns 2 apart
        name, rest = line.split(None, 1)
        where.setdefault(name, []).append(rest.split("  ")[0])
    assert where["cnn/glyphs"] == [
        "./recipes (wins)",
        f"{team} (hidden by ./recipes)",
        "packaged (hidden by ./recipes)",
    ]
    assert where["shared/lm"] == [f"{team} (wins)", f"{lab} (hidden by {team})"]
    assert where["solo"] == [str(lab)]
    assert where["rnn/builtin-char"] == ["packaged"]


def test_new_writes_a_small_recipe_built_on_its_base(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert command.main(["new", "team/fast", "--from", "transformer/builtin-char"]) == 0
    path = tmp_path / "recipes" / "team" / "fast.yaml"
    assert "run it with: bigtrain fit --recipe team/fast" in capsys.readouterr().out
    text = path.read_text()
    assert yaml.safe_load(text) == {"base": "transformer/builtin-char"}
    assert differences(resolved("team/fast", []), resolved("transformer/builtin-char", [])) == []
    # The commented example is a real override: uncommented, it changes the base's value.
    example = [
        line.removeprefix("# ") for line in text.splitlines() if line.startswith("#   ") or line == "# model:"
    ]
    path.write_text(text + "\n".join(example).replace("0.002", "0.01") + "\n")
    assert resolved("team/fast", [])["model"]["init_args"]["optim"]["lr"] == 0.01
    before = path.read_text()
    with pytest.raises(UserError, match="already exists"):
        command.main(["new", "team/fast.yaml", "--from", "cnn/glyphs"])
    assert path.read_text() == before


def test_new_from_a_file_names_it_relative_to_the_new_recipe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "elsewhere" / "mine.yaml"
    mine.parent.mkdir()
    mine.write_text((recipes_dir() / "cnn" / "glyphs.yaml").read_text())
    command.main(["new", "a/b", "--from", str(mine)])
    assert yaml.safe_load((tmp_path / "recipes" / "a" / "b.yaml").read_text()) == {
        "base": "../../elsewhere/mine.yaml"
    }
    assert resolved("a/b", [])["trainer"]["max_epochs"] == 3


@pytest.mark.parametrize("name", ["../evil", "/abs/path", "a/b/c", ".hidden", "a/-x", "a b", "", "x\n"])
def test_new_refuses_unsafe_names(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="must be `name` or `family/name`"):
        command.main(["new", name, "--from", "cnn/glyphs"])
    assert not (tmp_path / "recipes").exists()
