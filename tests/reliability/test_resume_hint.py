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
