"""`bigtrain submit slurm --sweep`: one job array whose task N runs point-NNN's config with --ckpt_path auto.
The script is run under stub SLURM commands (no cluster needed); tests/cluster/test_cluster_sweep.py runs it
on the test cluster."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from bigtrain.commands import submit
from bigtrain.errors import UserError

BASE = ["slurm", "--sweep", "--nodes", "1", "--gpus-per-node", "1", "--accelerator", "cpu"]


def _stubs(tmp_path: Path) -> Path:
    """`srun` that records its arguments, `scontrol` that names one node."""
    folder = tmp_path / "stubs"
    folder.mkdir()
    (folder / "srun").write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\0" "$a"; done > "$STUB_LOG"\n')
    (folder / "scontrol").write_text("#!/bin/sh\necho n1\n")
    for path in folder.iterdir():
        path.chmod(0o755)
    return folder


def _srun_args(script: Path, task: int, tmp_path: Path) -> list[str]:
    """The arguments srun gets when array task `task` runs `script`."""
    log = tmp_path / f"srun-{task}.args"
    stubs = tmp_path / "stubs" if (tmp_path / "stubs").exists() else _stubs(tmp_path)
    env = {
        "PATH": f"{stubs}:{os.environ['PATH']}",
        "SLURM_JOB_ID": str(100 + task),
        "SLURM_ARRAY_TASK_ID": str(task),
        "SLURM_JOB_NODELIST": "n1",
        "STUB_LOG": str(log),
    }
    subprocess.run(["bash", str(script)], check=True, env=env, cwd=script.parent, timeout=30)
    return log.read_text().split("\0")[:-1]


def test_dry_run_writes_one_config_per_point_and_an_array_script(tmp_path):
    """Resolved for real: each point's config.yaml holds its values and its own run directory."""
    sweep = tmp_path / "sweep"
    argv = [*BASE, "--recipe", "cnn/glyphs", "--trainer.max_steps", "5", "--parallel", "2"]
    argv += ["--grid", "model.optim.lr=1e-3,3e-4", "--grid", "data.batch_size=32,64"]
    assert submit.main([*argv, "--run-dir", str(sweep), "--dry-run"]) == 0
    script = (sweep / "job.sbatch").read_text()
    assert "#SBATCH --array=0-3%2\n" in script
    assert f"#SBATCH --output={sweep}/slurm-%A_%a.out\n" in script
    assert "#SBATCH --requeue\n" in script and "#SBATCH --signal=USR1@90\n" in script
    record = yaml.safe_load((sweep / "sweep.yaml").read_text())
    expected = [(1e-3, 32), (1e-3, 64), (3e-4, 32), (3e-4, 64)]
    for index, (lr, batch) in enumerate(expected):
        point = sweep / f"point-{index:03d}"
        cfg = yaml.safe_load((point / "config.yaml").read_text())
        assert cfg["model"]["init_args"]["optim"]["lr"] == lr
        assert cfg["data"]["init_args"]["batch_size"] == batch
        assert cfg["run_dir"] == str(point) and cfg["trainer"]["max_steps"] == 5
        assert record["points"][index]["dir"] == point.name
        assert _srun_args(sweep / "job.sbatch", index, tmp_path)[-5:] == [
            "fit", "--config", str(point / "config.yaml"), "--ckpt_path", "auto",
        ]  # fmt: skip


def test_hostile_grid_is_refused_before_anything_is_written(tmp_path):
    mark = tmp_path / "MARK"
    for i, grid in enumerate(
        [f"model.optim.lr$(touch {mark})=1", f"model.optim.lr=1\n#SBATCH --wrap=touch {mark}"]
    ):
        run = tmp_path / f"run{i}"
        with pytest.raises(UserError, match="^[^\n]*$"):
            submit.main([*BASE, "--recipe", "r", "--grid", grid, "--run-dir", str(run), "--dry-run"])
        assert not run.exists() and not mark.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--sweep", "--grid", "model.optim.lr=1e-3", "--parallel", "0"], "--parallel must be at least 1"),
        (["--grid", "model.optim.lr=1e-3"], "add --sweep"),
        (["--sweep"], "at least one --grid"),
    ],
)
def test_bad_sweep_options_are_one_line(extra, message, tmp_path):
    argv = [a for a in BASE if a != "--sweep"] + ["--recipe", "cnn/glyphs", *extra]
    with pytest.raises(UserError, match="^[^\n]*$") as err:
        submit.main([*argv, "--run-dir", str(tmp_path / "run"), "--dry-run"])
    assert message in str(err.value)
    assert not (tmp_path / "run").exists()
