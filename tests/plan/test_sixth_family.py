"""A family `bigtrain plan` was never taught: an MLP on random vectors, defined only here.

The planner must size it through the public hooks alone (the DataModule's `data_sizes()` and
`sample_shape()`, the network's `blocks()` and the traced `example_input()`/`example_loss()` defaults), so a
new family needs no change under bigtrain/plan/. The recipe names these classes by this module's name; the
`bigtrain plan` subprocess finds them through PYTHONPATH.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from bigtrain.data.base import BigtrainDataModule
from bigtrain.errors import UserError
from bigtrain.models.network import Network

HERE = Path(__file__).resolve().parent
MODULE = Path(__file__).stem


class ToyMLP(Network):
    """Vectors (B, F) -> `layers` blocks of Linear + ReLU -> class logits (B, classes)."""

    def __init__(self, features: int, hidden: int, classes: int, layers: int) -> None:
        super().__init__()
        widths = [features, *[hidden] * layers]
        self.body = nn.ModuleList(
            nn.Sequential(nn.Linear(widths[i], widths[i + 1]), nn.ReLU()) for i in range(layers)
        )
        self.head = nn.Linear(hidden, classes)

    def blocks(self) -> list[nn.Module]:
        """The Linear + ReLU blocks."""
        return list(self.body)

    def forward(self, x: Tensor) -> Tensor:
        """(B, F) -> (B, classes)."""
        for block in self.body:
            x = block(x)
        return self.head(x)


class ToyModule(LightningModule):
    """A thin LightningModule: the network is built in configure_model from the data's sizes."""

    def __init__(self, hidden: int = 64, layers: int = 3, lr: float = 1e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net: ToyMLP | None = None

    def configure_model(self) -> None:
        """Build the network once the data's sizes are known (idempotent)."""
        if self.net is None:
            data = self.trainer.datamodule
            self.net = ToyMLP(data.features, self.hparams.hidden, data.num_classes, self.hparams.layers)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """Cross-entropy of one batch."""
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Plain AdamW."""
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)


class ToyData(BigtrainDataModule):
    """Random vectors with random labels."""

    def __init__(
        self, *, features: int = 16, classes: int = 4, num_samples: int = 64, batch_size: int = 8,
        num_workers: int = 0, seed: int = 0,
    ) -> None:  # fmt: skip
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.requested = (features, classes)
        self.num_samples = num_samples
        self.features: int | None = None
        self.num_classes: int | None = None
        self.train_set: TensorDataset | None = None

    def data_sizes(self) -> dict[str, int | None]:
        """features and num_classes, known from the arguments: nothing is generated."""
        self.features, self.num_classes = self.requested
        return {"features": self.features, "num_classes": self.num_classes}

    def sample_shape(self) -> tuple[int, ...] | None:
        """(F,): one vector."""
        return None if self.features is None else (self.features,)

    def setup(self, stage: str | None = None) -> None:
        """Draw the vectors and labels."""
        self.data_sizes()
        gen = torch.Generator().manual_seed(self.seed)
        x = torch.randn(self.num_samples, self.features, generator=gen)
        y = torch.randint(self.num_classes, (self.num_samples,), generator=gen)
        self.train_set = TensorDataset(x, y)

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches."""
        return self.loader(self.train_set, train=True)


RECIPE = f"""\
# bigtrain plan THIS_FILE --nodes 1 --devices-per-node 2
seed_everything: 0
trainer:
  accelerator: cpu
  devices: 2
model:
  class_path: {MODULE}.ToyModule
  init_args:
    hidden: 64
    layers: 3
data:
  class_path: {MODULE}.ToyData
  init_args:
    features: 16
    classes: 4
    batch_size: 8
"""


def _toy_params() -> int:
    return sum(p.numel() for p in ToyMLP(16, 64, 4, 3).parameters())


def _plan(tmp_path: Path, bigtrain_cmd, *extra: str):
    recipe = tmp_path / "toy.yaml"
    recipe.write_text(RECIPE)
    path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)
    args = ["plan", str(recipe), "--nodes", "1", "--devices-per-node", "2", *extra]
    return bigtrain_cmd(*args, cwd=tmp_path, env={"PYTHONPATH": path})


def test_plan_sizes_a_family_it_was_never_taught(tmp_path, bigtrain_cmd):
    out = _plan(tmp_path, bigtrain_cmd, "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    P = _toy_params()
    assert report["model"]["params"] == P
    assert report["model"]["description"] == "ToyModule"
    rows = {row["layout"]["name"]: row for row in report["estimates"]}
    assert list(rows) == ["single", "ddp", "fsdp", "fsdp + AC"]
    single, ddp, fsdp, ac = rows["single"], rows["ddp"], rows["fsdp"], rows["fsdp + AC"]
    # fp32 weights and gradients, AdamW's two states; FSDP shards all three over the 2 ranks.
    assert single["params"] == single["grads"] == 4 * P and single["optimizer"] == 8 * P
    assert ddp["params"] == 4 * P and fsdp["params"] == pytest.approx(2 * P, abs=4)
    assert (single["batch"], ddp["batch"]) == (8, 4)
    # Traced activations: positive and linear in the per-device batch.
    assert single["activations"] > 0 and ac["activations"] > 0
    assert ddp["activations"] == fsdp["activations"] == pytest.approx(single["activations"] / 2, abs=1)
    assert report["recommendation"]["strategy"] == "ddp"


def test_plan_table_names_every_layout(tmp_path, bigtrain_cmd):
    out = _plan(tmp_path, bigtrain_cmd)
    assert out.returncode == 0, out.stderr
    assert f"ToyModule, {_toy_params():,} parameters" in out.stdout
    for layout in ("single", "ddp", "fsdp"):
        assert f"\n{layout} " in out.stdout or f"│ {layout} " in out.stdout, out.stdout


def test_strategies_ask_the_same_hooks():
    """`strategy: auto` plans the toy (no fallback); tensor parallel is refused: it has no tp_plan()."""
    from bigtrain.plan import model_facts, plannable_network
    from bigtrain.strategies.resolve import auto_strategy, check_tensor_parallel

    assert isinstance(plannable_network(ToyModule(), ToyData()), ToyMLP)
    data = ToyData()
    data.data_sizes()
    assert model_facts(ToyModule(), data).states == 2.0
    assert auto_strategy({"accelerator": "cpu", "devices": 2}, ToyModule(), ToyData()) == ("ddp", {})
    with pytest.raises(UserError, match="ToyMLP has no tensor-parallel plan"):
        check_tensor_parallel(2, ToyModule(), ToyData())
