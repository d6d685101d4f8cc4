"""Multi-node without SLURM: two `bigtrain submit torchrun` processes on 127.0.0.1 act as two nodes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from conftest import HERE, QUICK

MAX_STEPS = 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.distributed
@pytest.mark.slow
def test_two_torchrun_nodes_finish_a_recipe(recipe, tmp_path, monkeypatch):
    run = tmp_path / "run"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    endpoint = f"127.0.0.1:{_free_port()}"
    base = [sys.executable, "-m", "bigtrain", "submit", "torchrun", "--recipe", recipe, *QUICK]
    base += ["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-endpoint", endpoint, "--run-dir", str(run)]
    base += ["--accelerator", "cpu"]
    nodes = [
        subprocess.Popen(
            [*base, "--node-rank", str(rank)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    for node, output in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, output
    assert json.loads((run / "metrics.json").read_text())["global_step"] == MAX_STEPS
    ranks = [json.loads((run / f"ranks-{r}.json").read_text()) for r in (0, 1)]
    assert [(r["global_rank"], r["node_rank"], r["num_nodes"]) for r in ranks] == [(0, 0, 2), (1, 1, 2)]
