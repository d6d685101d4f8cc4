"""Acceptance: a 2x2 grid of cnn/glyphs runs locally as four `bigtrain fit` runs; a rerun skips them and
resumes only an unfinished one; `runs compare --sweep` names the point with the lowest val/loss; TensorBoard's
HParams view holds each point's values and final metrics."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow
QUICK = [
    "--trainer.max_steps", "3",
    "--trainer.limit_val_batches", "1",
    "--trainer.enable_progress_bar", "false",
    "--data.num_samples", "128",
    "--data.num_workers", "0",
]  # fmt: skip
GRID = ["--grid", "model.optim.lr=1e-3,3e-3", "--grid", "data.batch_size=16,32"]
POINTS = [(1e-3, 16), (1e-3, 32), (3e-3, 16), (3e-3, 32)]


def bigtrain(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "bigtrain", *args], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def hparams_of(run_dir: Path) -> tuple[dict, list[str], list[str]]:
    """(hparams, HParams metric names, scalar tags) read back from the run's TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(run_dir))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    values = {
        key: value.number_value if value.HasField("number_value") else value.string_value
        for key, value in start.session_start_info.hparams.items()
    }
    metrics = [info.name.tag for info in experiment.experiment.metric_infos]
    return values, metrics, events.Tags()["scalars"]


def test_grid_runs_resumes_compares_and_logs_hparams(tmp_path):
    sweep = tmp_path / "sweep"
    command = ["sweep", "cnn/glyphs", *GRID, *QUICK, "--sweep-dir", str(sweep), "--parallel", "2"]
    out = bigtrain(*command).stdout.splitlines()
    # --parallel 2: the second point starts before the first ends.
    assert out.index("point-001: running model.optim.lr=1e-3 data.batch_size=32") < out.index(
        "point-000: finished"
    )
    record = yaml.safe_load((sweep / "sweep.yaml").read_text())
    assert [p["state"] for p in record["points"]] == ["finished"] * 4
    metrics = {}
    for index, (lr, batch) in enumerate(POINTS):
        point = sweep / f"point-{index:03d}"
        config = yaml.safe_load((point / "config.yaml").read_text())
        assert config["model"]["init_args"]["optim"]["lr"] == lr
        assert config["data"]["init_args"]["batch_size"] == batch
        metrics[point.name] = json.loads((point / "metrics.json").read_text())
        assert metrics[point.name]["global_step"] == 3
        values, names, scalars = hparams_of(point)
        assert values["model.optim.lr"] == pytest.approx(lr) and values["data.batch_size"] == batch
        assert "final/val/loss" in names and "final/val/loss" in scalars
        assert "hp_metric" not in scalars  # Lightning's placeholder is gone

    # Rerun: every point is skipped, nothing is written again.
    stamps = {p: (sweep / p / "metrics.json").stat().st_mtime_ns for p in metrics}
    out = bigtrain(*command).stdout
    assert out.count("finished earlier, skipped") == 4 and ": running" not in out
    assert stamps == {p: (sweep / p / "metrics.json").stat().st_mtime_ns for p in metrics}

    # A point left unfinished is the only one run again, resuming from its newest checkpoint.
    record["points"][1]["state"] = "failed"
    (sweep / "sweep.yaml").write_text(yaml.safe_dump(record, sort_keys=False))
    out = bigtrain("sweep", "--sweep-dir", str(sweep)).stdout  # the options come from sweep.yaml
    assert out.count("finished earlier, skipped") == 3 and "point-001: running" in out
    log = (sweep / "point-001" / "fit.log").read_text()
    assert log.count("starting fresh") == 1  # only the first attempt started without a checkpoint

    best = min(metrics, key=lambda name: metrics[name]["val/loss"])
    table = sweep / "compare.csv"
    rows = json.loads(
        bigtrain("runs", "compare", "--sweep", str(sweep), "--json", "--csv", str(table)).stdout
    )
    assert [r["run"] for r in rows if r["best"]] == [best]
    assert {r["run"]: r["val/loss"] for r in rows} == {n: m["val/loss"] for n, m in metrics.items()}
    assert {"model.optim.lr", "data.batch_size"} <= set(rows[0])
    with table.open() as f:
        assert [r["run"] for r in csv.DictReader(f) if r["best"] == "True"] == [best]
    listed = json.loads(bigtrain("runs", str(tmp_path), "--sweep", str(sweep), "--json").stdout)
    assert [(Path(r["path"]).name, r["state"], r["steps"]) for r in listed] == [
        (name, "finished", 3) for name in metrics
    ]
