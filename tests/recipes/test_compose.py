"""Recipes built on recipes: `base:` chains stack as --config files, then other --config files, overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bigtrain.errors import UserError
from bigtrain.lightning_cli import resolve
from bigtrain.recipes import base_chain, find, recipes_dir

BASE = {
    "seed_everything": 0,
    "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": 3, "log_every_n_steps": 10},
    "model": {
        "class_path": "bigtrain.models.cnn.ResNetClassifier",
        "init_args": {"net": {"preset": "tiny"}, "optim": {"lr": 0.003, "weight_decay": 0.0005}},
    },
    "data": {
        "class_path": "bigtrain.data.ImageDataModule",
        "init_args": {"source": "glyphs", "num_samples": 6000, "batch_size": 64},
    },
}


def write(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture
def chain(tmp_path):
    """base.yaml <- middle.yaml (by relative path) <- team/leaf.yaml, and two extra --config files."""
    write(tmp_path / "base.yaml", BASE)
    write(
        tmp_path / "middle.yaml",
        {
            "base": "base.yaml",
            "model": {"init_args": {"optim": {"lr": 0.01}}},
            "data": {"init_args": {"batch_size": 32}},
        },
    )
    (tmp_path / "team").mkdir()
    leaf = write(
        tmp_path / "team" / "leaf.yaml",
        {
            "base": "../middle.yaml",
            "trainer": {"log_every_n_steps": 5},
            "data": {"init_args": {"batch_size": 16, "num_samples": 1000}},
        },
    )
    one = write(tmp_path / "one.yaml", {"seed_everything": 1, "trainer": {"log_every_n_steps": 7}})
    two = write(
        tmp_path / "two.yaml",
        {"seed_everything": 2, "model": {"init_args": {"optim": {"weight_decay": 0.1}}}},
    )
    return leaf, one, two


def test_each_value_comes_from_its_layer(chain):
    leaf, one, two = chain
    overrides = ["--model.init_args.optim.weight_decay", "0.2", "--data.num_samples", "500"]
    cfg = resolve("fit", ["--recipe", str(leaf), "--config", str(one), "--config", str(two), *overrides])
    optim, data = cfg["model"]["init_args"]["optim"], cfg["data"]["init_args"]
    assert cfg["trainer"]["max_epochs"] == 3  # base only
    assert cfg["model"]["class_path"] == "bigtrain.models.cnn.ResNetClassifier"  # base only
    assert optim["lr"] == 0.01  # middle over base
    assert data["batch_size"] == 16  # leaf over middle over base
    assert cfg["trainer"]["log_every_n_steps"] == 7  # first --config over the leaf
    assert cfg["seed_everything"] == 2  # second --config over the first
    assert optim["weight_decay"] == 0.2  # command line over the second --config
    assert data["num_samples"] == 500  # command line over the leaf
    assert cfg["base"] is None  # the resolved config names no base to expand again


def test_a_config_file_with_a_base_is_expanded_too(chain):
    leaf, _, _ = chain
    cfg = resolve("fit", ["--config", str(leaf)])
    assert cfg["model"]["init_args"]["optim"]["lr"] == 0.01
    assert cfg["trainer"]["max_epochs"] == 3


def test_chain_order_and_name_bases(tmp_path):
    leaf = write(tmp_path / "leaf.yaml", {"base": "transformer/shakespeare-char-cpu"})
    names = [p.resolve() for p in base_chain(leaf)]
    packaged = recipes_dir().resolve() / "transformer"
    assert names == [packaged / "builtin-char.yaml", packaged / "shakespeare-char-cpu.yaml", leaf.resolve()]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"a.yaml": {"base": "a.yaml"}}, "cycle"),
        ({"a.yaml": {"base": "b.yaml"}, "b.yaml": {"base": "a.yaml"}}, "cycle"),
        ({"a.yaml": {"base": "missing.yaml"}}, "'missing.yaml' is not a file"),
        ({"a.yaml": {"base": 5}}, "`base:` must name a recipe"),
        ({"a.yaml": {"base": "../../etc/passwd"}}, "neither a recipe name"),
        ({"a.yaml": {"base": "no/such-recipe"}}, "unknown recipe 'no/such-recipe'"),
    ],
)
def test_bad_bases_are_refused(tmp_path, files, message):
    for name, config in files.items():
        write(tmp_path / name, config)
    with pytest.raises(UserError, match=message):
        base_chain(tmp_path / "a.yaml")


def test_a_cycle_is_one_line_and_exit_2(tmp_path, bigtrain_cmd):
    write(tmp_path / "a.yaml", {"base": "b.yaml"})
    write(tmp_path / "b.yaml", {"base": "a.yaml"})
    out = bigtrain_cmd("fit", "--recipe", str(tmp_path / "a.yaml"))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"bigtrain: error: recipe bases form a cycle: {tmp_path / 'a.yaml'} -> {tmp_path / 'b.yaml'} -> "
        f"{tmp_path / 'a.yaml'}; remove one `base:` line"
    ]


def test_print_config_shows_the_resolved_chain(bigtrain_cmd):
    out = bigtrain_cmd("fit", "--recipe", "transformer/shakespeare-char-cpu", "--print_config")
    assert out.returncode == 0, out.stderr
    cfg = yaml.safe_load(out.stdout)
    assert cfg["model"]["class_path"] == "bigtrain.models.transformer.GPTModule"  # from the base
    assert cfg["model"]["init_args"]["optim"]["betas"] == [0.9, 0.99]  # from the base
    assert cfg["data"]["init_args"]["batch_size"] == 12  # the recipe's own
    assert cfg["base"] is None


def test_submit_writes_the_resolved_config_of_a_based_recipe(tmp_path, capsys):
    from bigtrain.commands import submit

    run = tmp_path / "run"
    argv = ["slurm", "--recipe", "transformer/gpt-1b-fsdp", "--nodes", "4", "--gpus-per-node", "8"]
    assert submit.main([*argv, "--accelerator", "gpu", "--run-dir", str(run), "--dry-run"]) == 0
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["model"]["class_path"] == "bigtrain.models.transformer.GPTModule"  # from gpt-350m-fsdp
    assert cfg["model"]["init_args"]["net"]["preset"] == "gpt-1b"
    assert cfg["data"]["init_args"]["vocab_size"] == 50304  # from gpt-350m-fsdp
    assert cfg["trainer"]["strategy"]["class_path"] == "bigtrain.strategies.FSDP"
    assert cfg["base"] is None  # nothing left to expand when the job runs it


def test_packaged_recipes_build_on_packaged_recipes_only(tmp_path, monkeypatch):
    """A user's recipe named like a packaged base does not change the packaged recipes built on it."""
    monkeypatch.chdir(tmp_path)
    write_dir = tmp_path / "recipes" / "transformer"
    write_dir.mkdir(parents=True)
    write(write_dir / "builtin-char.yaml", {"base": "transformer/builtin-char", "trainer": {"max_steps": 1}})
    chain = base_chain(find("transformer/shakespeare-char-cpu"))
    assert chain[0].resolve() == recipes_dir().resolve() / "transformer" / "builtin-char.yaml"
    own = base_chain(find("transformer/builtin-char"))  # the user's, built on the packaged one it hides
    assert [p.resolve() for p in own] == [chain[0].resolve(), (write_dir / "builtin-char.yaml").resolve()]


def test_export_finds_the_model_class_in_the_base():
    from bigtrain.checkpoints.export import model_class_path

    assert model_class_path("transformer/gpt-1b-fsdp") == "bigtrain.models.transformer.GPTModule"
