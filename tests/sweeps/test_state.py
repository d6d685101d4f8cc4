"""sweep.yaml: written atomically, reused only for the same sweep, and its point names are never paths."""

from __future__ import annotations

import pytest
import yaml

from bigtrain.errors import UserError
from bigtrain.sweeps.state import SWEEP_FILE, new_sweep, read_sweep, reuse_or_create, write_sweep

POINTS = [{"model.optim.lr": "1e-3"}, {"model.optim.lr": "3e-4"}]


def test_same_sweep_is_reused_and_another_refused(tmp_path):
    sweep = new_sweep("cnn/glyphs", ["--trainer.max_steps", "5"], POINTS)
    sweep["points"][0]["state"] = "finished"
    write_sweep(tmp_path, sweep)
    assert not [p.name for p in tmp_path.iterdir() if p.name != SWEEP_FILE]  # no temporary file left
    again = reuse_or_create(tmp_path, new_sweep("cnn/glyphs", ["--trainer.max_steps", "5"], POINTS))
    assert again["points"][0]["state"] == "finished"  # the stored record, states and all
    for other in (
        new_sweep("cnn/glyphs", ["--trainer.max_steps", "6"], POINTS),
        new_sweep("rnn/builtin-char", ["--trainer.max_steps", "5"], POINTS),
        new_sweep("cnn/glyphs", ["--trainer.max_steps", "5"], POINTS[:1]),
    ):
        with pytest.raises(UserError, match="records a different sweep"):
            reuse_or_create(tmp_path, other)


def test_a_folder_that_is_not_a_sweep_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="holds no sweep.yaml"):
        reuse_or_create(tmp_path, new_sweep("cnn/glyphs", [], POINTS))


@pytest.mark.parametrize("name", ["../../etc", "/abs", "point-001", "point-000/../../x"])
def test_point_names_from_the_file_are_checked(tmp_path, name):
    """A sweep.yaml is a file anyone may edit: its names become paths, so only point-NNN in order passes."""
    sweep = new_sweep("cnn/glyphs", [], POINTS[:1])
    sweep["points"][0].update(name=name, dir=name)
    if name == "point-001":  # a right name with another directory
        sweep["points"][0].update(name="point-000")
    (tmp_path / SWEEP_FILE).write_text(yaml.safe_dump(sweep))
    with pytest.raises(UserError, match="not named point-NNN"):
        read_sweep(tmp_path)
