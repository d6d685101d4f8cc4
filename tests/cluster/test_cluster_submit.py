"""`bigtrain submit` without a cluster: job scripts, configs, torchrun lines, and one-line user errors."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bigtrain import run_names
from bigtrain.cluster import layout as lay
from bigtrain.cluster import slurm
from bigtrain.cluster.environment import environment_plugins
from bigtrain.commands import jobs, submit
from bigtrain.errors import UserError

FAKE_CONFIG = {
    "seed_everything": 0,
    "trainer": {"accelerator": "auto", "devices": "auto", "num_nodes": 1, "strategy": "auto", "max_steps": 5},
    "model": {"class_path": "some.Model", "init_args": {}},
    "data": {"class_path": "some.Data", "init_args": {"batch_size": 64, "num_workers": 0}},
    "ckpt_path": None,
}


@pytest.fixture
def fake_recipe(monkeypatch):
    """Resolve every recipe to FAKE_CONFIG (plus the overrides seen), so only submit's own code runs."""
    seen: list[list[str]] = []

    def resolve(recipe: str, overrides: list[str]) -> dict:
        seen.append([recipe, *overrides])
        return yaml.safe_load(yaml.safe_dump(FAKE_CONFIG))

    monkeypatch.setattr(submit, "resolve_run_config", resolve)
    return seen


def _directives(script: str) -> dict[str, str]:
    pairs = [line.split(" ", 1)[1] for line in script.splitlines() if line.startswith("#SBATCH ")]
    return dict(p.lstrip("-").split("=", 1) if "=" in p else (p.lstrip("-"), "") for p in pairs)


def test_dry_run_4_nodes_x_8_gpus_script_and_config_agree(tmp_path, fake_recipe, capsys):
    run = tmp_path / "run"
    argv = ["slurm", "--recipe", "cnn/glyphs", "--trainer.max_steps", "7"]
    argv += ["--nodes", "4", "--gpus-per-node", "8"]
    argv += ["--accelerator", "gpu", "--time", "01:00:00", "--socket-ifname", "ib0", "--env", "A=1", "B=x y"]
    assert submit.main([*argv, "--run-dir", str(run), "--dry-run"]) == 0
    script = capsys.readouterr().out
    assert fake_recipe == [["cnn/glyphs", "--trainer.max_steps", "7"]]  # overrides reach the resolver once
    assert script == (run / "job.sbatch").read_text()
    subprocess.run(["bash", "-n", str(run / "job.sbatch")], check=True)  # valid shell

    d = _directives(script)
    assert (d["nodes"], d["ntasks-per-node"], d["gpus-per-node"]) == ("4", "8", "8")
    assert d["signal"] == "USR1@90" and "requeue" in d and d["open-mode"] == "append"
    assert d["output"] == f"{run}/slurm-%j.out" and d["time"] == "01:00:00"
    assert "export GLOO_SOCKET_IFNAME=ib0" in script and "export NCCL_SOCKET_IFNAME=ib0" in script
    assert "export B='x y'" in script and 'MASTER_ADDR="$(scontrol show hostnames' in script
    srun = [line for line in script.splitlines() if line.startswith("srun ")]
    assert len(srun) == 1 and srun[0].endswith(f"fit --config {run}/config.yaml --ckpt_path auto")

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    trainer = cfg["trainer"]
    assert (trainer["num_nodes"], trainer["devices"], trainer["accelerator"]) == (4, 8, "gpu")
    assert trainer["strategy"] == "auto" and trainer["max_steps"] == 5  # bigtrain's auto plans for 32 ranks
    assert cfg["run_dir"] == str(run) and "ckpt_path" not in cfg


def test_signal_before_sets_the_preemption_warning(tmp_path, fake_recipe, capsys):
    argv = shlex.split("slurm --recipe r --nodes 1 --gpus-per-node 1 --accelerator cpu --time 00:30:00")
    assert submit.main([*argv, "--signal-before", "300", "--run-dir", str(tmp_path / "r"), "--dry-run"]) == 0
    assert _directives(capsys.readouterr().out)["signal"] == "USR1@300"


def test_cpu_cluster_runs_one_task_per_device_without_gpus(tmp_path, fake_recipe, capsys):
    run = tmp_path / "run"
    argv = ["slurm", "--recipe", "r", "--nodes", "2", "--gpus-per-node", "2", "--accelerator", "cpu"]
    assert submit.main([*argv, "--cpus-per-task", "1", "--run-dir", str(run), "--dry-run"]) == 0
    d = _directives(capsys.readouterr().out)
    assert (d["nodes"], d["ntasks-per-node"], d["cpus-per-task"]) == ("2", "2", "1")
    assert "gpus-per-node" not in d
    trainer = yaml.safe_load((run / "config.yaml").read_text())["trainer"]
    assert (trainer["num_nodes"], trainer["devices"], trainer["accelerator"]) == (2, 2, "cpu")


def test_recipe_asking_for_cpu_makes_a_cpu_job(tmp_path, monkeypatch, capsys):
    cpu_config = {**FAKE_CONFIG, "trainer": {**FAKE_CONFIG["trainer"], "accelerator": "cpu"}}
    monkeypatch.setattr(submit, "resolve_run_config", lambda recipe, overrides: dict(cpu_config))
    monkeypatch.setattr(slurm, "cluster_has_gpus", lambda partition: True)
    argv = [*shlex.split("slurm --recipe r --nodes 1 --gpus-per-node 2 --run-dir"), str(tmp_path / "r")]
    assert submit.main([*argv, "--dry-run"]) == 0
    assert "gpus-per-node" not in _directives(capsys.readouterr().out)


def test_containers_pyxis_and_apptainer(tmp_path, fake_recipe, capsys):
    base = shlex.split("slurm --recipe r --nodes 1 --gpus-per-node 1 --accelerator gpu --dry-run")
    submit.main(
        [*base, "--run-dir", str(tmp_path / "a"), "--container-image", "nvcr.io#nvidia/pytorch:24.05-py3"]
    )
    srun = [line for line in capsys.readouterr().out.splitlines() if line.startswith("srun ")][0]
    assert "--container-image='nvcr.io#nvidia/pytorch:24.05-py3'" in srun
    assert f"--container-mounts={tmp_path / 'a'}:{tmp_path / 'a'}" in srun and " bigtrain fit " in srun
    submit.main([*base, "--run-dir", str(tmp_path / "b"), "--container-image", "/images/bigtrain.sif"])
    srun = [line for line in capsys.readouterr().out.splitlines() if line.startswith("srun ")][0]
    assert f"apptainer exec --nv --bind {tmp_path / 'b'} /images/bigtrain.sif bigtrain fit" in srun


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--nodes", "3", "--gpus-per-node", "1"], "data.batch_size 64 (the global batch) does not divide"),
        (["--nodes", "0", "--gpus-per-node", "1"], "number of nodes must be >= 1"),
        (["--nodes", "1", "--gpus-per-node", "1", "--time", "1:xx"], "is not a SLURM time"),
        (["--nodes", "1", "--gpus-per-node", "1", "--time", "00:02:00"], "leaves no room for the preemption"),
        (["--nodes", "1", "--gpus-per-node", "1", "--env", "1A=2"], "--env '1A=2' is not NAME=VALUE"),
        (["--nodes", "1"], "the following arguments are required: --gpus-per-node"),
    ],
)
def test_user_errors_are_one_line(tmp_path, fake_recipe, extra, message):
    run = tmp_path / "run"
    with pytest.raises(UserError, match="^[^\n]*$") as err:
        submit.main(["slurm", "--recipe", "r", *extra, "--run-dir", str(run), "--dry-run"])
    assert message in str(err.value)
    assert not (run / "job.sbatch").exists()


def test_existing_run_directory_is_refused(tmp_path, fake_recipe):
    (tmp_path / "old.txt").write_text("x")
    with pytest.raises(UserError, match="already exists"):
        submit.main(
            ["slurm", "--recipe", "r", "--nodes", "1", "--gpus-per-node", "1", "--run-dir", str(tmp_path)]
        )


def test_time_formats():
    assert slurm.time_seconds("30") == 30 * 60
    assert slurm.time_seconds("30:15") == 30 * 60 + 15
    assert slurm.time_seconds("2:00:01") == 7201
    assert slurm.time_seconds("1-2") == 26 * 3600
    assert slurm.time_seconds("1-00:00:30") == 86430


def _bigtrain(args: list[str], path: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path}
    return subprocess.run([sys.executable, "-m", "bigtrain", *args], env=env, capture_output=True, text=True)


def test_no_sbatch_on_path_exits_2_with_one_line(tmp_path):
    result = _bigtrain(["submit", "slurm", "--recipe", "cnn/glyphs", "--nodes", "1", "--gpus-per-node", "1",
                        "--run-dir", str(tmp_path / "run")], path=str(tmp_path))  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "sbatch not found on PATH" in result.stderr
    assert not (tmp_path / "run").exists()


def test_torchrun_command_static_and_c10d(tmp_path, fake_recipe, capsys):
    run = tmp_path / "run"
    base = ["torchrun", "--recipe", "r", "--nnodes", "2", "--nproc-per-node", "1", "--accelerator", "cpu"]
    base += ["--rdzv-endpoint", "10.0.0.1:29555", "--run-dir", str(run), "--dry-run"]
    assert submit.main([*base, "--node-rank", "1", "--socket-ifname", "eth1"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("GLOO_SOCKET_IFNAME=eth1 NCCL_SOCKET_IFNAME=eth1 ")
    program = f"-m bigtrain fit --config {run}/config.yaml --ckpt_path auto"
    for part in ("--nnodes=2", "--nproc-per-node=1", "--node-rank=1", "--master-addr=10.0.0.1", program):
        assert part in line
    assert "--master-port=29555" in line
    trainer = yaml.safe_load((run / "config.yaml").read_text())["trainer"]
    assert (trainer["num_nodes"], trainer["devices"], trainer["accelerator"]) == (2, 1, "cpu")

    assert submit.main(base) == 0  # no node rank: c10d rendezvous assigns them
    line = capsys.readouterr().out
    assert "--rdzv-backend=c10d --rdzv-endpoint=10.0.0.1:29555 --rdzv-id=bigtrain-run" in line


def test_torchrun_multi_node_needs_shared_run_dir_and_endpoint(fake_recipe):
    with pytest.raises(UserError, match="--run-dir"):
        submit.main(["torchrun", "--recipe", "r", "--nnodes", "2", "--nproc-per-node", "1"])
    with pytest.raises(UserError, match="not HOST:PORT"):
        submit.main(["torchrun", "--recipe", "r", "--nnodes", "1", "--nproc-per-node", "1",
                     "--rdzv-endpoint", "nohost", "--dry-run"])  # fmt: skip


def test_unknown_submit_target():
    with pytest.raises(UserError, match="unknown submit target 'slrum'; did you mean 'slurm'"):
        submit.main(["slrum"])


def test_environment_plugins_turn_off_lightning_requeue(monkeypatch):
    for name in ("TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "SLURM_JOB_NAME"):
        monkeypatch.delenv(name, raising=False)
    assert environment_plugins() == []
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "2")
    monkeypatch.setenv("SLURM_JOB_NAME", "bigtrain-x")
    (plugin,) = environment_plugins()
    assert type(plugin).__name__ == "SLURMEnvironment" and plugin.auto_requeue is False


def test_jobs_lists_bigtrain_jobs_from_squeue(tmp_path, monkeypatch, capsys):
    fake = tmp_path / "squeue"
    rows = ["12|bigtrain-cnn-glyphs|RUNNING|0:07|bigtrain:/runs/a", "13|other|PENDING|0:00|", ""]
    fake.write_text("#!/bin/sh\nprintf '%s\\n' " + " ".join(f"'{r}'" for r in rows) + "\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert jobs.main([]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["JOBID", "STATE", "ELAPSED", "RUN_DIR"]
    assert [line.split() for line in lines[1:]] == [["12", "RUNNING", "0:07", "/runs/a"]]


def test_jobs_without_slurm_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError, match="neither squeue nor sacct"):
        jobs.main([])


def test_run_dir_default_is_absolute_and_new(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = run_names.new_run_dir("cnn/glyphs", None, must_be_new=True)
    assert first.is_absolute() and first.parent == tmp_path / "runs" / "cnn-glyphs"
    first.mkdir(parents=True)
    assert run_names.new_run_dir("cnn/glyphs", None, must_be_new=True) != first
    assert Path(run_names.run_name("my/recipes/big.yaml")) == Path("big")


@pytest.mark.slow
def test_real_recipe_dry_run_4x8_and_counts_that_do_not_divide(recipe, tmp_path):
    """The packaged recipe through the real `bigtrain` command: script and config agree; 3 ranks refused."""
    run = tmp_path / "run"
    common = ["submit", "slurm", "--recipe", recipe, "--data.batch_size", "64", "--accelerator", "gpu"]
    result = _bigtrain([*common, "--nodes", "4", "--gpus-per-node", "8", "--run-dir", str(run), "--dry-run"],
                       path=os.environ["PATH"])  # fmt: skip
    assert result.returncode == 0, result.stderr
    d = _directives(result.stdout)
    trainer = yaml.safe_load((run / "config.yaml").read_text())["trainer"]
    assert (int(d["nodes"]), int(d["ntasks-per-node"]), int(d["gpus-per-node"])) == (4, 8, 8)
    assert (trainer["num_nodes"], trainer["devices"], trainer["accelerator"]) == (4, 8, "gpu")

    bad = _bigtrain([*common, "--nodes", "3", "--gpus-per-node", "1", "--run-dir", str(tmp_path / "bad"),
                     "--dry-run"], path=os.environ["PATH"])  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0, bad.stderr
    assert (
        "data.batch_size 64 (the global batch) does not divide across 3 data-parallel ranks (3 node(s) x"
        in bad.stderr
    )
    assert not (tmp_path / "bad").exists()


def test_sharded_and_micro_batch_counts():
    def cfg(strategy=None, **data):
        trainer = {"strategy": strategy or "auto"}
        return {"trainer": trainer, "data": {"class_path": "D", "init_args": {"batch_size": 64, **data}}}

    fsdp = {"class_path": "bigtrain.strategies.FSDP", "init_args": {"tensor_parallel_size": 4}}
    lay.check_divisible(cfg(fsdp), lay.Layout(nodes=2, devices_per_node=8, accelerator="gpu"))  # 4 dp x 4 tp
    with pytest.raises(
        UserError, match=re.escape("tensor_parallel_size 4 does not divide the 6 ranks (1 node(s) x")
    ):
        lay.check_divisible(cfg(fsdp), lay.Layout(nodes=1, devices_per_node=6, accelerator="gpu"))
    with pytest.raises(UserError, match="does not divide across 24 data-parallel ranks"):
        big = {**fsdp, "init_args": {"tensor_parallel_size": 2}}
        lay.check_divisible(cfg(big), lay.Layout(nodes=6, devices_per_node=8, accelerator="gpu"))
    four_cpus = lay.Layout(nodes=1, devices_per_node=4, accelerator="cpu")
    with pytest.raises(UserError, match="micro_batch_size 3 does not divide the per-device batch 16"):
        lay.check_divisible(cfg(micro_batch_size=3), four_cpus)

    single = cfg({"class_path": "bigtrain.strategies.Single"})
    two = lay.apply_layout(single, lay.Layout(nodes=1, devices_per_node=2, accelerator="cpu"), Path("/r"))
    assert two["trainer"]["strategy"] == "auto" and single["trainer"]["strategy"] != "auto"
    one = lay.apply_layout(single, lay.Layout(nodes=1, devices_per_node=1, accelerator="cpu"), Path("/r"))
    assert one["trainer"]["strategy"] == {"class_path": "bigtrain.strategies.Single"}
    kept = lay.apply_layout(cfg(fsdp), lay.Layout(nodes=2, devices_per_node=8, accelerator="gpu"), Path("/r"))
    assert kept["trainer"]["strategy"] == fsdp


def test_the_readme_slurm_example_trains_the_steps_it_names(tmp_path):
    """The README's `bigtrain submit slurm` example, as a dry run: 20,000 steps, not the recipe's 3 epochs."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.index("bigtrain submit slurm --recipe cnn/glyphs --trainer.max_steps")
    command = shlex.split(readme[start : readme.index("```", start)].replace("\\\n", " "))
    run = tmp_path / "run"
    # As on a laptop: no SLURM client answers, so the README's partition `gpu` is not looked up (the
    # test cluster has only `debug`).
    result = _bigtrain([*command[1:], "--run-dir", str(run), "--dry-run"], path=str(tmp_path))
    assert result.returncode == 0, result.stderr
    trainer = yaml.safe_load((run / "config.yaml").read_text())["trainer"]
    assert (trainer["max_steps"], trainer["max_epochs"]) == (20000, -1)
    assert (trainer["num_nodes"], trainer["devices"]) == (4, 8)
