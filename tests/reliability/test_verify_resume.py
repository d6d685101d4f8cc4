"""`bigtrain verify-resume`: each family stops mid-epoch, resumes, and equals the uninterrupted run."""

from __future__ import annotations

import pytest
import torch

from bigtrain.commands.verify_resume import (
    choose_stop,
    first_loss_difference,
    main,
    parse,
    resumed_where_stopped,
    weight_difference,
)
from bigtrain.errors import UserError

# Tiny runs of each family's recipe. Between them: image augmentation, two loader workers, a change of
# worker count across the resume, dropout (transformer, rnn), gradient accumulation (rnn), VAE sampling
# noise, the GAN's two optimizer steps per batch, validation due at the stop step, and epoch boundaries
# crossed after the resume.
FAMILIES = {
    "cnn": (
        ["cnn/glyphs", "--data.num_samples", "256", "--data.batch_size", "32"]
        + ["--data.augment_crop", "1", "--data.num_workers", "2"],
        5,
    ),
    "rnn": (
        [
            "rnn/builtin-char",
            "--data.train_samples",
            "128",
            "--data.batch_size",
            "16",
            "--data.block_size",
            "32",
        ]
        + ["--model.net.dropout", "0.2", "--model.sample_tokens", "16", "--trainer.limit_val_batches", "2"]
        + ["--data.micro_batch_size", "8"],  # gradient accumulation over 2 micro-batches
        5,
    ),
    "transformer": (
        ["transformer/builtin-char", "--data.train_samples", "128", "--data.batch_size", "16"]
        + ["--data.block_size", "32", "--model.net.dropout", "0.1", "--model.sample_tokens", "16"]
        + ["--trainer.val_check_interval", "4", "--trainer.limit_val_batches", "2"],
        4,  # a validation is due right after the stop
    ),
    "autoencoder": (
        ["autoencoder/glyphs", "--data.num_samples", "256", "--data.batch_size", "32"]
        + ["--resume-args", "--data.num_workers 1"],
        5,
    ),
    "gan": (["gan/glyphs", "--data.num_samples", "256", "--data.batch_size", "32"], 5),
}


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_stop_mid_epoch_and_resume_is_exact(family, bigtrain_cmd):
    args, stop = FAMILIES[family]
    result = bigtrain_cmd("verify-resume", *args, "--steps", "12", "--stop-at", str(stop), timeout=900)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr[-3000:]
    assert "resume is exact: 12 steps" in out
    assert ": mid-epoch" in out  # the checkpoint is inside an epoch, not at its end
    assert "identical" in out.splitlines()[-1]


TWO_RANKS = ["--trainer.accelerator", "cpu", "--trainer.devices", "2"]


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
@pytest.mark.parametrize("family", ["transformer", "gan"])
def test_two_ranks_stop_mid_epoch_and_resume_exactly(family, strategy, bigtrain_cmd):
    args, stop = FAMILIES[family]
    args = [*args, *TWO_RANKS, "--trainer.strategy", strategy, "--steps", "12", "--stop-at", str(stop)]
    result = bigtrain_cmd("verify-resume", *args, timeout=1200)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "resume is exact: 12 steps" in result.stdout and ": mid-epoch" in result.stdout


@pytest.mark.slow
def test_a_perturbed_resume_is_reported_with_the_first_differing_step(bigtrain_cmd, tmp_path):
    args = ["gan/glyphs", "--data.num_samples", "256", "--data.batch_size", "32", "--steps", "8"]
    args += ["--stop-at", "4", "--resume-args", "--data.seed 1", "--dir", str(tmp_path / "runs")]
    result = bigtrain_cmd("verify-resume", *args, timeout=900)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr[-3000:]
    assert "resume is NOT exact" in out
    # The GAN makes 2 optimizer steps per batch: the first resumed batch ends at step 6.
    assert "losses: step 6 (epoch 0, batch 3 of 6), train/" in out
    assert "weight tensors differ, first net." in out
    assert (tmp_path / "runs" / "resumed.log").is_file()  # the runs are kept for a look


def test_usage_errors_exit_2_with_one_line(bigtrain_cmd):
    result = bigtrain_cmd("verify-resume", "cnn/glyphs", "--steps", "5", "--stop-at", "5")
    assert result.returncode == 2
    assert result.stderr.strip() == "bigtrain: error: verify-resume --stop-at must be between 1 and 4, got 5"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "needs a recipe first"),
        (["--steps", "4"], "needs a recipe first"),
        (["cnn/glyphs", "--steps"], "--steps needs a value"),
        (["cnn/glyphs", "--steps", "many"], "needs a whole number, got 'many'"),
        (["cnn/glyphs", "--steps", "1"], "--steps must be >= 2"),
        (["cnn/glyphs", "--stop-at=0"], "between 1 and 19, got 0"),
        (["cnn/glyphs", "--trainer.max_steps", "9"], "sets --trainer.max_steps itself"),
        (["cnn/glyphs", "--ckpt_path=last.ckpt"], "sets --ckpt_path itself"),
        (["cnn/glyps"], "unknown recipe"),
        (["missing.yaml"], "config file missing.yaml does not exist"),
    ],
)
def test_bad_command_lines(argv, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        main(argv)


def test_overrides_pass_through_and_resume_args_are_split():
    opts = parse(
        ["gan/glyphs", "--data.batch_size", "8", "--steps=6", "--resume-args", "--data.num_workers 2"]
    )
    assert (opts.steps, opts.stop_at) == (6, None)
    assert opts.overrides == ["--data.batch_size", "8"]
    assert opts.resume_args == ["--data.num_workers", "2"]


def test_an_own_option_takes_the_next_word_even_one_that_starts_with_a_dash():
    opts = parse(["gan/glyphs", "--resume-args", "--data.seed=1", "--dir", "-runs"])
    assert (opts.resume_args, opts.dir, opts.overrides) == (["--data.seed=1"], "-runs", [])
    with pytest.raises(UserError, match="--steps must be >= 2, got -3"):
        parse(["gan/glyphs", "--steps", "-3"])


def test_a_busy_dir_is_refused(tmp_path):
    (tmp_path / "something").write_text("x")
    with pytest.raises(UserError, match="not an empty folder"):
        main(["cnn/glyphs", "--dir", str(tmp_path)])


def _steps(losses: list[float], batches: int = 4) -> list[dict]:
    return [
        {
            "step": i + 1,
            "epoch": i // batches,
            "batch": i % batches,
            "batches": batches,
            "losses": {"loss": v},
        }
        for i, v in enumerate(losses)
    ]


def test_the_first_differing_loss_is_named():
    full = _steps([3.0, 2.5, 2.25, 2.0, 1.5, 1.25])
    assert first_loss_difference(full, full[:2], full[2:]) is None
    resumed = _steps([3.0, 2.5, 2.25, 2.0000002, 1.5, 1.25])[2:]
    assert first_loss_difference(full, full[:2], resumed) == (
        "step 4 (epoch 0, batch 4 of 4), loss: 2.0 uninterrupted vs 2.0000002 (resumed run)"
    )
    assert "trained 6 batches, stopped + resumed 5" in first_loss_difference(full, full[:2], full[2:5])
    skipped = [dict(s, step=s["step"] + 1) for s in full[3:]]  # a batch lost in the resume
    assert "resumed run at step 5" in first_loss_difference(full, full[:2], skipped)


def test_the_first_differing_weight_tensor_is_named_in_module_order():
    a = {"b.weight": torch.ones(2), "a.weight": torch.zeros(3)}
    b = {"b.weight": torch.ones(2), "a.weight": torch.tensor([0.0, 0.5, 0.0])}
    order = ["b.weight", "a.weight"]
    assert weight_difference({"tensors": a, "weights": order}, {"tensors": dict(a)}) == (2, None)
    count, message = weight_difference({"tensors": a, "weights": order}, {"tensors": b})
    assert (count, message) == (2, "1 of 2 weight tensors differ, first a.weight (max |difference| 0.5)")


def test_a_resume_that_does_not_continue_after_the_stop_is_named():
    steps = _steps([1.0] * 8)
    assert resumed_where_stopped(steps[:4], steps[4:]) is None  # the next epoch's first batch
    assert resumed_where_stopped(steps[:5], steps[5:]) is None
    assert resumed_where_stopped(steps[:5], steps[:3]) == (
        "the resumed run began at step 1 (epoch 0, batch 1 of 4), not with the batch after the stop at "
        "step 5 (epoch 1, batch 1 of 4)"
    )


def test_the_default_stop_is_mid_epoch_near_the_middle():
    steps = _steps([1.0] * 12)  # epochs of 4 batches: steps 4, 8, 12 end an epoch
    assert choose_stop(steps, 12) == 6
    assert choose_stop(_steps([1.0] * 8, batches=2), 8) == 3  # 3 and 5 are as near: the earlier one
    micro = _steps([1.0] * 16)  # 2 micro-batches a step: step 2 ends with batch 4, the end of epoch 0
    for i, entry in enumerate(micro):
        entry["step"] = i // 2 + 1
    assert choose_stop(micro, 4) == 1  # not 2, nearer the middle, but made by the last batch of epoch 0
