"""The `bigtrain` command: help, recipes, overrides, run directory, and one-line errors for bad input."""

from __future__ import annotations

import json
import time

import pytest
import yaml

from bigtrain.recipes import all_recipes

QUICK = [
    "--trainer.max_steps",
    "3",
    "--trainer.limit_val_batches",
    "1",
    "--trainer.enable_progress_bar",
    "false",
]


def test_help_is_fast_and_lists_commands(bigtrain_cmd):
    start = time.perf_counter()
    out = bigtrain_cmd("--help")
    elapsed = time.perf_counter() - start
    assert out.returncode == 0
    for command in ("fit", "validate", "test", "predict", "recipes", "submit"):
        assert command in out.stdout
    # Generous bound for a loaded 2-core machine; the point is that torch is not imported.
    assert elapsed < 5, f"bigtrain --help took {elapsed:.2f}s"


def test_class_help_shows_the_docstrings_of_config_fields(bigtrain_cmd):
    """Field docstrings are parsed only when help is asked for; then they are the options' help text."""
    out = bigtrain_cmd("fit", "--model.help", "ResNetClassifier")
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "--model.net.width WIDTH Channels of the first stage's 3x3 convolutions" in text


def test_help_does_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys; from bigtrain.cli import dispatch; dispatch(['--help']); print('torch' in sys.modules)"
    )

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("False")


def test_recipes_list_covers_every_family(bigtrain_cmd):
    out = bigtrain_cmd("recipes", "list")
    assert out.returncode == 0, out.stderr
    for family in ("cnn", "rnn", "transformer", "autoencoder", "gan"):
        assert f"{family}/" in out.stdout
    for recipe in all_recipes():
        assert recipe.name in out.stdout
        assert recipe.description, f"{recipe.name} has no description line"


def test_recipes_show_and_copy(bigtrain_cmd, tmp_path):
    out = bigtrain_cmd("recipes", "show", "cnn/glyphs")
    assert out.returncode == 0
    assert out.stdout.startswith("# bigtrain fit --recipe cnn/glyphs")
    assert yaml.safe_load(out.stdout)["model"]["class_path"].endswith("ResNetClassifier")
    out = bigtrain_cmd("recipes", "copy", "cnn/glyphs", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "glyphs.yaml").read_text() == bigtrain_cmd("recipes", "show", "cnn/glyphs").stdout
    again = bigtrain_cmd("recipes", "copy", "cnn/glyphs", str(tmp_path))
    assert again.returncode == 2 and "already exists" in again.stderr


def test_override_changes_value(bigtrain_cmd, tmp_path):
    overrides = ["--model.net.width", "24", "--data.batch_size", "32"]
    out = bigtrain_cmd("fit", "--recipe", "cnn/glyphs", *overrides, "--print_config")
    assert out.returncode == 0, out.stderr
    cfg = yaml.safe_load(out.stdout)
    assert cfg["model"]["init_args"]["net"]["width"] == 24
    assert cfg["data"]["init_args"]["batch_size"] == 32


def test_fit_writes_run_directory(bigtrain_cmd, tmp_path):
    run_dir = tmp_path / "run"
    small = ["--data.num_samples", "512"]
    out = bigtrain_cmd("fit", "--recipe", "cnn/glyphs", "--run_dir", str(run_dir), *small, *QUICK)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count(f"run directory: {run_dir}") == 2  # at start and at the end
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 3
    assert all(isinstance(v, (int, float)) for v in metrics.values())
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["trainer"]["max_steps"] == 3 and config["run_dir"] == str(run_dir)
    assert list((run_dir / "checkpoints").glob("*.ckpt"))
    assert list(run_dir.glob("events.out.tfevents.*"))


BAD_INPUT = [
    (["fit", "--recipe", "cnn/glyphz"], "cnn/glyphs"),
    (["fit", "--recipe", "cnn/glyphs", "--trainer.max_stepz", "3"], "trainer.max_steps"),
    (["fit", "--recipe", "cnn/glyphs", "--model.net.widht", "3"], "model.net.width"),
    (["fit", "--recipe", "cnn/glyphs", "--data.batch_size", "many"], "data.batch_size"),
    (["fit", "--recipe", "cnn/glyphs", "--model.optim.name", "adam"], "model.optim.name"),
    (["fit", "--recipe", "cnn/glyphs", "--model.net.preset", "hugenet"], "hugenet"),
    (["fit", "--config", "no/such/file.yaml"], "no/such/file.yaml"),
    (["fit", "--recipe", "cnn/digits", "--data.path", "no/such/digits.csv.gz"], "no/such/digits.csv.gz"),
    (["fitt"], "fit"),
    (["recipes", "show", "nope"], "nope"),
]


@pytest.mark.parametrize(("args", "named"), BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_is_one_line_exit_2(bigtrain_cmd, tmp_path, args, named):
    out = bigtrain_cmd(*args, "--run_dir", str(tmp_path / "run")) if args[0] == "fit" else bigtrain_cmd(*args)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("bigtrain: error: ") and named in lines[0]
    assert "Traceback" not in out.stderr
