"""The non-finite guard in one process: its settings, what a skipped step leaves, the skip count across a
resume, gradient accumulation, and what it says and logs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bigtrain.callbacks.nonfinite import NonFiniteError, NonFiniteGuard, parameter_name, persistent_buffers
from bigtrain.errors import UserError
from tests.reliability.test_nonfinite import Tiny, _fit


def test_bad_settings_are_refused_in_one_line():
    with pytest.raises(UserError) as caught:
        NonFiniteGuard("sometimes")
    assert str(caught.value) == "nonfinite.mode must be one of skip, stop, off; got 'sometimes'"
    with pytest.raises(UserError) as caught:
        NonFiniteGuard("skip", max_skips=-1)
    assert str(caught.value) == "nonfinite.max_skips must be >= 0, got -1"


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


def test_a_skipped_step_leaves_the_state_of_the_step_before(tmp_path):
    """Good steps 1-2, then a bad step 3 skipped: the weights and the BatchNorm statistics and count are
    exactly those after step 2 (the copy the guard restores is the one taken at step 3, not step 1)."""
    torch.manual_seed(1)
    two_steps = Tiny(set())
    _fit(two_steps, NonFiniteGuard("skip"), tmp_path / "two", steps=2)
    torch.manual_seed(1)
    skipped_third = Tiny({3})
    _fit(skipped_third, NonFiniteGuard("skip"), tmp_path / "three", steps=3)
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
    trainer = _fit(Tiny({2, 4}), NonFiniteGuard("skip", max_skips=5), tmp_path, steps=5)
    err = capsys.readouterr().err
    assert "bigtrain: warning: non-finite loss at step 2: step skipped (1 of at most 5)\n" in err
    assert "bigtrain: warning: non-finite loss at step 4: step skipped (2 of at most 5)\n" in err
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
