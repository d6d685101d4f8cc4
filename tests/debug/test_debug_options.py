"""`bigtrain debug` options (--trace, --keep-size, --config, --help), and Lightning's own debugging flags."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from bigtrain.commands.debug import main
from bigtrain.debug.shrink import shrink
from bigtrain.lightning_cli import resolve
from bigtrain.lightning_cli import run as lightning_run

IMAGES = ["--data.num_samples", "64", "--data.val_fraction", "0.25"]


def test_trace_writes_a_chrome_trace_into_the_run_directory(tmp_path, capsys):
    args = ["--checks", "speed", "--trace", "--details", "--run_dir", str(tmp_path / "r")]
    code = main(["cnn/glyphs", *IMAGES, *args])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "top operators (self time over the profiled steps):" in out
    trace = json.loads((tmp_path / "r" / "trace.json").read_text())
    assert any(e.get("name", "").startswith("aten::") for e in trace["traceEvents"])
    report = json.loads((tmp_path / "r" / "debug.json").read_text())
    (speed,) = report["checks"]
    assert set(speed["details"]["ms"]) == {"data", "forward", "backward", "optimizer"}
    assert 1 <= len(speed["details"]["top_ops"]) <= 10
    assert speed["details"]["planned_bytes"] > 0 and ", plan " in speed["summary"]


def test_keep_size_keeps_the_model_and_one_devices_share_of_the_batch():
    config = resolve("fit", ["--recipe", "transformer/gpt-1b-fsdp"])
    kept = shrink(config, tiny=False, keep_size=True, gpu=False, user_keys=set())
    small = shrink(config, tiny=True, keep_size=False, gpu=False, user_keys={"data.block_size"})
    assert "--model.net.preset" not in kept.args
    assert "data.batch_size: 512 -> 16 (one device's share)" in kept.changes  # 512 over 4 nodes x 8
    assert kept.args[kept.args.index("--trainer.strategy") + 1] == "single"
    assert small.args[small.args.index("--model.net.preset") + 1] == "tiny"
    assert small.args[small.args.index("--data.batch_size") + 1] == "8"
    assert "--data.block_size" not in small.args  # the user's own setting is left alone


def test_a_config_file_runs_like_a_recipe(tmp_path, capsys):
    recipe = yaml.safe_load(Path("recipes/cnn/glyphs.yaml").read_text())
    recipe["data"]["init_args"]["num_samples"] = 64
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(recipe))
    code = main(["--config", str(path), "--checks", "data,shapes", "--run_dir", str(tmp_path / "r")])
    assert code == 0
    assert "bigtrain debug " + str(path) in capsys.readouterr().out


def test_help_exits_0_and_names_the_checks(capsys):
    assert main(["--help"]) == 0
    assert "data,shapes,grads,learns,nan,speed" in capsys.readouterr().out


def test_lightnings_debugging_flags_keep_working(tmp_path):
    run_dir = tmp_path / "fit"
    flags = ["--trainer.overfit_batches", "1", "--trainer.detect_anomaly", "true"]
    flags += ["--trainer.profiler", "simple", "--trainer.max_steps", "3", "--trainer.limit_val_batches", "1"]
    args = ["--recipe", "cnn/glyphs", *IMAGES, "--data.batch_size", "8", *flags, "--run_dir", str(run_dir)]
    code = lightning_run("fit", args)
    assert code == 0
    assert json.loads((run_dir / "metrics.json").read_text())["global_step"] == 3


def test_nan_and_constant_inputs_fail_the_data_check():
    from types import SimpleNamespace

    import torch

    from bigtrain.debug.tensors import batch_problems

    data = SimpleNamespace(num_classes=10)
    x = torch.zeros(4, 3)
    _, problems = batch_problems((x, torch.tensor([0, 1, 2, 3])), data)
    assert problems == ["batch[0] is constant (0 everywhere)"]
    x[1, 2] = float("nan")
    rows, problems = batch_problems((x, torch.tensor([0, 1, 2, 9])), data)
    assert problems == ["batch[0] holds 1 NaN/Inf values"]
    assert rows[1]["distinct"] == 4 and rows[1]["max"] == 9


def test_more_than_one_device_is_refused_in_one_line():
    import pytest

    from bigtrain.errors import UserError

    with pytest.raises(UserError, match=r"one process on one device: leave out --trainer\.devices"):
        main(["cnn/glyphs", "--trainer.devices", "2"])
    with pytest.raises(UserError, match=r"leave out --trainer\.strategy"):
        main(["cnn/glyphs", "--trainer.strategy=ddp"])


def test_trace_on_cuda_also_writes_a_memory_snapshot(tmp_path, capsys):
    import pickle

    import pytest
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    code = main(["cnn/glyphs", *IMAGES, "--checks", "speed", "--trace", "--run_dir", str(tmp_path / "r")])
    assert code == 0, capsys.readouterr().out
    with open(tmp_path / "r" / "memory_snapshot.pickle", "rb") as f:
        snapshot = pickle.load(f)  # the file this test's own run just wrote
    assert snapshot["segments"] and snapshot["device_traces"]
