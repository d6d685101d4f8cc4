"""One rank of a real 2-rank gloo group asking the non-finite guard to agree, scenario after scenario.

Rank 0 is the test process (tests/reliability/test_nonfinite_ranks.py); rank 1 runs this module:
`python -m tests.reliability.nonfinite_two_ranks STORE_FILE OUT_JSON` joins through the FileStore at
STORE_FILE and writes its answers to OUT_JSON. Both ranks run the same scenarios on their own model and data.
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from bigtrain.callbacks.nonfinite import NonFiniteGuard
from bigtrain.strategies.ddp import DDP

TIMEOUT = timedelta(seconds=60)  # a join or collective waiting longer fails, not hangs (slow starts fit)
Bad = tuple[bool, int | None]  # one rank: (loss non-finite, index of a parameter given a NaN gradient)
SCENARIOS: dict[str, tuple[Bad, Bad]] = {
    "all clean": ((False, None), (False, None)),
    "bad loss on rank 1 only": ((False, None), (True, None)),
    "bad gradient at 2 on rank 1 only": ((False, None), (False, 2)),
    "bad gradients at 3 on rank 0 and 1 on rank 1": ((False, 3), (False, 1)),
    "bad gradients at 1 on rank 0 and 3 on rank 1": ((False, 1), (False, 3)),
}


class TwoRanks:
    """The part of a Trainer the guard's agreement reads: bigtrain's DDP strategy over the joined group."""

    world_size = 2

    def __init__(self) -> None:
        self.strategy = DDP(timeout_s=TIMEOUT.total_seconds())
        self.strategy.parallel_devices = [torch.device("cpu")] * 2


def join(store_file: Path, rank: int) -> None:
    """Join the 2-rank gloo group through a FileStore (no port to pick)."""
    store = dist.FileStore(str(store_file), 2)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=2, timeout=TIMEOUT)


def answer(rank: int, bad: Bad, seed: int) -> int | str | None:
    """This rank's backward on its own model and data, then the guard's agreed culprit."""
    torch.manual_seed(seed * 2 + rank)  # each rank its own parameters and data
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 1))  # parameters 0-3: weight, bias, weight, bias
    loss = model(torch.randn(4, 3)).square().mean()
    loss_bad, grad_bad = bad
    if loss_bad:
        loss = loss * float("nan")
    guard = NonFiniteGuard()
    trainer = TwoRanks()
    guard.on_before_backward(trainer, model, loss)  # type: ignore[arg-type]
    loss.backward()
    params = list(model.parameters())
    if grad_bad is not None:
        with torch.no_grad():
            params[grad_bad].grad.view(-1)[-1] = float("nan")
    return guard._agree(trainer, guard._losses, params)  # type: ignore[arg-type]


def answers(rank: int) -> dict[str, int | str | None]:
    """This rank's answer to every scenario, in order (the collectives pair up scenario by scenario)."""
    return {name: answer(rank, bads[rank], seed) for seed, (name, bads) in enumerate(SCENARIOS.items())}


def main(store_file: str, out: str) -> None:
    """Rank 1: join, answer every scenario, write the answers, leave the group."""
    join(Path(store_file), 1)
    try:
        Path(out).write_text(json.dumps(answers(1)))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
