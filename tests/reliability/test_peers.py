"""The check-in at the rendezvous store that names the ranks a failed collective was missing."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import torch
from torch.distributed import TCPStore

from bigtrain.callbacks.peers import is_peer_failure, missing_ranks


def test_ranks_that_do_not_check_in_are_named_and_the_lowest_present_one_reports():
    store = TCPStore("127.0.0.1", 0, is_master=True, timeout=timedelta(seconds=5), wait_for_workers=False)
    results: dict[int, tuple[list[int], bool]] = {}

    def check_in(rank: int) -> None:
        results[rank] = missing_ranks(store, rank, 4, "failure/7", grace_s=1.0)

    threads = [threading.Thread(target=check_in, args=(rank,)) for rank in (1, 3)]  # 0 and 2 never arrive
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert results == {1: ([0, 2], True), 3: ([0, 2], False)}


@pytest.mark.parametrize(
    ("err", "expected"),
    [
        (RuntimeError("[pair.cc:537] Read error [127.0.0.1]:5537: Connection reset by peer"), True),
        (RuntimeError("Timed out waiting 10000ms for recv operation to complete"), True),
        (torch.distributed.DistBackendError("NCCL communicator was aborted"), True),
        (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False),
        (ValueError("connection closed"), False),
        (RuntimeError("DataLoader timed out after 5 seconds"), False),
    ],
)
def test_peer_failures_are_told_from_other_errors(err, expected):
    assert is_peer_failure(err) is expected
