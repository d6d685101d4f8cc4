"""A run refused before training leaves no run directory behind; once training started, nothing is removed."""

from __future__ import annotations

from pathlib import Path

from bigtrain.run_names import keep_run_dirs, make_run_dir, remove_failed_start


def _start(path: Path, *names: str) -> None:
    make_run_dir(path)
    path.mkdir(parents=True, exist_ok=True)  # as the run's first writes do
    for name in names:
        (path / name).write_text("x")


def test_a_new_directory_holding_only_start_files_is_removed(tmp_path):
    run = tmp_path / "runs" / "a"
    _start(run, "config.yaml", "hparams.yaml", ".bigtrain.lock", "events.out.tfevents.1.host.2.0")
    remove_failed_start()
    assert not run.exists() and (tmp_path / "runs").is_dir()


def test_anything_else_keeps_the_directory(tmp_path):
    run = tmp_path / "b"
    _start(run, "config.yaml", "metrics.json")
    remove_failed_start()
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "metrics.json"]
    _start(tmp_path / "c", "config.yaml")
    (tmp_path / "c" / "checkpoints").mkdir()
    remove_failed_start()
    assert (tmp_path / "c" / "config.yaml").is_file()


def test_an_existing_directory_or_a_started_run_is_kept(tmp_path):
    (tmp_path / "old").mkdir()
    _start(tmp_path / "old", "config.yaml")
    remove_failed_start()
    assert (tmp_path / "old" / "config.yaml").is_file()
    _start(tmp_path / "new", "config.yaml", "events.out.tfevents.1.host.2.0")
    keep_run_dirs()  # training started: its logs are the user's
    remove_failed_start()
    assert (tmp_path / "new" / "config.yaml").is_file()
