"""What only a CUDA GPU can show: bf16 autocast, NCCL, FSDP2 mixed precision and pinned CPU offload,
torch.compile. Skipped without CUDA; `make gpu-check` runs them on a GPU machine."""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch

from bigtrain.models.config import resolve
from bigtrain.models.transformer import GPT, PRESETS, GPTConfig

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _gpt(device: str = "cuda") -> GPT:
    cfg = dataclasses.replace(resolve(GPTConfig(preset="tiny"), PRESETS), vocab_size=256, block_size=64)
    torch.manual_seed(0)
    return GPT(cfg).to(device)


def _tokens(batch: int = 8) -> torch.Tensor:
    return torch.randint(0, 256, (batch, 65), device="cuda", generator=torch.Generator("cuda").manual_seed(0))


def _train(net: torch.nn.Module, steps: int, autocast: bool = True) -> list[float]:
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    x, losses = _tokens(), []
    for _ in range(steps):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            logits = net(x[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def test_bf16_autocast_trains():
    losses = _train(_gpt(), 30)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] - 1.0, losses  # memorising one batch: the loss must fall


@pytest.fixture
def process_group():
    import torch.distributed as dist

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    dist.init_process_group("nccl", rank=0, world_size=1, device_id=torch.device("cuda", 0))
    yield dist
    dist.destroy_process_group()


def test_nccl_all_reduce(process_group):
    t = torch.full((4,), 3.0, device="cuda")
    process_group.all_reduce(t)
    assert t.tolist() == [3.0] * 4


def test_fsdp2_bf16_mixed_precision_and_pinned_offload(process_group):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh("cuda", (1,))
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    net = _gpt()
    for block in net.blocks():
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(net, mesh=mesh, mp_policy=policy)
    losses = _train(net, 20, autocast=False)
    assert losses[-1] < losses[0] - 1.0, losses

    offloaded = _gpt("cpu")
    for block in offloaded.blocks():
        fully_shard(block, mesh=mesh, offload_policy=CPUOffloadPolicy(pin_memory=True))
    fully_shard(offloaded, mesh=mesh, offload_policy=CPUOffloadPolicy(pin_memory=True))
    assert next(offloaded.parameters()).to_local().is_pinned()
    losses = _train(offloaded, 10, autocast=False)
    assert all(torch.isfinite(torch.tensor(losses)))


def test_torch_compile_matches_eager():
    net = _gpt().eval()
    x = _tokens()[:, :-1]
    with torch.no_grad():
        eager = net(x)
        compiled = torch.compile(net)(x)
    torch.testing.assert_close(compiled, eager, rtol=2e-3, atol=2e-3)
