"""Resume a sharded checkpoint through the fsdp strategy's `load_checkpoint`, in a process of its own.

`python sharded_resume_probe.py WORKDIR CASE` saves a tiny FSDP2-sharded LightningModule and its AdamW state
to WORKDIR/ckpt in Lightning's layout (DCP shards, `.metadata`, `meta.pt`), spoils it as CASE says, loads it
into a fresh module and prints one line: `loaded <max weight difference> <global_step>` or
`refused <message>`. CASE: `clean`; `metadata` (a hostile `.metadata` put in place after it was vetted);
`entry` (a hostile pickle as a shard's non-tensor entry, the learning rate); `entry-lightning` (the same,
loaded by Lightning's own ModelParallelStrategy: the control, whose payload runs).
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from lightning.pytorch import LightningModule
from lightning.pytorch.strategies import ModelParallelStrategy
from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from bigtrain.errors import UserError
from bigtrain.strategies.fsdp import FSDP


class Payload:
    """Unpickling this calls `exec`, which writes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('the payload ran')",))


class Tiny(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def build(seed: int) -> tuple[Tiny, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    module = Tiny()
    fully_shard(module, mesh=init_device_mesh("cpu", (1,)))
    return module, torch.optim.AdamW(module.parameters(), lr=0.1)


def save(folder: Path, case: str, marker: Path) -> Tiny:
    module, optimizer = build(0)
    module(torch.ones(2, 4)).sum().backward()
    optimizer.step()
    state = {
        "state_dict": get_model_state_dict(module),
        "optimizer_0": get_optimizer_state_dict(module, optimizer),
    }
    if case.startswith("entry"):
        state["optimizer_0"]["param_groups"][0]["lr"] = Payload(marker)
    dcp.save(state, checkpoint_id=folder)
    torch.save({"global_step": 5}, folder / "meta.pt")
    if case == "metadata":
        (folder / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
    return module


def main(work: Path, case: str) -> str:
    dist.init_process_group("gloo", init_method=f"file://{work / 'store'}", rank=0, world_size=1)
    folder, marker = work / "ckpt", work / "MARKER"
    saved = save(folder, case, marker)
    module, optimizer = build(1)
    strategy = FSDP()
    strategy._lightning_module = module
    strategy.model = module
    strategy.optimizers = [optimizer]
    load = ModelParallelStrategy.load_checkpoint if case == "entry-lightning" else FSDP.load_checkpoint
    try:
        meta = load(strategy, folder)
    except UserError as err:
        return f"refused {err}"
    expected, found = get_model_state_dict(saved), get_model_state_dict(module)
    diff = max((expected[k].full_tensor() - found[k].full_tensor()).abs().max().item() for k in expected)
    return f"loaded {diff} {meta.get('global_step')}"


if __name__ == "__main__":
    try:
        print(main(Path(sys.argv[1]), sys.argv[2]))
    finally:
        # Left to interpreter shutdown, gloo's threads can abort the process (as `bigtrain fit` avoids).
        if dist.is_initialized():
            dist.destroy_process_group()
