"""Test-only callback: each step's training losses (mean over ranks) and the final full weights.

Launched runs import it by name (`--trainer.callbacks+=recorder.Record`) with this folder on PYTHONPATH.
It writes into the run directory: `losses.json` ({name: [value per step]}) and `weights.safetensors` (the
consolidated state dict, gathered from every rank's shards), and `compute_dtypes.json` (the dtypes of the
weights every Linear layer computed with in training forwards), and under DDP `ddp.json` (whether
DistributedDataParallel looks for unused parameters), all on rank 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from bigtrain.models.train_metrics import current_metrics


class Record(Callback):
    """Records the training losses of every step and the final weights of the run."""

    def __init__(self) -> None:
        self.losses: dict[str, list[float]] = {}
        self.compute_dtypes: set[str] = set()

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        wrapper = getattr(trainer.strategy, "model", None)  # DDP's DistributedDataParallel, once set up
        if trainer.is_global_zero and hasattr(wrapper, "find_unused_parameters"):
            flag = {"find_unused_parameters": wrapper.find_unused_parameters}
            (Path(trainer.default_root_dir) / "ddp.json").write_text(json.dumps(flag))

        # After FSDP's own pre-forward hook has gathered the parameters: the dtype the layer computes in.
        def seen(module: torch.nn.Module, args) -> None:
            if module.training:
                self.compute_dtypes.add(str(module.weight.dtype).removeprefix("torch."))

        for module in pl_module.modules():
            if isinstance(module, torch.nn.Linear):
                module.register_forward_pre_hook(seen)

    def on_train_batch_end(self, trainer: Trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: D102
        metrics = current_metrics(trainer)
        names = sorted(k for k in metrics if k.startswith("train/") and k.endswith("loss"))
        if not names:
            names = sorted(k for k in metrics if k.startswith("train/") and k.endswith("loss_step"))
        values = torch.stack([metrics[k].detach().float().reshape(()) for k in names]).to(
            trainer.strategy.root_device
        )
        # The mean over ranks of per-rank mean losses is the global batch's mean loss (equal shares).
        values = trainer.strategy.reduce(values, reduce_op="mean")
        for name, value in zip(names, values.tolist(), strict=True):
            self.losses.setdefault(name.removesuffix("_step"), []).append(value)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        from safetensors.torch import save_file
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = get_model_state_dict(pl_module, options=options)
        if trainer.is_global_zero:
            folder = Path(trainer.default_root_dir)
            (folder / "losses.json").write_text(json.dumps(self.losses))
            (folder / "compute_dtypes.json").write_text(json.dumps(sorted(self.compute_dtypes)))
            weights = {k: v.detach().contiguous() for k, v in state.items()}
            save_file(weights, str(folder / "weights.safetensors"))
