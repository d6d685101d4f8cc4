"""`bigtrain debug --from`: what is refused before a run's checkpoint or classes load, and the arithmetic
that finds a later step's batch (no launch)."""

from __future__ import annotations

from re import escape as _escape

import pytest

from bigtrain.checkpoints.manifest import build_manifest, write_manifest
from bigtrain.commands.debug import main
from bigtrain.errors import UserError


def test_a_folder_that_is_not_a_run_is_one_line(tmp_path):
    with pytest.raises(
        UserError, match="is not a run directory of `bigtrain fit` \\(no config.yaml in it\\)"
    ):
        main(["--from", str(tmp_path)])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--step", "2"], "--step needs --from RUN_DIR (the run whose step to replay)"),
        (
            ["cnn/glyphs", "--from", "r"],
            "--from replays a run as its config.yaml says: leave out 'cnn/glyphs'",
        ),
        (["--from", "r", "--tiny"], "--from replays a run as its config.yaml says: leave out --tiny"),
        (["--from", "r", "--model.optim.lr", "0.1"], "leave out --model.optim.lr"),
        (["--from", "r", "--rank", "-1"], "--rank must be >= 0, got -1"),
        (["--global-batch"], "--global-batch needs --from RUN_DIR"),
        (["--no-catch-up"], "--no-catch-up needs --from RUN_DIR"),
        (["--catch-up-max", "5"], "--catch-up-max needs --from RUN_DIR"),
        (["--from", "r", "--catch-up-max", "-1"], "--catch-up-max must be >= 0, got -1"),
        (
            ["--from", "r", "--no-catch-up", "--catch-up-max", "5"],
            "--no-catch-up and --catch-up-max contradict each other: give one",
        ),
    ],
)
def test_from_takes_only_step_rank_and_details(argv, message):
    with pytest.raises(UserError, match=_escape(message)):
        main(argv)


@pytest.mark.parametrize(("args", "limit"), [([], 10_000), (["--catch-up-max", "40"], 40)])
def test_a_catch_up_longer_than_the_limit_is_refused_before_anything_loads(args, limit, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("trainer:\n  max_steps: 100000\n")
    saved = run / "checkpoints" / "epoch=0-step=5.ckpt"
    saved.write_bytes(b"not read: the limit is checked first")
    write_manifest(saved, build_manifest(saved, step=5, epoch=0))
    step = 5 + limit + 1
    with pytest.raises(
        UserError,
        match=_escape(
            f"the newest checkpoint at or before step {step} is at step 5: catching up would train "
            f"{limit + 1} steps on one device, more than --catch-up-max {limit}; give a larger"
        ),
    ):
        main(["--from", str(run), "--step", str(step), *args])
    main_ok = ["--from", str(run), "--step", str(step - 1), *args]  # within the limit: it loads the file
    with pytest.raises(UserError, match="epoch=0-step=5.ckpt"):
        main(main_ok)


def _saved(step: int, batches: int) -> dict:
    progress = {"total": {"processed": batches}, "current": {"ready": batches, "processed": batches}}
    return {"global_step": step, "loops": {"fit_loop": {"epoch_loop.batch_progress": progress}}}


def test_the_batch_of_a_later_step_is_found_at_the_runs_own_batches_per_step():
    from bigtrain.debug.replay_state import batches_ahead, epoch_length, position

    assert batches_ahead(_saved(4, 2), 2, 1) == 1  # a GAN: two optimizer steps a batch
    assert batches_ahead(_saved(2, 4), 1, 2) == 2  # two micro-batches a step
    assert batches_ahead({}, 3, 2) == 6  # no loop state: the accumulation decides
    assert epoch_length(10, 4) == 4 and epoch_length(10, 0.5) == 5 and epoch_length(10, None) == 10
    # An epoch handed out to its end continues with the next epoch's first batch.
    assert position({"epoch": 1, "batches": 8}, 0, 8) == (2, 0)
    assert position({"epoch": 0, "batches": 6}, 3, 8) == (1, 1)


def test_a_config_yaml_that_would_expand_without_bound_is_refused_before_it_is_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    layers = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    layers += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    (tmp_path / "config.yaml").write_text("\n".join(layers) + "\ntrainer: *a8\n")
    with pytest.raises(UserError, match="config.yaml expands to more than .* values through its aliases"):
        main(["--from", str(tmp_path)])


def test_a_catch_up_prints_a_line_every_tenth_of_its_steps_and_at_the_last():
    from bigtrain.debug.replay_catchup import CatchUpProgress

    assert [s for s in range(101, 141) if CatchUpProgress(100, 140).due(s)] == list(range(104, 141, 4))
    assert [s for s in range(5, 12) if CatchUpProgress(4, 11).due(s)] == list(range(5, 12))
    assert [s for s in range(1, 26) if CatchUpProgress(0, 25).due(s)] == [*range(2, 25, 2), 25]
