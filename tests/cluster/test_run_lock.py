"""One run per directory: a second `fit` into a directory in use is refused in one line; a lock whose
holder died is stale and taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from bigtrain.run_lock import LOCK_FILE

HERE = Path(__file__).resolve().parent
QUICK = [
    "--recipe", "transformer/builtin-char", "--trainer.enable_progress_bar", "false",
    "--trainer.limit_val_batches", "1", "--data.train_samples", "64", "--data.num_workers", "0",
]  # fmt: skip


def test_second_run_in_the_same_directory_is_refused_until_the_first_is_gone(bigtrain_cmd, tmp_path):
    run = tmp_path / "run"
    slow = tmp_path / "slow.yaml"  # 0.5 s a step: the first run is still training when the second starts
    steplog = {"class_path": "steplog.StepLog", "init_args": {"dirpath": str(tmp_path), "delay": 0.5}}
    slow.write_text(yaml.safe_dump({"trainer": {"callbacks": [steplog]}}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])
    env.pop("BIGTRAIN_RUN_DIR", None)
    first = subprocess.Popen(
        [sys.executable, "-m", "bigtrain", "fit", *QUICK, "--trainer.max_steps", "200", "--config", str(slow),
         "--run_dir", str(run)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "steps-rank0.txt").exists():
            assert time.monotonic() < deadline and first.poll() is None, (
                "the first run did not start training"
            )
            time.sleep(0.2)
        held = json.loads((run / LOCK_FILE).read_text())
        assert held["pid"] == first.pid

        second = bigtrain_cmd("fit", *QUICK, "--trainer.max_steps", "2", "--run_dir", str(run))
        assert second.returncode == 2 and second.stderr.strip().count("\n") == 0, second.stderr[-2000:]
        assert f"run directory {run} is in use by another bigtrain run (pid {first.pid}" in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)  # dies holding the lock: no chance to release it
        first.wait(timeout=60)
    assert (run / LOCK_FILE).exists()

    third = bigtrain_cmd("fit", *QUICK, "--trainer.max_steps", "2", "--run_dir", str(run))
    assert third.returncode == 0, third.stderr[-2000:]  # the dead holder's lock was stale
    assert not (run / LOCK_FILE).exists()  # released at the end
