"""What a sweep varies: --grid parsing, grid and random expansion, refusal of malformed or hostile keys."""

from __future__ import annotations

import math

import pytest

from bigtrain.errors import UserError
from bigtrain.sweeps.spec import expand, parse_axes, point_args


def test_grid_is_every_combination_in_order():
    axes = parse_axes(["model.optim.lr=1e-3,3e-4", "data.batch_size=32,64"])
    points = expand(axes)
    assert points == [
        {"model.optim.lr": "1e-3", "data.batch_size": "32"},
        {"model.optim.lr": "1e-3", "data.batch_size": "64"},
        {"model.optim.lr": "3e-4", "data.batch_size": "32"},
        {"model.optim.lr": "3e-4", "data.batch_size": "64"},
    ]
    assert point_args(points[1]) == ["--model.optim.lr=1e-3", "--data.batch_size=64"]


def test_random_draws_are_seeded_and_in_range():
    axes = parse_axes(
        ["model.optim.lr=loguniform:1e-4:1e-2", "data.batch_size=32,64", "trainer.max_steps=int:5:9"]
    )
    first, again, other = expand(axes, 20, seed=3), expand(axes, 20, seed=3), expand(axes, 20, seed=4)
    assert first == again and first != other
    lrs = [float(p["model.optim.lr"]) for p in first]
    assert all(1e-4 <= lr <= 1e-2 for lr in lrs)
    # Log-uniform: about as many draws below the geometric middle (1e-3) as above it.
    assert 4 <= sum(lr < 1e-3 for lr in lrs) <= 16
    assert {p["data.batch_size"] for p in first} == {"32", "64"}
    assert {int(p["trainer.max_steps"]) for p in first} <= set(range(5, 10))
    assert all(not math.isnan(float(p["model.optim.lr"])) for p in first)


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (["model.optim.lr"], "is not KEY=V1,V2"),
        (["model.optim.lr$(touch x)=1"], "is not a config key"),
        (["model..lr=1"], "is not a config key"),
        (["model.optim.lr=1,\ntouch x"], "control character"),
        (["model.optim.lr=1,,2"], "empty value"),
        (["model.optim.lr=1,1"], "names a value twice"),
        (["run_dir=a,b"], "set by the sweep"),
        (["ckpt_path=a,b"], "set by the sweep"),
        (["model.optim.lr=1", "model.optim.lr=2"], "given twice"),
        (["model.optim.lr=loguniform:0:1"], "loguniform needs LOW > 0"),
        (["model.optim.lr=uniform:2:1"], "LOW < HIGH"),
        (["model.optim.lr=uniform:a:1"], "must be numbers"),
        (["data.batch_size=int:1.5:4"], "whole-number bounds"),
        (["model.optim.lr=loguniform:1e-4:1e-2"], "is a range: draw from it with --random"),
        ([], "at least one --grid"),
    ],
)
def test_malformed_specs_are_one_line(specs, message):
    with pytest.raises(UserError, match="^[^\n]*$") as err:
        expand(parse_axes(specs))
    assert message in str(err.value)


def test_random_needs_a_positive_count():
    with pytest.raises(UserError, match="--random must be at least 1"):
        expand(parse_axes(["model.optim.lr=1,2"]), 0)
