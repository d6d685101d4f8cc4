"""The non-finite guard's agreement between two real ranks: every rank names the same culprit.

Rank 0 is this test process, so that mutation testing (which traces only this process) sees the agreement
run; rank 1 is a subprocess running the same code (tests/reliability/nonfinite_two_ranks.py) on its own
model and data. They form a real gloo group through a FileStore in tmp_path and reduce through bigtrain's
DDP strategy.

Not marked `distributed`: that marker keeps the multi-process fits out of `make mutate` because their ranks
are all subprocesses it cannot trace; this test exists to put rank 0 under it, starts one short-lived peer
and takes a few seconds, so it runs everywhere the in-process tests run (CI included).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

import bigtrain
from tests.reliability import nonfinite_two_ranks as two_ranks

ROOT = Path(__file__).resolve().parents[2]  # where `tests` is importable from
PEER_TIMEOUT_S = 90  # rank 1's start-up (torch, Lightning) plus every scenario, on a busy machine

EXPECTED = {
    "all clean": None,
    "bad loss on rank 1 only": "loss",
    "bad gradient at 2 on rank 1 only": 2,
    "bad gradients at 3 on rank 0 and 1 on rank 1": 1,
    "bad gradients at 1 on rank 0 and 3 on rank 1": 1,
}


@pytest.fixture
def group(tmp_path, request):
    """Rank 1 started and the group joined as rank 0; the peer and the group are ended even on failure."""
    package_root = Path(bigtrain.__file__).resolve().parents[1]  # the code under test, mutated or not
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(package_root), str(ROOT)]),
        "OMP_NUM_THREADS": "1",
    }
    out = tmp_path / "rank1.json"
    cmd = [sys.executable, "-m", "tests.reliability.nonfinite_two_ranks", str(tmp_path / "store"), str(out)]
    peer = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def end() -> None:
        if peer.poll() is None:
            peer.kill()
        peer.communicate()
        if dist.is_initialized():
            dist.destroy_process_group()

    request.addfinalizer(end)
    two_ranks.join(tmp_path / "store", 0)
    return peer, out


def test_two_ranks_agree_on_the_culprit(group):
    """A bad loss on either rank is the loss on both; otherwise both name the smallest bad index (a clean
    rank included), and all clean is None."""
    peer, out = group
    rank0 = two_ranks.answers(0)
    log, _ = peer.communicate(timeout=PEER_TIMEOUT_S)
    assert peer.returncode == 0, log[-3000:]
    rank1 = json.loads(out.read_text())
    assert list(EXPECTED) == list(two_ranks.SCENARIOS)
    assert rank0 == EXPECTED
    assert rank1 == EXPECTED
