"""`bigtrain runs` and `runs compare` over run directories laid out as bigtrain leaves them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from bigtrain.commands import runs as runs_command
from bigtrain.errors import UserError
from bigtrain.run_lock import acquire, release
from bigtrain.sweeps.runs import find_runs, read_run


def make_run(
    path: Path, lr: float, metrics: dict | None, recipe: str = "cnn-glyphs", steps: int = 10
) -> Path:
    """A run directory: config.yaml as LightningCLI writes it, metrics.json as RunDirectory does."""
    config = {
        "seed_everything": 0,
        "trainer": {"max_steps": steps, "callbacks": [{"class_path": "x.Y"}]},
        "model": {"class_path": "bigtrain.models.cnn.ResNetClassifier", "init_args": {"optim": {"lr": lr}}},
        "run_dir": str(path),
        "recipe_name": recipe,
    }
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    if metrics is not None:
        (path / "metrics.json").write_text(json.dumps({**metrics, "global_step": steps, "epoch": 0}))
    return path


def run_cli(argv: list[str], capsys) -> str:
    assert runs_command.main(argv) == 0
    return capsys.readouterr().out


def test_states_from_lock_stop_checkpoints_and_metrics(tmp_path):
    finished = make_run(tmp_path / "a", 1e-3, {"val/loss": 1.0})
    failed = make_run(tmp_path / "b", 1e-3, None)
    preempted = make_run(tmp_path / "c", 1e-3, {"val/loss": 2.0}, steps=5)
    (preempted / "checkpoints").mkdir()
    (preempted / "checkpoints" / "preempt-step=5.ckpt").write_bytes(b"")
    resumed = make_run(tmp_path / "d", 1e-3, {"val/loss": 2.0}, steps=9)  # preempted at 5, then finished
    (resumed / "checkpoints").mkdir()
    (resumed / "checkpoints" / "preempt-step=5.ckpt").write_bytes(b"")
    nonfinite = make_run(tmp_path / "f", 1e-3, {"val/loss": 2.0}, steps=5)
    (nonfinite / "checkpoints").mkdir()
    (nonfinite / "checkpoints" / "nonfinite-step=5.ckpt").write_bytes(b"")
    running = make_run(tmp_path / "e", 1e-3, None)
    lock = acquire(running)  # held by this live process
    try:
        states = {p.name: read_run(p).state for p in find_runs(tmp_path)}
    finally:
        release(lock)
    assert states == {
        "a": "finished",
        "b": "failed",
        "c": "preempted",
        "d": "finished",
        "e": "running",
        "f": "failed",
    }
    assert read_run(running).state == "failed"  # released, and no metrics: it ended without finishing
    assert read_run(finished).steps == 10 and read_run(failed).steps is None


def test_list_filters_and_sorts(tmp_path, capsys):
    make_run(tmp_path / "r1", 1e-3, {"val/loss": 0.5})
    make_run(tmp_path / "r2", 3e-4, {"val/loss": 0.2})
    make_run(tmp_path / "r3", 3e-4, None)
    make_run(tmp_path / "g1", 3e-4, {"val/loss": 0.1}, recipe="gan-glyphs")
    rows = json.loads(
        run_cli([str(tmp_path), "--recipe", "cnn/glyphs", "--sort", "val/loss", "--json"], capsys)
    )
    assert [Path(r["path"]).name for r in rows] == ["r2", "r1", "r3"]  # no val/loss: last
    assert rows[0]["metrics"] == {"val/loss": 0.2} and rows[0]["state"] == "finished"
    rows = json.loads(run_cli([str(tmp_path), "--state", "failed", "--json"], capsys))
    assert [Path(r["path"]).name for r in rows] == ["r3"]
    text = run_cli([str(tmp_path), "--sort", "val/loss", "--desc"], capsys)  # not a terminal: plain text
    lines = text.splitlines()
    assert lines[0].split() == ["recipe", "state", "steps", "wall", "val/loss", "train/loss", "path"]
    assert [line.split()[-1] for line in lines[1:]] == [str(tmp_path / n) for n in ("r1", "r2", "g1", "r3")]


def test_compare_shows_differing_keys_and_marks_the_best(tmp_path, capsys):
    a = make_run(tmp_path / "a", 1e-3, {"val/loss": 0.5, "val/acc": 0.7, "perf/mfu": 0.1})
    b = make_run(tmp_path / "b", 3e-4, {"val/loss": 0.3, "val/acc": 0.6})
    out_csv = tmp_path / "out.csv"
    rows = json.loads(run_cli(["compare", str(a), str(b), "--csv", str(out_csv), "--json"], capsys))
    # Only the learning rate differs (run_dir is where a run lives, not what it ran).
    assert list(rows[0]) == ["run", "best", "model.optim.lr", "state", "steps", "val/loss", "val/acc"]
    assert [(r["model.optim.lr"], r["best"]) for r in rows] == [(1e-3, False), (3e-4, True)]
    with out_csv.open() as f:
        assert [(r["model.optim.lr"], r["best"]) for r in csv.DictReader(f)] == [
            ("0.001", "False"),
            ("0.0003", "True"),
        ]
    rows = json.loads(
        run_cli(["compare", str(a), str(b), "--metric", "val/acc", "--mode", "max", "--json"], capsys)
    )
    assert [r["best"] for r in rows] == [True, False]
    text = run_cli(["compare", str(a), str(b)], capsys)
    assert [line.split()[:2] for line in text.splitlines()[1:]] == [[str(a), "0.001"], [str(b), "*"]]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compare"], "run directories or --sweep DIR"),
        (["compare", "{a}", "--sweep", "{a}"], "run directories or --sweep DIR"),
        (["compare", "{a}", "--metric", "val/nope"], "no run has the metric 'val/nope'"),
        (["compare", "{tmp}"], "is not a run directory"),
        (["compare", "--sweep", "{a}"], "holds no runs"),
        (["{tmp}/missing"], "is not a folder"),
    ],
)
def test_mistakes_are_one_line(argv, message, tmp_path):
    a = make_run(tmp_path / "a", 1e-3, {"val/loss": 0.5})
    argv = [arg.format(a=a, tmp=tmp_path) for arg in argv]
    with pytest.raises(UserError, match="^[^\n]*$") as err:
        runs_command.main(argv)
    assert message in str(err.value)


def test_a_sweep_point_that_exited_non_zero_is_failed(tmp_path):
    from bigtrain.sweeps.state import new_sweep, write_sweep

    sweep = new_sweep("cnn/glyphs", [], [{"model.optim.lr": "1e-3"}, {"model.optim.lr": "3e-4"}])
    sweep["points"][0].update(state="finished", wall_s=12.5)
    sweep["points"][1].update(state="failed", exit_code=1)  # it wrote metrics, then crashed on the way out
    write_sweep(tmp_path, sweep)
    lock = acquire(tmp_path)  # `bigtrain sweep` holds the sweep directory while it runs
    try:
        assert find_runs(tmp_path) == []  # the sweep directory is not a run
    finally:
        release(lock)
    runs = [read_run(make_run(tmp_path / f"point-00{i}", 1e-3, {"val/loss": 1.0})) for i in (0, 1)]
    assert [(r.state, r.sweep, r.wall_s) for r in runs] == [
        ("finished", tmp_path, 12.5),
        ("failed", tmp_path, None),
    ]


def test_default_folder_is_runs(tmp_path, monkeypatch, capsys):
    make_run(tmp_path / "runs" / "cnn-glyphs" / "x", 1e-3, {"val/loss": 0.5})
    make_run(tmp_path / "elsewhere", 1e-3, {"val/loss": 0.5})
    monkeypatch.chdir(tmp_path)
    rows = json.loads(run_cli(["--json"], capsys))
    assert [r["path"] for r in rows] == [str(tmp_path / "runs" / "cnn-glyphs" / "x")]
