"""`--ckpt_path auto` with `--recipe` and no `--run_dir` names a new run directory: it resumes nothing
silently, and names the run the user most likely meant, with the command that resumes it."""

from __future__ import annotations

QUICK = [
    "--recipe", "transformer/builtin-char", "--trainer.max_steps", "2", "--trainer.enable_progress_bar",
    "false", "--trainer.limit_val_batches", "1", "--data.train_samples", "64", "--data.num_workers", "0",
]  # fmt: skip


def test_auto_without_run_dir_points_to_the_newest_run(bigtrain_cmd, tmp_path):
    fresh = bigtrain_cmd("fit", *QUICK, "--ckpt_path", "auto", cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr[-2000:]  # nothing to resume anywhere: starts fresh
    assert "starting fresh" in fresh.stdout
    (first,) = (tmp_path / "runs" / "transformer-builtin-char").iterdir()

    again = bigtrain_cmd("fit", *QUICK, "--ckpt_path", "auto", cwd=tmp_path)
    assert again.returncode == 2 and again.stderr.strip().count("\n") == 0, again.stderr[-2000:]
    named = first.relative_to(tmp_path)  # as the user's own runs/ folder names it
    assert f"the newest run of this recipe with a checkpoint is {named}:" in again.stderr
    assert f"`bigtrain fit --config {named / 'config.yaml'} --ckpt_path auto`" in again.stderr
    assert len(list(first.parent.iterdir())) == 1  # the refused run left no directory behind

    resumed = bigtrain_cmd("fit", "--config", str(first / "config.yaml"), "--ckpt_path", "auto",
                           "--trainer.max_steps", "3", cwd=tmp_path)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "starting fresh" not in resumed.stdout


def test_a_resume_that_changes_what_is_trained_is_refused_naming_the_key(bigtrain_cmd, tmp_path):
    run = tmp_path / "run"
    first = bigtrain_cmd("fit", *QUICK, "--run_dir", str(run), cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    saved = (run / "config.yaml").read_text()

    changed = bigtrain_cmd("fit", *QUICK, "--run_dir", str(run), "--ckpt_path", "auto",
                           "--model.optim.lr", "0.5", cwd=tmp_path)  # fmt: skip
    assert changed.returncode == 2 and changed.stderr.strip().count("\n") == 0, changed.stderr[-2000:]
    assert "resuming" in changed.stderr and "model.init_args.optim.lr=0.5" in changed.stderr
    assert (run / "config.yaml").read_text() == saved  # the run's record is left as it was
    deliberate = bigtrain_cmd("fit", *QUICK, "--run_dir", str(run), "--ckpt_path", "auto",
                              "--model.optim.lr", "0.5", "--resume_check", "false", cwd=tmp_path)  # fmt: skip
    assert deliberate.returncode == 0 and "starting fresh" not in deliberate.stdout, deliberate.stderr[-2000:]

    # How long and where it runs may change on a resume: more steps, with the run's own config.
    longer = bigtrain_cmd("fit", "--config", str(run / "config.yaml"), "--ckpt_path", "auto",
                          "--trainer.max_steps", "3", "--trainer.devices", "1", cwd=tmp_path)  # fmt: skip
    assert longer.returncode == 0, longer.stderr[-2000:]
    assert "starting fresh" not in longer.stdout


def test_only_the_keys_that_define_the_training_are_compared():
    from bigtrain.run_config import defining

    base = {"seed_everything": 0, "model": {"init_args": {"optim": {"lr": 0.1}}}, "data": {"batch_size": 8},
            "trainer": {"max_steps": 10, "devices": 2, "precision": "32", "strategy": "ddp"},
            "checkpoint": {"keep_last": 1}}  # fmt: skip
    other = {**base, "trainer": {**base["trainer"], "max_steps": 99, "devices": 4, "strategy": "fsdp"},
             "checkpoint": {"keep_last": 5}}  # fmt: skip
    assert defining(base) == defining(other)
    assert defining(base) != defining({**base, "trainer": {**base["trainer"], "precision": "bf16-mixed"}})
    assert defining(base) != defining({**base, "data": {"batch_size": 16}})
    assert defining(base) == defining({**base, "data": {"batch_size": 8, "num_workers": 4}})
