"""Every recipe file is parsed and run for one batch (fast_dev_run); nobody lists them by hand."""

from __future__ import annotations

import shlex

import pytest

from bigtrain.recipes import base_chain, lookup, packaged_recipes
from tests.conftest import test_data_dir

RECIPES = packaged_recipes()


def data_overrides(path) -> list[str]:
    """Point recipes that read real data at the shared test copy (the product never needs it)."""
    source = lookup(base_chain(path), "data.init_args.source")
    shared = test_data_dir()
    if source == "digits":
        file = shared / "digits" / "digits.csv.gz"
        return ["--data.path", str(file)] if file.exists() else []
    if source == "shakespeare":
        folder = shared / "tinyshakespeare"
        return ["--data.path", str(folder)] if folder.exists() else []
    return []


def cpu_overrides(recipe) -> list[str]:
    """The `# cpu-test:` header line of cluster-scale recipes: how to run them on one CPU process."""
    for line in recipe.header():
        if line.startswith("cpu-test:"):
            return shlex.split(line.removeprefix("cpu-test:"))
    return []


def test_recipes_exist_for_every_family():
    from bigtrain.models import FAMILIES

    assert {r.family for r in RECIPES} == set(FAMILIES)


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.name for r in RECIPES])
def test_recipe_header(recipe):
    assert recipe.command.startswith("bigtrain ") and f"--recipe {recipe.name}" in recipe.command
    assert "cpu-test:" not in recipe.description
    assert recipe.description


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.name for r in RECIPES])
def test_recipe_runs_one_batch(recipe, bigtrain_cmd, tmp_path):
    data = data_overrides(recipe.path)
    source = lookup(base_chain(recipe.path), "data.init_args.source")
    if source in ("digits", "shakespeare") and not data:
        pytest.skip(f"shared test data not found at {test_data_dir()}")
    run_dir = tmp_path / "run"
    args = ["fit", "--recipe", recipe.name, "--run_dir", str(run_dir), "--trainer.fast_dev_run", "true"]
    out = bigtrain_cmd(*args, *data, *cpu_overrides(recipe), "--trainer.enable_progress_bar", "false")
    assert out.returncode == 0, out.stderr[-4000:]
    assert (run_dir / "metrics.json").exists()
