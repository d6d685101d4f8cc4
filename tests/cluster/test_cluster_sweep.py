"""`bigtrain submit slurm --sweep` on the test cluster: a 2x2 grid of cnn/glyphs as one job array, one task
preempted, requeued alone and resumed to completion; `runs compare --sweep` then names the best point."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from conftest import QUICK, bigtrain, job_field, wait_for, wait_for_state
from steplog import read_steps

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
MAX_STEPS = 20  # QUICK's trainer.max_steps
FINISHED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")
GRID = ["--grid", "model.optim.lr=1e-3,3e-3", "--grid", "data.batch_size=16,32"]
PREEMPTED = 1  # the array task (and point) that is preempted


def test_sweep_array_with_a_preempted_task_finishes_every_point(slurm_env, cancel_after, recipe, tmp_path):
    sweep = tmp_path / "sweep"
    result = bigtrain(
        slurm_env, "submit", "slurm", "--sweep", "--recipe", recipe, *QUICK, *GRID, "--parallel", "2",
        "--trainer.callbacks.delay", "0.5", "--nodes", "1", "--gpus-per-node", "1", "--run-dir", str(sweep),
        "--env", "MASTER_ADDR=127.0.0.1",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    array = re.search(r"submitted SLURM job array (\d+) \(4 tasks\)", result.stdout).group(1)
    tasks = [f"{array}_{i}" for i in range(4)]
    cancel_after.append(array)
    assert "#SBATCH --array=0-3%2" in (sweep / "job.sbatch").read_text()

    steps = sweep / f"point-{PREEMPTED:03d}" / "steps-rank0.txt"
    wait_for(lambda: steps.exists() and len(steps.read_text().split()) >= 5, 240, "point 1 to train")
    # What SLURM does before the time limit (#SBATCH --signal=USR1@90), to this one task.
    # SLURM 22.05 delivers the signal to an array task's step but may still answer "Job can not be altered
    # now" (exit status 228); a retry would hit the requeued task as it starts. The requeue below is proof.
    subprocess.run(["scancel", "--signal=USR1", tasks[PREEMPTED]], env=slurm_env, check=False)
    wait_for(lambda: job_field(slurm_env, tasks[PREEMPTED], "Restarts") == "1", 120, "the task's requeue")
    wait_for_state(slurm_env, tasks[PREEMPTED], ("PENDING",), 60)
    # A requeued job waits about two minutes (BeginTime) before it may start again; start it now.
    update = ["scontrol", "update", f"JobId={tasks[PREEMPTED]}", "StartTime=now"]
    subprocess.run(update, env=slurm_env, check=True)
    states = [wait_for_state(slurm_env, task, FINISHED, 300) for task in tasks]
    logs = {task: (sweep / f"slurm-{task}.out").read_text() for task in tasks}
    assert states == ["COMPLETED"] * 4, logs

    saved = re.search(r"preempted by SIGUSR1 after step (\d+): saved (\S+); requeued SLURM job (\S+)",
                      logs[tasks[PREEMPTED]])  # fmt: skip
    assert saved and saved.group(3) == tasks[PREEMPTED], logs[tasks[PREEMPTED]]
    step = int(saved.group(1))
    first, second = read_steps(steps)  # two attempts: up to the saved step, then on from it
    assert first == list(range(1, step + 1)) and second == list(range(step + 1, MAX_STEPS + 1))
    for index, task in enumerate(tasks):
        point = sweep / f"point-{index:03d}"
        assert json.loads((point / "metrics.json").read_text())["global_step"] == MAX_STEPS
        assert ("preempted" in logs[task]) == (index == PREEMPTED)

    losses = {p.name: json.loads((p / "metrics.json").read_text())["val/loss"] for p in sweep.glob("point-*")}
    compared = bigtrain(slurm_env, "runs", "compare", "--sweep", str(sweep), "--json")
    assert compared.returncode == 0, compared.stderr
    rows = json.loads(compared.stdout)
    assert [r["run"] for r in rows if r["best"]] == [min(losses, key=losses.get)]
    assert {r["state"] for r in rows} == {"finished"}
