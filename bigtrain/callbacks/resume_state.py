"""Every random number generator of every rank, saved in the checkpoint and restored on resume.

Lightning checkpoints the model, optimizers, schedulers, loops and (with a stateful loader such as
`bigtrain.data.base.ResumableDataLoader`) the position in the epoch, but not the RNGs: after a resume,
dropout masks, VAE noise and anything else drawn from torch's, numpy's or Python's global generators
would differ from the uninterrupted run. `ResumeState` stores each rank's generators (torch CPU, the
current CUDA device, numpy, `random`) as plain tensors, so the checkpoint still loads with
`weights_only=True`, and restores them just before the first training batch after the resume.

Validation runs with the training RNG set aside and given back afterwards. Lightning does not repeat a
validation that was due at the step a checkpoint was saved, so validation must not move the generators that
training uses; as a bonus, changing how often a run validates does not change how it trains.

A checkpoint written by the epoch-end hooks of a run that stopped mid-epoch (`max_steps`) is resumed
mid-epoch too (see `settle_epoch_end`), so a run continued with a larger `max_steps` equals one
long run.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn

from bigtrain.lightning_compat import load_pending_loader_state

RNGState = dict[str, torch.Tensor]


def capture_rng() -> RNGState:
    """This process's generator states as tensors (no pickled objects)."""
    _, py_state, py_gauss = random.getstate()
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    state = {
        "torch": torch.get_rng_state(),
        # MT19937: 624 words and a position, each below 2**32; floats are exact in float64.
        "python": torch.tensor(py_state, dtype=torch.int64),
        "python_gauss": torch.tensor([py_gauss is not None, py_gauss or 0.0], dtype=torch.float64),
        "numpy": torch.from_numpy(np_keys.astype(np.int64)),
        "numpy_rest": torch.tensor([np_pos, np_has_gauss, np_gauss], dtype=torch.float64),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: RNGState) -> None:
    """Set this process's generators to a `capture_rng()` state."""
    # Copies: set_rng_state reads a view's storage from its start (a row of a stacked tensor segfaults).
    torch.set_rng_state(state["torch"].cpu().clone())
    has_gauss, gauss = state["python_gauss"].tolist()
    random.setstate((3, tuple(int(v) for v in state["python"].tolist()), gauss if has_gauss else None))
    pos, np_has_gauss, np_gauss = state["numpy_rest"].tolist()
    keys = state["numpy"].cpu().numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, int(pos), int(np_has_gauss), float(np_gauss)))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu().clone())


def _gather(trainer: Trainer, state: RNGState) -> RNGState:
    """Every rank's states stacked along a first dimension of size world_size (a collective)."""
    if trainer.world_size == 1 or not torch.distributed.is_initialized():
        return {name: value.unsqueeze(0) for name, value in state.items()}
    device = trainer.strategy.root_device
    gathered = {}
    for name in sorted(state):  # the same order on every rank
        value = trainer.strategy.all_gather(state[name].to(device))
        gathered[name] = value.reshape(trainer.world_size, *state[name].shape).cpu()
    return gathered


def settle_epoch_end(checkpoint: dict[str, Any]) -> None:
    """Make a checkpoint saved by epoch-end hooks resume where the run really was (its loop state, in place).

    Epoch-end hooks (ModelCheckpoint's epoch-end save, `last.ckpt` of a run that stops) run after the loop
    counts the epoch as processed but before it counts it as completed, and Lightning's restart from that
    state is wrong when training is bounded by steps:

    - an epoch that ran to its last batch is restarted as the same epoch: one more batch is drawn (from the
      next epoch's order), then the following epoch starts one epoch ahead, so every later batch differs;
      it is counted as completed here, with the per-epoch batch counters back at zero;
    - an epoch left mid-way (`max_steps`, a stop request) would be finished while the sampler is told the
      next epoch's number; it is counted as unfinished here, so it resumes mid-epoch like any checkpoint.
    """
    fit = checkpoint.get("loops", {}).get("fit_loop")
    if not fit or "epoch_progress" not in fit:
        return
    epochs = fit["epoch_progress"]
    if not all(
        epochs[part]["started"] == epochs[part]["processed"] == epochs[part]["completed"] + 1
        for part in ("total", "current")
    ):
        return  # saved mid-epoch, or after the epoch completed: Lightning restarts those correctly
    batches = fit.get("epoch_loop.batch_progress", {})
    if not batches.get("is_last_batch", True):
        for part in ("total", "current"):
            epochs[part]["processed"] = epochs[part]["completed"]
        return
    for part in ("total", "current"):
        epochs[part]["completed"] = epochs[part]["processed"]
    for key in ("epoch_loop.batch_progress", "epoch_loop.scheduler_progress"):
        _zero(fit.get(key, {}).get("current", {}))
    batches["is_last_batch"] = False
    optim = fit.get("epoch_loop.automatic_optimization.optim_progress", {}).get("optimizer", {})
    for progress in optim.values():
        _zero(progress.get("current", {}))


def _zero(counts: dict[str, int]) -> None:
    for name in counts:
        counts[name] = 0


def reload_loader_state(trainer: Trainer) -> bool:
    """Load the checkpoint's train-loader state now if Lightning has left it pending; whether it did.

    Lightning hands the saved loader state (the position in the epoch) to the train loaders when it builds
    them after restoring a checkpoint. Anything that asks for them earlier builds them before the restore,
    and the state is then never loaded: `trainer.estimated_stepping_batches` in `configure_optimizers` does,
    whenever `max_epochs` is set, and the resumed run restarts its epoch from the first batch. Here the
    state is loaded into those loaders and their iterator started again, with the sampler already on the
    resumed epoch (the iterator draws its first batch at once). Uses the fit loop's private attributes.
    """
    return load_pending_loader_state(trainer)


class ResumeState(Callback):
    """Saves every rank's RNG states in checkpoints; restores them before the first batch after a resume."""

    def __init__(self) -> None:
        self._trainer: Trainer | None = None
        self._loaded: dict[str, Any] | None = None
        self._outside_validation: RNGState | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:  # noqa: D102
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        """{"world_size": W, "rng": {generator: tensor (W, ...)}}; every rank calls it while saving."""
        trainer = self._trainer
        if trainer is None:
            return {}
        # Saved from inside validation (e.g. a checkpoint on a validation metric): the state training
        # continues with is the one set aside when validation began.
        local = self._outside_validation or capture_rng()
        return {"world_size": trainer.world_size, "rng": _gather(trainer, local)}

    def on_load_checkpoint(  # noqa: D102
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        settle_epoch_end(checkpoint)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Give the train loaders their saved position if Lightning did not (see `reload_loader_state`)."""
        reload_loader_state(trainer)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the saved states until training resumes (restoring now would be undone by the set-up)."""
        self._loaded = state_dict or None

    def on_train_batch_start(  # noqa: D102
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        loaded, self._loaded = self._loaded, None
        if loaded is None:
            return
        if loaded["world_size"] != trainer.world_size:
            rank_zero_warn(
                f"the checkpoint's RNG states are from {loaded['world_size']} ranks, this run has "
                f"{trainer.world_size}: they are not restored, so the resumed run is not bit-exact "
                "(resume with the same number of ranks for that)"
            )
            return
        rank = trainer.global_rank
        restore_rng({name: value[rank] for name, value in loaded["rng"].items()})

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        self._outside_validation = capture_rng()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        saved, self._outside_validation = self._outside_validation, None
        if saved is not None:
            restore_rng(saved)
