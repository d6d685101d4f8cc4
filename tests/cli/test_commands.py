"""The utility commands: dispatched from cli.py's table, and every command-line mistake is one line."""

from __future__ import annotations

import pytest

from bigtrain.cli import UTILITIES, load

# Each command's mistakes: an option it rejects, and one it needs that is missing. `named` is what the
# one line must name.
MISTAKES = [
    (["recipes", "list", "--bogus"], "--bogus"),
    (["recipes", "lst"], "lst"),
    (["recipes"], "list,show,copy"),
    (["recipes", "show"], "name"),
    (["submit", "slurm", "--recipe", "r", "--nodes", "two", "--gpus-per-node", "1"], "--nodes"),
    (["submit", "slurm", "--nodes", "1", "--gpus-per-node", "1"], "--recipe"),
    (["submit", "torchrun", "--recipe", "r", "--nproc-per-node", "1"], "--nnodes"),
    (["submit", "slrum"], "slurm"),
    (["sweep", "cnn/glyphs", "--grid", "model.optim.lr"], "--grid"),
    (["sweep", "--parallel", "2"], "RECIPE"),
    (["runs", "--state", "bogus"], "--state"),
    (["runs", "compare"], "--sweep"),
    (["jobs", "--bogus"], "--bogus"),
    (["jobs", "--user"], "--user"),
    (["plan", "cnn/glyphs", "--nodes", "two"], "--nodes"),
    (["plan", "--json"], "recipe"),
    (["verify-resume", "cnn/glyphs", "--steps", "many"], "--steps"),
    (["verify-resume"], "needs a recipe"),
    (["verify-resume", "cnn/glyphs", "--stop-at"], "--stop-at"),
    (["debug", "cnn/glyphs", "--checks", "grads,speeed"], "'speeed'"),
    (["debug", "--tiny"], "needs a recipe name or --config"),
]


@pytest.mark.parametrize(("args", "named"), MISTAKES, ids=[" ".join(a) for a, _ in MISTAKES])
def test_command_line_mistakes_are_one_line_exit_2(bigtrain_cmd, args, named):
    out = bigtrain_cmd(*args)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("bigtrain: error: ") and named in lines[0]


def test_every_command_is_covered_by_the_mistakes():
    # `checkpoint` is covered by its own tests.
    assert {args[0] for args, _ in MISTAKES} == set(UTILITIES) - {"checkpoint"}


@pytest.mark.parametrize("command", sorted(set(UTILITIES) - {"checkpoint"}))
def test_every_command_loads(command):
    assert callable(load(UTILITIES[command]))


def test_a_command_help_exits_0_with_its_options(bigtrain_cmd):
    out = bigtrain_cmd("recipes", "copy", "--help")
    assert out.returncode == 0 and "dest" in out.stdout
    out = bigtrain_cmd("jobs", "--help")
    assert out.returncode == 0 and "--user" in out.stdout
