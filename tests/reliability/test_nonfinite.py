"""The non-finite guard: a NaN loss or gradient at step k is skipped, or the run stops after saving k-1."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bigtrain.callbacks.nonfinite import (
    NonFiniteError,
    NonFiniteGuard,
    any_nonfinite,
    checksum,
    first_nonfinite,
    persistent_buffers,
)
from bigtrain.checkpoints.load import load_checkpoint
from bigtrain.errors import UserError

HELPERS = Path(__file__).resolve().parent  # nonfinite_helpers.py, importable by the subprocesses
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.limit_val_batches", "1"]
SMALL_CNN = ["fit", "--recipe", "cnn/glyphs", "--data.num_samples", "512", *QUIET]


def _cli_args(
    run_dir: Path, poison_step: int, record: list[int], poison_rank: int | None = None
) -> list[str]:
    rank = ["--trainer.callbacks.rank", str(poison_rank)] if poison_rank is not None else []
    return [
        "--run_dir",
        str(run_dir),
        "--trainer.callbacks+=nonfinite_helpers.PoisonBatch",
        "--trainer.callbacks.step",
        str(poison_step),
        *rank,
        "--trainer.callbacks+=nonfinite_helpers.RecordWeights",
        "--trainer.callbacks.folder",
        str(run_dir / "recorded"),
        "--trainer.callbacks.steps",
        json.dumps(record),
    ]


def _run(bigtrain_cmd, *args: str):
    return bigtrain_cmd(*args, env={"PYTHONPATH": str(HELPERS)}, timeout=300)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_equal_states(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"differ: {different[:5]}"


def test_stop_saves_the_state_before_the_bad_step(bigtrain_cmd, tmp_path):
    """A NaN batch at step 4 of a ResNet (with BatchNorm): exit 2 naming step 4 and the loss; the checkpoint
    holds exactly the weights and BatchNorm statistics after step 3, all finite."""
    run_dir = tmp_path / "run"
    out = _run(bigtrain_cmd, *SMALL_CNN, "--trainer.max_steps", "6", *_cli_args(run_dir, 4, [3]))
    assert out.returncode == 2, out.stderr[-3000:]
    last = out.stderr.strip().splitlines()[-1]
    ckpt_path = run_dir / "checkpoints" / "nonfinite-step=4.ckpt"
    assert last == f"bigtrain: error: non-finite loss at step 4; saved the state after step 3 to {ckpt_path}"
    assert "Traceback" not in out.stderr
    checkpoint = load_checkpoint(ckpt_path)
    assert checkpoint["global_step"] == 3
    state = checkpoint["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    _assert_equal_states(state, _weights(run_dir / "recorded" / "step3-rank0.pt"))
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))


def test_skip_leaves_the_weights_alone_and_goes_on(bigtrain_cmd, tmp_path):
    """Skip mode: step 3's NaN batch changes nothing (weights after step 3 == after step 2), training reaches
    max_steps, and metrics.json counts the skipped step."""
    run_dir = tmp_path / "run"
    args = [
        *SMALL_CNN,
        "--trainer.max_steps",
        "5",
        "--nonfinite.mode",
        "skip",
        *_cli_args(run_dir, 3, [2, 3, 5]),
    ]
    out = _run(bigtrain_cmd, *args)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "bigtrain: warning: non-finite loss at step 3: step skipped (1 of at most 10)" in out.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 5 and metrics["nonfinite_skipped"] == 1
    recorded = run_dir / "recorded"
    _assert_equal_states(_weights(recorded / "step3-rank0.pt"), _weights(recorded / "step2-rank0.pt"))
    final = _weights(recorded / "step5-rank0.pt")
    assert all(torch.isfinite(v).all() for v in final.values() if v.is_floating_point())
    assert not torch.equal(final["net.head.weight"], _weights(recorded / "step3-rank0.pt")["net.head.weight"])


@pytest.mark.slow
@pytest.mark.distributed
def test_ranks_agree_when_one_rank_goes_non_finite(bigtrain_cmd, tmp_path):
    """DDP on 2 CPU ranks, NaN only in rank 1's batch at step 3: both ranks skip that step together and stay
    identical (rank 0's own loss was finite: the all-reduced flag decides)."""
    run_dir = tmp_path / "run"
    ddp = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]
    args = [*SMALL_CNN, *ddp, "--trainer.max_steps", "5", "--nonfinite.mode", "skip"]
    out = _run(bigtrain_cmd, *args, *_cli_args(run_dir, 3, [2, 3, 5], poison_rank=1))
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stderr.count("non-finite loss at step 3: step skipped") == 1  # said once, by rank 0
    assert json.loads((run_dir / "metrics.json").read_text())["nonfinite_skipped"] == 1
    recorded = run_dir / "recorded"
    for step in (2, 3, 5):
        _assert_equal_states(
            _weights(recorded / f"step{step}-rank0.pt"), _weights(recorded / f"step{step}-rank1.pt")
        )
    _assert_equal_states(_weights(recorded / "step3-rank1.pt"), _weights(recorded / "step2-rank1.pt"))


@pytest.mark.distributed
def test_sharded_ranks_name_the_same_first_culprit(bigtrain_cmd, tmp_path):
    """FSDP on 2 CPU ranks: at step 2 rank 1 has a NaN in its shard of an early gradient, rank 0 in its
    shard of the last one. Both stop naming the early one (the first culprit over all ranks)."""
    run_dir = tmp_path / "run"
    fsdp = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "fsdp"]
    poison = ["--trainer.callbacks+=nonfinite_helpers.PoisonShard", "--trainer.callbacks.step", "2"]
    out = _run(
        bigtrain_cmd, *SMALL_CNN, *fsdp, "--trainer.max_steps", "4", "--run_dir", str(run_dir),
        *poison, "--trainer.callbacks.folder", str(run_dir / "poisoned"),
    )  # fmt: skip
    assert out.returncode == 2, out.stderr[-3000:]
    early = (run_dir / "poisoned" / "poisoned-rank1.txt").read_text()
    assert early != (run_dir / "poisoned" / "poisoned-rank0.txt").read_text()
    named = re.findall(r"non-finite gradient of '([^']+)' at step 2;", out.stderr)
    assert named and set(named) == {early}, out.stderr[-3000:]


def test_stop_works_for_the_gan_manual_optimization(bigtrain_cmd, tmp_path):
    """The GAN steps its own optimizers; a NaN batch makes the discriminator's loss NaN at its step."""
    run_dir = tmp_path / "run"
    gan = ["fit", "--recipe", "gan/glyphs", "--data.num_samples", "256", "--model.net.preset", "tiny", *QUIET]
    # Steps count both nets' updates: step 5 is the third batch's discriminator step.
    out = _run(bigtrain_cmd, *gan, "--trainer.max_steps", "8", *_cli_args(run_dir, 5, [4]))
    assert out.returncode == 2, out.stderr[-3000:]
    assert out.stderr.strip().splitlines()[-1].startswith("bigtrain: error: non-finite loss at step 5;")
    state = load_checkpoint(run_dir / "checkpoints" / "nonfinite-step=5.ckpt")["state_dict"]
    _assert_equal_states(state, _weights(run_dir / "recorded" / "step4-rank0.pt"))


# In one process: the gradient culprit, the skip limit, manual optimization --------------------------------


class Tiny(LightningModule):
    """y = w2(relu(w1 x)); `bad_grad` makes the gradient of `second.weight` infinite at chosen steps."""

    def __init__(self, bad_steps: set[int], where: str = "loss", manual: bool = False) -> None:
        super().__init__()
        self.first = nn.Linear(4, 8)
        self.norm = nn.BatchNorm1d(8)
        self.second = nn.Linear(8, 1)
        self.bad_steps, self.where = bad_steps, where
        self.automatic_optimization = not manual
        self.second.weight.register_hook(self._poison_grad)

    def _poison_grad(self, grad: torch.Tensor) -> torch.Tensor:
        bad = self.where == "grad" and self.trainer.global_step + 1 in self.bad_steps
        return grad * float("inf") if bad else grad

    def training_step(self, batch, batch_idx):  # noqa: D102
        (x,) = batch
        loss = self.second(torch.relu(self.norm(self.first(x)))).pow(2).mean()
        if self.where == "loss" and self.trainer.global_step + 1 in self.bad_steps:
            loss = loss * float("nan")
        if self.automatic_optimization:
            return loss
        opt = self.optimizers()
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        return None

    def configure_optimizers(self):  # noqa: D102
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def _fit(
    module: Tiny, guard: NonFiniteGuard, tmp_path: Path, steps: int = 6, ckpt_path=None, **trainer
) -> Trainer:
    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(64, 4)), batch_size=8)
    trainer = Trainer(
        **trainer,
        max_steps=steps,
        callbacks=[guard],
        default_root_dir=tmp_path,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, data, ckpt_path=ckpt_path)
    return trainer


def test_names_the_first_parameter_with_a_non_finite_gradient(tmp_path):
    with pytest.raises(NonFiniteError) as caught:
        _fit(Tiny({3}, where="grad"), NonFiniteGuard("stop"), tmp_path)
    assert str(caught.value).startswith("non-finite gradient of 'second.weight' at step 3;")
    assert load_checkpoint(tmp_path / "checkpoints" / "nonfinite-step=3.ckpt")["global_step"] == 2


@pytest.mark.parametrize("manual", [False, True], ids=["automatic", "manual"])
def test_skip_until_the_limit_then_stop(tmp_path, manual):
    module = Tiny({2, 4, 5}, manual=manual)
    with pytest.raises(NonFiniteError) as caught:
        _fit(module, NonFiniteGuard("skip", max_skips=2), tmp_path)
    assert "non-finite loss at step 5 after 2 skipped step(s) (nonfinite.max_skips=2)" in str(caught.value)
    assert all(torch.isfinite(p).all() for p in module.parameters())
    assert all(torch.isfinite(b).all() for _, b in persistent_buffers(module))


def test_skip_changes_nothing_and_off_lets_nan_through(tmp_path):
    skipped = Tiny({1, 2, 3})
    before = {k: v.clone() for k, v in skipped.state_dict().items()}
    trainer = _fit(skipped, NonFiniteGuard("skip"), tmp_path / "skip", steps=3)
    assert trainer.global_step == 3 and trainer.callbacks[0].skipped == 3
    # Every step was skipped: the weights and BatchNorm statistics and count are the initial ones.
    after = skipped.state_dict()
    changed = [
        k for k, v in before.items() if k != "norm.num_batches_tracked" and not torch.equal(v, after[k])
    ]
    assert not changed
    unguarded = Tiny({2})
    _fit(unguarded, NonFiniteGuard("off"), tmp_path / "off", steps=3)
    assert not torch.isfinite(unguarded.first.weight).all()


def test_first_nonfinite_and_bad_settings():
    params = [nn.Parameter(torch.zeros(2)) for _ in range(4)]
    assert int(first_nonfinite(params)) == 4  # no gradients at all
    for p in params:
        p.grad = torch.zeros(2)
    params[3].grad[1] = float("nan")
    params[2].grad[0] = float("-inf")
    assert int(first_nonfinite(params)) == 2
    with pytest.raises(UserError, match="max_skips"):
        NonFiniteGuard("skip", max_skips=-1)


def _finite(value: torch.Tensor) -> bool:
    return math.isfinite(float(value))


def test_checksum_is_not_finite_for_any_nan_or_inf_and_finite_for_large_finite_half_values():
    params = [nn.Parameter(torch.zeros(3, dtype=dtype)) for dtype in (torch.float16, torch.float32)]
    assert _finite(checksum([], params))  # no gradients at all
    params[0].grad = torch.full((3,), 60000.0, dtype=torch.float16)  # finite, but its fp16 2-norm overflows
    params[1].grad = torch.ones(3)
    assert _finite(checksum([], params))
    for bad in (float("nan"), float("inf"), float("-inf")):
        params[1].grad = torch.tensor([1.0, bad, 1.0])
        assert not _finite(checksum([], params))


def test_checksum_covers_every_loss_of_the_step():
    """With gradient accumulation a step has several losses: one bad one is enough."""
    params = [nn.Parameter(torch.zeros(2))]
    params[0].grad = torch.ones(2)
    good, half = torch.tensor(2.0), torch.tensor(1.0, dtype=torch.bfloat16)
    assert _finite(checksum([good, half], params))
    assert not _finite(checksum([good, torch.tensor(float("nan")), half], params))
    assert not _finite(checksum([torch.tensor(float("inf"))], []))  # the losses alone (fp16 GradScaler)


def test_checksum_takes_an_empty_shard():
    """Under FSDP a rank's shard of a parameter smaller than the world is empty: nothing there is bad."""
    params = [nn.Parameter(torch.zeros(0)), nn.Parameter(torch.zeros(2))]
    params[0].grad, params[1].grad = torch.zeros(0), torch.ones(2)
    assert _finite(checksum([], params))
    params[1].grad[0] = float("nan")
    assert not _finite(checksum([], params))


def test_any_nonfinite_of_no_tensors_is_false():
    assert not bool(any_nonfinite([]))
    assert not bool(any_nonfinite([torch.tensor(1.0), torch.ones(3)]))
    assert bool(any_nonfinite([torch.tensor(1.0), torch.tensor([1.0, float("nan")])]))
