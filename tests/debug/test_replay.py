"""`bigtrain debug --from RUN --step K --rank R`: a 2-rank FSDP run (gloo, CPU) whose rank 1 meets a poisoned
sample at step K+1, replayed from its sharded checkpoint of step K in this one process."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DistributedSampler

from bigtrain.checkpoints.load import load_checkpoint
from bigtrain.checkpoints.manifest import build_manifest, write_manifest
from bigtrain.commands.debug import main
from bigtrain.data import ImageDataModule
from bigtrain.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
K = 2
"""The checkpoint's step; the poisoned sample is in rank 1's batch of step K+1."""
TRAIN, GLOBAL, RANKS = 64, 8, 2
"""80 glyphs less a validation fifth; a global batch of 8 is 4 rows a rank."""


class PoisonedImages(ImageDataModule):
    """The glyphs with one NaN pixel in the training image at dataset index `poison`."""

    def __init__(self, poison: int = -1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.poison = poison

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        train = self.train_set
        if train.x.dtype == torch.uint8:
            train.x = train.x.float() / 255.0  # the same images; only a float tensor can hold a NaN
        if self.poison >= 0:
            train.x[self.poison, 0, 0, 0] = float("nan")


def batch_of(rank: int, step: int) -> list[int]:
    """Dataset indices a rank takes at 1-based `step` of epoch 0, by torch's own sampler arithmetic."""
    rows = GLOBAL // RANKS
    order = list(DistributedSampler(range(TRAIN), RANKS, rank, shuffle=True, seed=0, drop_last=True))
    return order[(step - 1) * rows : step * rows]


POISON = batch_of(1, K + 1)[1]
EVERY, CAUGHT_UP = 4, 6
"""The catch-up test replays step CAUGHT_UP + 1 of a run copy holding only its step-EVERY checkpoint."""


def _fit(root: Path, name: str, strategy: str, *extra: str) -> list[str]:
    return [
        "--recipe", "cnn/glyphs", "--data.num_samples", "80", "--data.batch_size", str(GLOBAL),
        "--model.net.preset", "tiny", "--trainer.accelerator", "cpu", "--trainer.limit_val_batches", "0",
        "--trainer.num_sanity_val_steps", "0", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.logger", "false",
        "--trainer.strategy", strategy, "--trainer.devices", str(RANKS), "--trainer.max_steps", str(K + 2),
        "--checkpoint.every_n_steps", str(K), "--checkpoint.keep_last", "5", "--run_dir", str(root / name),
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """One 2-rank launch: FSDP with a sharded checkpoint every K steps, stopped by the NaN of step K+1
    (`poisoned`); DDP in micro-batches of 2 with a checkpoint file every K steps (`ddp`, `synced`); FSDP in
    micro-batches of 2 with a sharded checkpoint every step (`every_step`)."""
    sys.path.insert(0, str(ROOT / "tests" / "distributed"))
    from dist_helpers import launch, wait

    root = tmp_path_factory.mktemp("replay")
    poison = ["--data", f"{__name__}.PoisonedImages", "--data.poison", str(POISON)]
    spec = {
        "poisoned": _fit(root, "poisoned", "fsdp", *poison),
        # BatchNorm over each rank's own share: a rank's step then depends on its batch alone.
        "ddp": _fit(
            root,
            "ddp",
            "ddp",
            "--trainer.strategy.sync_batchnorm",
            "false",
            "--data.micro_batch_size",
            "2",
            "--trainer.callbacks+=recorder.Record",
        ),  # fmt: skip
        "synced": _fit(
            root, "synced", "ddp", "--data.micro_batch_size", "2", "--trainer.callbacks+=recorder.Record"
        ),
        # A checkpoint every step: the reference weights of each step for the catch-up from an older one.
        "every_step": _fit(
            root,
            "every_step",
            "fsdp",
            "--data.micro_batch_size",
            "2",
            "--trainer.callbacks+=recorder.Record",
            "--trainer.max_steps",
            str(CAUGHT_UP + 1),
            "--checkpoint.every_n_steps",
            "1",
            "--checkpoint.keep_last",
            str(CAUGHT_UP + 1),
        ),  # fmt: skip
    }
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PYTHONPATH", path)  # the ranks import this module's DataModule
        wait(launch(spec, RANKS, root), root, RANKS)
    return root


@pytest.fixture
def run(runs) -> Path:
    return runs / "poisoned"


def replay(run: Path, tmp_path: Path, monkeypatch, capsys, *args: str) -> tuple[int, str, dict]:
    monkeypatch.chdir(tmp_path)
    code = main(["--from", str(run), *args])
    out = capsys.readouterr().out
    (found,) = tmp_path.glob("runs/*/*/debug.json")
    return code, out, json.loads(found.read_text())


def rows(report: dict) -> dict[str, dict]:
    return {c["check"]: c for c in report["checks"]}


@pytest.mark.slow
@pytest.mark.distributed
def test_replay_names_the_module_and_the_poisoned_sample_of_rank_1(run, tmp_path, monkeypatch, capsys):
    assert POISON not in batch_of(0, K + 1)
    code, out, report = replay(run, tmp_path, monkeypatch, capsys, "--step", str(K), "--rank", "1")
    assert code == 1, out
    assert (run / "error.txt").read_text().startswith(f"non-finite loss at step {K + 1};")  # the run's own
    # The guard's "last good state" of step K is the newest: it has handed out (not taken) step K+1's batch.
    assert f"checkpoint nonfinite-step={K + 1}.ckpt (step {K}, sharded) of a run on 2 rank(s)" in out
    checks = rows(report)
    assert checks["samples"]["details"]["samples"] == batch_of(1, K + 1)
    assert checks["samples"]["details"]["nonfinite_input_samples"] == [POISON]
    assert checks["samples"]["details"]["nonfinite_output_samples"] == [POISON]
    assert checks["nan"]["status"] == "FAIL"
    assert checks["nan"]["details"]["forward"]["module"] == "net.stem.0"
    assert f"step {K + 1}: net.stem.0 (Conv) output non-finite" in out
    assert f"NaN/Inf inputs in sample(s) {POISON} (batch row(s) 1)" in out
    assert "BatchNorm normalised over all 2 shares in the run, over this one here: the loss is not" in out
    assert "--global-batch replays every share together" in out


@pytest.mark.slow
@pytest.mark.distributed
def test_rank_0_at_the_same_step_passes(run, tmp_path, monkeypatch, capsys):
    periodic = tmp_path / "periodic"  # without the guard's checkpoint: the one saved after step K
    shutil.copytree(run, periodic, symlinks=True)
    for path in (periodic / "checkpoints").glob("nonfinite-*"):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    code, out, report = replay(periodic, tmp_path, monkeypatch, capsys, "--rank", "0")  # the newest: K
    assert code == 0, out
    assert f"checkpoint epoch=0-step={K}.ckpt (step {K}, sharded) of a run on 2 rank(s)" in out
    checks = rows(report)
    assert checks["samples"]["details"]["samples"] == batch_of(0, K + 1)
    assert {c["status"] for c in report["checks"]} == {"pass"}


@pytest.mark.slow
@pytest.mark.distributed
def test_a_ddp_step_in_micro_batches_after_the_checkpoint(runs, tmp_path, monkeypatch, capsys):
    code, out, report = replay(
        runs / "ddp", tmp_path, monkeypatch, capsys, "--step", str(K + 1), "--rank", "1", "--no-catch-up"
    )
    assert code == 0, out
    assert f"checkpoint epoch=0-step={K}.ckpt (step {K}) of a run on 2 rank(s)" in out
    assert f"weights of step {K}: the 1 step(s) after it are not re-trained (--no-catch-up)" in out
    assert "catching up" not in out
    assert "(2 micro-batches)" in out
    assert "BatchNorm normalised" not in out
    assert rows(report)["samples"]["details"]["samples"] == batch_of(1, K + 2)


@pytest.mark.slow
@pytest.mark.distributed
def test_a_catch_up_from_an_older_sharded_checkpoint_replays_on_the_runs_weights(
    runs, tmp_path, monkeypatch, capsys
):
    reference = runs / "every_step"
    every = tmp_path / "every"  # the run as if it had checkpointed every EVERY steps
    shutil.copytree(reference, every, symlinks=True)
    for path in (every / "checkpoints").iterdir():
        if not path.name.startswith(f"epoch=0-step={EVERY}.ckpt"):
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    args = ("--step", str(CAUGHT_UP), "--rank", "1", "--global-batch")
    code, out, report = replay(every, tmp_path, monkeypatch, capsys, *args)
    assert code == 0, out
    assert f"checkpoint epoch=0-step={EVERY}.ckpt (step {EVERY}, sharded) of a run on 2 rank(s)" in out
    assert f"caught up from step {EVERY} to {CAUGHT_UP} ({CAUGHT_UP - EVERY} steps on one device, " in out
    assert f"catching up: step {CAUGHT_UP}/{CAUGHT_UP} (" in out
    # Step K+1's loss (two micro-batches) is the one the run recorded, on the weights of step K.
    recorded = json.loads((reference / "losses.json").read_text())["train/loss"]
    losses = rows(report)["samples"]["details"]["losses"]
    assert losses == pytest.approx(recorded[2 * CAUGHT_UP : 2 * CAUGHT_UP + 2], rel=1e-5, abs=1e-6)
    (caught,) = tmp_path.glob(f"runs/*/*/catch-up/checkpoints/*step={CAUGHT_UP}.ckpt")
    ours = load_checkpoint(caught)["state_dict"]
    theirs = load_checkpoint(reference / "checkpoints" / f"epoch=0-step={CAUGHT_UP}.ckpt")["state_dict"]
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        torch.testing.assert_close(ours[key], value, rtol=0, atol=1e-6, msg=key)


@pytest.mark.slow
@pytest.mark.distributed
def test_both_ranks_replayed_give_the_losses_the_run_recorded(runs, tmp_path, monkeypatch, capsys):
    recorded = json.loads((runs / "ddp" / "losses.json").read_text())["train/loss"]
    replayed = []
    for rank in (0, 1):
        (tmp_path / str(rank)).mkdir()
        args = ("--step", str(K), "--rank", str(rank))
        code, out, report = replay(runs / "ddp", tmp_path / str(rank), monkeypatch, capsys, *args)
        assert code == 0, out
        replayed.append(rows(report)["samples"]["details"]["losses"])
    # The run recorded each micro-batch's loss, averaged over the ranks: step K+1's are 2K and 2K+1.
    assert len(recorded) == 2 * (K + 2)
    for j in (0, 1):
        mean = (replayed[0][j] + replayed[1][j]) / 2
        assert mean == pytest.approx(recorded[2 * K + j], rel=1e-5), (replayed, recorded)


@pytest.mark.slow
@pytest.mark.distributed
def test_the_global_batch_replayed_gives_the_loss_a_synced_batchnorm_run_recorded(
    runs, tmp_path, monkeypatch, capsys
):
    recorded = json.loads((runs / "synced" / "losses.json").read_text())["train/loss"]
    args = ("--step", str(K), "--rank", "1", "--global-batch")
    code, out, report = replay(runs / "synced", tmp_path, monkeypatch, capsys, *args)
    assert code == 0, out
    assert "step 3 on all 2 data-parallel shares joined (rank 1's: rows 2..3 of each batch;" in out
    assert "BatchNorm normalised" not in out
    samples = rows(report)["samples"]["details"]
    share = [batch_of(r, K + 1) for r in (0, 1)]
    assert samples["samples"] == share[0][:2] + share[1][:2] + share[0][2:] + share[1][2:]
    assert samples["losses"] == pytest.approx(recorded[2 * K : 2 * K + 2], rel=1e-5)


@pytest.mark.slow
@pytest.mark.distributed
def test_a_catch_up_from_a_ddp_checkpoint_file_gives_the_next_steps_recorded_loss(
    runs, tmp_path, monkeypatch, capsys
):
    recorded = json.loads((runs / "synced" / "losses.json").read_text())["train/loss"]
    args = ("--step", str(K + 1), "--rank", "0", "--global-batch")
    code, out, report = replay(runs / "synced", tmp_path, monkeypatch, capsys, *args)
    assert code == 0, out
    assert f"caught up from step {K} to {K + 1} (1 steps on one device, " in out
    losses = rows(report)["samples"]["details"]["losses"]
    assert losses == pytest.approx(recorded[2 * K + 2 : 2 * K + 4], rel=1e-5)


@pytest.mark.slow
@pytest.mark.distributed
def test_the_global_batch_of_the_poisoned_step_names_the_sample(run, tmp_path, monkeypatch, capsys):
    args = ("--step", str(K), "--rank", "1", "--global-batch")
    code, out, report = replay(run, tmp_path, monkeypatch, capsys, *args)
    assert code == 1, out
    details = rows(report)["samples"]["details"]
    assert details["samples"] == batch_of(0, K + 1) + batch_of(1, K + 1)
    assert details["nonfinite_input_samples"] == details["nonfinite_output_samples"] == [POISON]


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--step", str(K), "--rank", "2"], "--rank 2 is not a rank of this run: it ran on 2 rank(s), 0..1"),
        (["--step", str(K - 1)], f"has no checkpoint at or before step {K - 1} (its checkpoints are at step"),
        (["--step", str(K + 2)], f"--step {K + 2} is beyond the run: it trains {K + 2} steps"),
    ],
)
def test_a_step_or_rank_the_run_does_not_have_is_one_line(run, args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        UserError, match=f"^{_escape(message)}" if message.startswith("--") else _escape(message)
    ):
        main(["--from", str(run), *args])


@pytest.mark.slow
@pytest.mark.distributed
def test_a_broken_or_hostile_checkpoint_is_refused_in_one_line(run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    copy = tmp_path / "run"
    shutil.copytree(run, copy, symlinks=True)
    folders = [p for p in (copy / "checkpoints").glob("*.ckpt") if p.is_dir() and not p.is_symlink()]
    for sharded in folders:
        shard = next(sharded.glob("*.distcp"))
        shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(UserError, match="is broken \\(.*distcp has 100 bytes, the manifest says"):
        main(["--from", str(copy), "--step", str(K)])

    shutil.rmtree(copy)
    shutil.copytree(run, copy, symlinks=True)
    for sharded in folders:
        (sharded / "meta.pt").write_bytes(pickle.dumps(_Evil(), protocol=2))
        write_manifest(sharded, build_manifest(sharded, step=K, epoch=0))  # the attacker rewrites it too
    with pytest.raises(
        UserError, match="needs arbitrary code to load \\(GLOBAL .*system\\); bigtrain refuses"
    ):
        main(["--from", str(copy), "--step", str(K)])
    assert not (tmp_path / "pwned").exists()


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def _escape(text: str) -> str:
    import re

    return re.escape(text)
