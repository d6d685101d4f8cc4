"""Hostile values for every option of `bigtrain submit slurm|torchrun`: each is refused with one line, or
reaches the job script or command line as one quoted word that runs nothing (proved by running the script
under stub SLURM commands and checking that no marker file appears)."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from bigtrain.cluster import torchrun
from bigtrain.commands import submit
from bigtrain.errors import UserError
from bigtrain.run_names import new_run_dir

CONFIG = {
    "trainer": {"accelerator": "cpu", "devices": 1, "num_nodes": 1, "strategy": "auto", "max_steps": 5},
    "model": {"class_path": "some.Model", "init_args": {}},
    "data": {"class_path": "some.Data", "init_args": {"batch_size": 8}},
}
MARK = "HOSTILE_MARK"


def payloads(mark: Path) -> list[str]:
    """Values that would run `touch mark` if they reached a shell unquoted, or a directive unchecked."""
    m = str(mark)
    return [
        f"x\ntouch {m}",
        f"x\n#SBATCH --wrap='touch {m}'",
        f"x;touch {m}",
        f"$(touch {m})",
        f"`touch {m}`",
        f"x' ; touch {m} ; '",
        f'x" ; touch {m} ; "',
        f"/d:/d;touch {m};#",
        f"x && touch {m}",
        f"x | touch {m}",
        f"x\x00;touch {m}",
        f"x\rtouch {m}",
    ]


@pytest.fixture
def resolved(monkeypatch):
    """Resolve every recipe to CONFIG without parsing a real one: only submit's own code runs."""
    monkeypatch.setattr(
        submit, "resolve_run_config", lambda recipe, overrides: yaml.safe_load(yaml.dump(CONFIG))
    )


@pytest.fixture
def stubs(tmp_path) -> Path:
    """A folder of stub `srun`, `scontrol` and `torchrun` that only record their arguments."""
    folder = tmp_path / "stubs"
    folder.mkdir()
    record = '#!/bin/sh\nfor a in "$@"; do printf "%s\\0" "$a"; done > "$STUB_LOG"\n'
    for name in ("srun", "torchrun"):
        (folder / name).write_text(record)
    (folder / "scontrol").write_text("#!/bin/sh\necho n1\n")
    for path in folder.iterdir():
        path.chmod(0o755)
    return folder


def _run_script(script: Path, stubs: Path, log: Path) -> None:
    subprocess.run(["bash", "-n", str(script)], check=True)
    env = {
        "PATH": f"{stubs}:{os.environ['PATH']}",
        "SLURM_JOB_ID": "7",
        "SLURM_JOB_NODELIST": "n1",
        "STUB_LOG": str(log),
    }
    subprocess.run(["bash", str(script)], check=True, env=env, cwd=script.parent, timeout=30)


def _directive_block(script: str) -> list[str]:
    """The #SBATCH lines sbatch reads: those before the first line that is neither a comment nor blank."""
    block = []
    for line in script.splitlines()[1:]:
        if line.startswith("#SBATCH "):
            block.append(line)
        elif line.strip() and not line.startswith("#"):
            break
    return block


SLURM_OPTIONS = [
    "--recipe", "--partition", "--account", "--qos", "--mem", "--time", "--container-image",
    "--container-mounts", "--env", "--env-name", "--socket-ifname", "--run-dir",
]  # fmt: skip


@pytest.mark.parametrize("option", SLURM_OPTIONS)
def test_submit_slurm_runs_nothing_a_value_carries(option, tmp_path, resolved, stubs):
    mark = tmp_path / MARK
    for i, value in enumerate(payloads(mark)):
        run = tmp_path / f"run{i}"
        argv = ["slurm", "--recipe", "r", "--nodes", "1", "--gpus-per-node", "1", "--accelerator", "cpu"]
        flag, value = {"--env": ("--env", f"A={value}"), "--env-name": ("--env", f"{value}=1")}.get(
            option, (option, value)
        )
        if option == "--run-dir":
            run = tmp_path / f"run{i}" / value
        else:
            argv += [flag, value]
        argv += ["--run-dir", str(run), "--dry-run"]
        try:
            submit.main(argv)
        except UserError as err:
            assert "\n" not in str(err)
            assert not (run / "job.sbatch").exists()
            continue
        script = run / "job.sbatch"
        text = script.read_text()
        block = _directive_block(text)
        # The block is intact: nothing ended it early and dropped the preemption settings after it.
        for needed in ("--signal=USR1@", "--requeue", "--open-mode=append", "--output="):
            assert any(needed in line for line in block), (option, value, block)
        _run_script(script, stubs, tmp_path / "srun.args")
        assert not mark.exists(), f"{option} {value!r} ran a command"
        args = (tmp_path / "srun.args").read_text().split("\0")[:-1]
        assert args[-5:] == ["fit", "--config", str(run / "config.yaml"), "--ckpt_path", "auto"]
    assert not mark.exists()


def test_accepted_hostile_values_arrive_as_one_literal_word(tmp_path, resolved, stubs):
    """A mount or an environment value with shell characters is passed on verbatim, not interpreted."""
    mark = tmp_path / MARK
    run = tmp_path / "run"
    mount, value = f"/d:/d;touch {mark};#", f"$(touch {mark}) `x` 'y'"
    argv = ["slurm", "--recipe", "r", "--nodes", "1", "--gpus-per-node", "1", "--accelerator", "cpu"]
    argv += ["--container-image", "img#x", "--container-mounts", mount, "--env", f"A={value}"]
    assert submit.main([*argv, "--run-dir", str(run), "--dry-run"]) == 0
    script = run / "job.sbatch"
    script.write_text(script.read_text().replace("\nsrun ", '\nprintf "%s" "$A" > "$STUB_LOG.env"\nsrun '))
    _run_script(script, stubs, tmp_path / "srun.args")
    assert not mark.exists()
    args = (tmp_path / "srun.args").read_text().split("\0")[:-1]
    assert f"--container-mounts={run}:{run},{mount}" in args
    assert (tmp_path / "srun.args.env").read_text() == value


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--signal-before", "-5"], "--signal-before must be 1 to 65535 seconds, got -5"),
        (["--signal-before", "0"], "--signal-before must be 1 to 65535 seconds, got 0"),
        (["--mem", "200G\n#SBATCH --x"], "is not a SLURM mem"),
        (["--account", "acct\ntouch X"], "is not a SLURM account"),
        (["--partition", "gpu;x"], "is not a SLURM partition"),
        (["--socket-ifname", "eth0;x"], "is not a network interface name"),
        (["--container-mounts", "/a:/b\nx"], "contains a control character"),
    ],
)
def test_bad_values_are_one_line(extra, message, tmp_path, resolved):
    argv = ["slurm", "--recipe", "r", "--nodes", "1", "--gpus-per-node", "1", "--accelerator", "cpu"]
    with pytest.raises(UserError, match="^[^\n]*$") as err:
        submit.main([*argv, *extra, "--run-dir", str(tmp_path / "run"), "--dry-run"])
    assert message in str(err.value)
    assert not (tmp_path / "run" / "job.sbatch").exists()


def test_recipe_names_stay_one_path_component(tmp_path, resolved, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("../../../x", "a/../../b", "..", "x\ny", "/abs/path"):
        path = new_run_dir(name, None, must_be_new=True)
        assert path.parent.parent == tmp_path / "runs", (name, path)
        assert path.parent.name not in ("", ".", "..") and "\n" not in path.parent.name


TORCHRUN_OPTIONS = ["--recipe", "--socket-ifname", "--rdzv-endpoint", "--run-dir"]


@pytest.mark.parametrize("option", TORCHRUN_OPTIONS)
def test_submit_torchrun_runs_nothing_a_value_carries(option, tmp_path, resolved, stubs, monkeypatch, capsys):
    monkeypatch.setattr(torchrun, "torchrun_executable", lambda: [str(stubs / "torchrun")])
    mark = tmp_path / MARK
    for i, value in enumerate(payloads(mark)):
        run = tmp_path / f"run{i}"
        argv = ["torchrun", "--recipe", "r", "--nnodes", "1", "--nproc-per-node", "1", "--accelerator", "cpu"]
        if option == "--run-dir":
            run = run / value
        else:
            argv += [option, value]
        try:
            submit.main([*argv, "--run-dir", str(run), "--dry-run"])
        except UserError as err:
            assert "\n" not in str(err)
            continue
        line = capsys.readouterr().out.strip()
        log = tmp_path / "torchrun.args"
        subprocess.run(["bash", "-c", line], check=True, env={**os.environ, "STUB_LOG": str(log)}, timeout=30)
        assert not mark.exists(), f"{option} {value!r} ran a command"
        assert log.read_text().split("\0")[:-1][-5:] == ["fit", "--config", str(run / "config.yaml"),
                                                     "--ckpt_path", "auto"]  # fmt: skip
        assert shlex.split(line)[0].endswith("torchrun") or "=" in shlex.split(line)[0]


def test_fit_run_names_from_a_recipe_stay_in_runs(monkeypatch):
    """`--recipe_name`, which a recipe file can set too, names a folder under runs/ and nothing else."""
    from bigtrain.run_names import RUN_DIR_ENV, default_run_dir

    for name in ("../../../x", "..", "a/b/../../c"):
        monkeypatch.delenv(RUN_DIR_ENV, raising=False)
        monkeypatch.delenv("SLURM_JOB_ID", raising=False)
        path = Path(default_run_dir(name))
        assert path.parent.parent == Path("runs") and ".." not in path.parts, (name, path)
