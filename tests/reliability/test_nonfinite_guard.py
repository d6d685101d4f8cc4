"""The non-finite guard in one process: its settings, what a skipped step leaves, the skip count across a
resume, gradient accumulation, and what it says and logs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bigtrain.callbacks.nonfinite import (
    NonFiniteError,
    NonFiniteGuard,
    checksum,
    first_nonfinite,
    parameter_name,
    persistent_buffers,
)
from bigtrain.errors import UserError
from tests.reliability.test_nonfinite import Tiny, _fit


def test_bad_settings_are_refused_in_one_line():
    with pytest.raises(UserError) as caught:
        NonFiniteGuard("sometimes")
    assert str(caught.value) == "nonfinite.mode must be one of skip, stop, off; got 'sometimes'"
    with pytest.raises(UserError) as caught:
        NonFiniteGuard("skip", max_skips=-1)
    assert str(caught.value) == "nonfinite.max_skips must be >= 0, got -1"


def test_the_default_guard_stops_at_the_first_bad_step(tmp_path):
    with pytest.raises(NonFiniteError) as caught:
        _fit(Tiny({2}), NonFiniteGuard(), tmp_path)
    saved = tmp_path / "checkpoints" / "nonfinite-step=2.ckpt"
    assert str(caught.value) == f"non-finite loss at step 2; saved the state after step 1 to {saved}"


def test_max_skips_0_stops_at_the_first_bad_step(tmp_path):
    with pytest.raises(NonFiniteError) as caught:
        _fit(Tiny({2}), NonFiniteGuard("skip", max_skips=0), tmp_path)
    saved = tmp_path / "checkpoints" / "nonfinite-step=2.ckpt"
    assert str(caught.value) == (
        "non-finite loss at step 2 after 0 skipped step(s) (nonfinite.max_skips=0); "
        f"saved the state after step 1 to {saved}"
    )


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("accumulate", [1, 2])
def test_a_skipped_step_leaves_the_state_of_the_step_before(tmp_path, accumulate):
    """Good steps 1-2, then a bad step 3 skipped: the weights and the BatchNorm statistics and count are
    exactly those after step 2 (the copy the guard restores is the one taken as step 3 began, not at step 1,
    nor, with 2 batches a step, after the first of step 3's forward passes)."""
    torch.manual_seed(1)
    two_steps = Tiny(set())
    _fit(two_steps, NonFiniteGuard("skip"), tmp_path / "two", steps=2, accumulate_grad_batches=accumulate)
    torch.manual_seed(1)
    skipped_third = Tiny({3})
    guard = NonFiniteGuard("skip")
    _fit(skipped_third, guard, tmp_path / "three", steps=3, accumulate_grad_batches=accumulate)
    assert guard.skipped == 1
    expected, got = _state(two_steps), _state(skipped_third)
    assert expected.keys() == got.keys()
    assert [k for k in expected if not torch.equal(expected[k], got[k])] == []


def test_the_skip_count_survives_a_resume(tmp_path):
    """max_skips limits the whole run: a step skipped before the checkpoint still counts after the resume."""
    first = _fit(Tiny({2}), NonFiniteGuard("skip", max_skips=1), tmp_path / "first", steps=3)
    checkpoint = tmp_path / "step3.ckpt"
    first.save_checkpoint(checkpoint)
    with pytest.raises(NonFiniteError) as caught:
        _fit(Tiny({5}), NonFiniteGuard("skip", max_skips=1), tmp_path / "resumed", ckpt_path=checkpoint)
    assert "non-finite loss at step 5 after 1 skipped step(s) (nonfinite.max_skips=1)" in str(caught.value)


class FirstMicroBatchBad(Tiny):
    """With two micro-batches per optimizer step: the loss of batch `bad_batch` only is NaN."""

    def __init__(self, bad_batch: int) -> None:
        super().__init__(set())
        self.bad_batch = bad_batch

    def training_step(self, batch, batch_idx):  # noqa: D102
        loss = super().training_step(batch, batch_idx)
        return loss * float("nan") if batch_idx == self.bad_batch else loss


def test_a_bad_loss_in_any_micro_batch_names_the_loss(tmp_path):
    """Gradient accumulation over 2 batches: a NaN loss in the first batch of step 2, then a finite one, is
    still a non-finite loss at step 2 (not only a gradient)."""
    with pytest.raises(NonFiniteError) as caught:
        _fit(FirstMicroBatchBad(bad_batch=2), NonFiniteGuard("stop"), tmp_path, accumulate_grad_batches=2)
    assert str(caught.value).startswith("non-finite loss at step 2;")


def test_skip_warns_on_stderr_and_logs_the_count(tmp_path, capsys):
    trainer = _fit(Tiny({2, 4}), NonFiniteGuard("skip"), tmp_path, steps=5)
    err = capsys.readouterr().err  # at most 10 skips unless max_skips says otherwise
    assert "bigtrain: warning: non-finite loss at step 2: step skipped (1 of at most 10)\n" in err
    assert "bigtrain: warning: non-finite loss at step 4: step skipped (2 of at most 10)\n" in err
    assert float(trainer.callback_metrics["nonfinite_skipped"]) == 2.0
    stopped = _fit(Tiny(set()), NonFiniteGuard("stop"), tmp_path / "stop", steps=2)
    assert "nonfinite_skipped" not in stopped.callback_metrics  # only skip mode logs it


def test_culprits_are_named_by_their_dotted_name_or_shape():
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    net.register_buffer("scale", torch.ones(1))
    net.register_buffer("cache", torch.ones(1), persistent=False)  # not in a checkpoint: not restored
    assert [name for name, _ in persistent_buffers(net)] == [
        "scale",
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
    ]
    assert parameter_name(net, net[0].bias) == "'0.bias'"
    assert parameter_name(net, nn.Parameter(torch.zeros(3, 5))) == "a parameter of shape (3, 5)"


@pytest.fixture
def one_rank_mesh():
    """A device mesh of this one process (gloo, world size 1), so that a test can build DTensors."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield init_device_mesh("cpu", (1,))
    finally:
        dist.destroy_process_group()


def test_a_sharded_gradient_is_checked_through_its_local_shard(one_rank_mesh):
    """Under FSDP2 and tensor parallel a gradient is a DTensor: the checks read this rank's shard (plain
    tensors beside it), find its NaN, and give plain tensors for the one all-reduce."""
    from torch.distributed.tensor import Shard, distribute_tensor

    plain = nn.Parameter(torch.zeros(2))
    sharded = nn.Parameter(distribute_tensor(torch.zeros(4), one_rank_mesh, [Shard(0)]))
    plain.grad = torch.ones(2)
    sharded.grad = distribute_tensor(torch.ones(4), one_rank_mesh, [Shard(0)])
    total = checksum([], [plain, sharded])
    assert type(total) is torch.Tensor and math.isfinite(float(total))
    assert int(first_nonfinite([plain, sharded])) == 2
    sharded.grad = distribute_tensor(torch.tensor([1.0, float("nan"), 1.0, 1.0]), one_rank_mesh, [Shard(0)])
    total, first = checksum([], [plain, sharded]), first_nonfinite([plain, sharded])
    assert type(total) is torch.Tensor and not math.isfinite(float(total))
    assert type(first) is torch.Tensor and int(first) == 1


def test_off_does_no_work_and_stop_finds_the_buffers_once(tmp_path, monkeypatch):
    """`off` costs nothing: no walk over the module, no copy, no flag kept. `stop` finds the persistent
    buffers once per fit (one walk over the 4 modules), not at every step."""
    import bigtrain.callbacks.nonfinite as nonfinite

    walked = []

    def counting(module):
        walked.append(module)
        return own(module)

    own = nonfinite.own_persistent_buffers
    monkeypatch.setattr(nonfinite, "own_persistent_buffers", counting)
    off = NonFiniteGuard("off")
    _fit(Tiny({2}), off, tmp_path / "off", steps=4)
    assert walked == [] and off._buffers == {} and off._losses == []
    _fit(Tiny(set()), NonFiniteGuard("stop"), tmp_path / "stop", steps=4)
    assert len(walked) == 4  # Tiny, first, norm, second: once


class SkipsABatch(Tiny):
    """Returns None for batch 1 (Lightning then runs no backward for it), a finite loss otherwise."""

    def training_step(self, batch, batch_idx):  # noqa: D102
        return None if batch_idx == 1 else super().training_step(batch, batch_idx)


def test_a_batch_the_module_skips_passes_the_guard(tmp_path):
    module = SkipsABatch(set())
    trainer = _fit(module, NonFiniteGuard("stop"), tmp_path, steps=4)
    assert trainer.global_step == 4 and all(torch.isfinite(p).all() for p in module.parameters())


def test_with_a_grad_scaler_only_the_loss_is_checked(tmp_path):
    """fp16 with a GradScaler: the scaler skips a step with Inf gradients itself (the guard lets it), but a
    non-finite loss still stops the run."""
    from lightning.pytorch.plugins import MixedPrecision

    module = Tiny({3}, where="grad")
    scaled = {"plugins": [MixedPrecision("16-mixed", "cpu")]}
    trainer = _fit(module, NonFiniteGuard("stop"), tmp_path / "grad", steps=5, **scaled)
    assert trainer.global_step == 5 and all(torch.isfinite(p).all() for p in module.parameters())
    with pytest.raises(NonFiniteError, match="^non-finite loss at step 3;"):
        _fit(Tiny({3}), NonFiniteGuard("stop"), tmp_path / "loss", steps=5, **scaled)


def test_a_guard_used_again_puts_back_the_buffers_of_the_next_fits_first_step(tmp_path):
    """A guard kept for a second fit, after one that stopped at a bad step, copies the buffers again as the
    new fit's first step begins: a bad first step leaves the module's whole state as that fit found it."""
    guard = NonFiniteGuard("stop")
    with pytest.raises(NonFiniteError):
        _fit(Tiny({2}), guard, tmp_path / "first")
    module = Tiny({1})
    before = _state(module)
    with pytest.raises(NonFiniteError, match="^non-finite loss at step 1;"):
        _fit(module, guard, tmp_path / "second")
    after = _state(module)
    assert [k for k in before if not torch.equal(before[k], after[k])] == []


class _HugeGradient(Tiny):
    """At step 2 the gradient of `second.weight` is finite but so large that its float32 2-norm overflows."""

    def _poison_grad(self, grad: torch.Tensor) -> torch.Tensor:
        return grad * 1e30 + 1e30 if self.trainer.global_step + 1 == 2 else grad


@pytest.mark.parametrize("mode", ["stop", "skip"])
def test_a_finite_gradient_whose_norm_overflows_is_not_called_non_finite(tmp_path, mode):
    """The fused check sums squares in float32, which overflows beyond 1.8e19; the element check that follows
    tells it from a NaN or Inf, so the step is taken (neither stopped nor skipped)."""
    params = [nn.Parameter(torch.zeros(3))]
    params[0].grad = torch.full((3,), 1e30)
    assert not math.isfinite(float(checksum([], params))) and int(first_nonfinite(params)) == 1
    guard = NonFiniteGuard(mode)
    trainer = _fit(_HugeGradient(set()), guard, tmp_path, steps=2)
    assert trainer.global_step == 2 and guard.skipped == 0


def test_a_new_fit_forgets_a_loss_its_guard_kept_from_an_unfinished_step(tmp_path):
    """A fit that stopped between a backward pass and its optimizer step leaves that loss with the guard:
    the next fit's first step must not be judged by it."""
    guard = NonFiniteGuard()
    guard.on_before_backward(None, None, torch.tensor(float("nan")))  # type: ignore[arg-type]
    trainer = _fit(Tiny(set()), guard, tmp_path, steps=2)
    assert trainer.global_step == 2
