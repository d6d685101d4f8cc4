"""Start-up: mistakes in a recipe name or config path come before torch is imported; the time to the first
optimizer step is measured and logged (`perf/startup_s`)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bigtrain.lightning_cli import run

# Runs `bigtrain ARGS` as the command does and reports whether torch or Lightning got imported.
PROBE = """
import runpy, sys
sys.argv = ["bigtrain", *sys.argv[1:]]
try:
    runpy.run_module("bigtrain", run_name="__main__")
except SystemExit as done:
    print("exit", done.code, "torch" in sys.modules or "lightning" in sys.modules)
"""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--recipe", "cnn/glyps"], "unknown recipe 'cnn/glyps'; did you mean 'cnn/glyphs'?"),
        (["--config", "no/such.yaml"], "--config 'no/such.yaml': no such file"),
        (["--config=no/such.yaml"], "--config 'no/such.yaml': no such file"),
    ],
)
def test_a_wrong_recipe_or_config_is_reported_before_torch_is_imported(args, message, tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", PROBE, "fit", *args], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert out.stdout.split() == ["exit", "2", "False"], out.stdout + out.stderr
    (line,) = out.stderr.splitlines()
    assert line.startswith(f"bigtrain: error: {message}")


def test_startup_seconds_reach_tensorboard_and_metrics_json(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    run("fit", ["--recipe", "cnn/glyphs", "--run_dir", str(run_dir), "--data.num_samples", "200",
                "--trainer.max_steps", "2", "--trainer.limit_val_batches", "0",
                "--trainer.enable_progress_bar", "false", "--throughput.enabled", "false"])  # fmt: skip
    seconds = json.loads((run_dir / "metrics.json").read_text())["perf/startup_s"]
    (event,) = EventAccumulator(str(run_dir)).Reload().Scalars("perf/startup_s")
    assert event.step == 1 and event.value == pytest.approx(seconds) and 0 < seconds < 300


def test_the_process_age_counts_from_the_process_start():
    code = "import time; time.sleep(0.5); import bigtrain.callbacks.startup as s; print(s.process_age_s())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert 0.5 <= float(out.stdout) < 30, out.stdout + out.stderr
