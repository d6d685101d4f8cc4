"""Shared by the distributed tests: the tiny run of each family, launching 1 or N ranks, reading results."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

STEPS = 20
"""Training steps compared (batches; the GAN's global_step counts two per batch)."""

QUICK = [
    "--trainer.accelerator", "cpu",
    "--trainer.limit_val_batches", "0",
    "--trainer.num_sanity_val_steps", "0",
    "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false",
    "--trainer.enable_checkpointing", "false",
    "--trainer.logger", "false",
    "--trainer.callbacks+=recorder.Record",
]  # fmt: skip
"""Overrides that make a recipe a short, quiet, comparable training run."""

IMAGES = ["--data.num_samples", "500", "--data.batch_size", "16"]
TEXT = ["--data.batch_size", "8", "--data.block_size", "32", "--model.sample_tokens", "0"]

FAMILIES: dict[str, list[str]] = {
    "cnn": ["--recipe", "cnn/glyphs", *IMAGES, "--model.optim.name", "adamw", "--model.optim.lr", "0.001"],
    "rnn": ["--recipe", "rnn/builtin-char", *TEXT],
    "transformer": ["--recipe", "transformer/builtin-char", *TEXT],
    # A plain autoencoder: a VAE's reparameterisation noise is drawn per rank (see docs/strategies.md).
    "autoencoder": ["--recipe", "autoencoder/glyphs", *IMAGES, "--model.net.kind", "ae"],
    "gan": ["--recipe", "gan/glyphs", *IMAGES, "--model.net.preset", "tiny"],
}
"""Each family's tiny run: a packaged recipe with the tiny preset, small data and fp32."""


def fit_args(family: str, run_dir: Path, *extra: str, steps: int = STEPS) -> list[str]:
    """`bigtrain fit` arguments of a family's tiny run for `steps` batches, writing into run_dir."""
    max_steps = 2 * steps if family == "gan" else steps  # manual optimization: two optimizer steps a batch
    args = [*FAMILIES[family], *QUICK, "--trainer.max_steps", str(max_steps), "--run_dir", str(run_dir)]
    return [*args, *extra]


def child_env() -> dict[str, str]:
    """The environment of launched ranks: one thread each, this folder importable, no inherited run dir."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    env.pop("BIGTRAIN_RUN_DIR", None)
    return env


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(runs: dict[str, list[str]], nproc: int, workdir: Path) -> subprocess.Popen:
    """Start `run_fits.py` on `nproc` ranks (torchrun when > 1) for the given fits; returns the process."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec = workdir / f"spec-{nproc}.json"
    spec.write_text(json.dumps(runs))
    cmd = [sys.executable, str(HERE / "run_fits.py"), str(spec)]
    if nproc > 1:
        torchrun = ["-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(nproc)]
        torchrun += ["--master-addr", "127.0.0.1", "--master-port", str(free_port())]
        cmd = [sys.executable, *torchrun, *cmd[1:]]
    log = open(workdir / f"log-{nproc}.txt", "w")  # noqa: SIM115 (closed by the caller's wait())
    return subprocess.Popen(cmd, env=child_env(), stdout=log, stderr=subprocess.STDOUT, cwd=workdir)


def wait(proc: subprocess.Popen, workdir: Path, nproc: int, timeout: float = 600) -> None:
    """Wait for a launch; fail with the tail of its log if it did not exit 0."""
    code = proc.wait(timeout=timeout)
    log = (workdir / f"log-{nproc}.txt").read_text()
    assert code == 0, f"launch of {nproc} rank(s) exited {code}:\n{log[-6000:]}"


def read_losses(run_dir: Path) -> dict[str, list[float]]:
    """The recorded per-step training losses of a run ({name: [value per step]})."""
    error = run_dir / "error.txt"
    assert not error.exists(), f"{run_dir.name} failed: {error.read_text()}"
    return json.loads((run_dir / "losses.json").read_text())


def read_weights(run_dir: Path) -> dict:
    """The final consolidated state dict of a run."""
    from safetensors.torch import load_file

    return load_file(str(run_dir / "weights.safetensors"))


def max_rel_loss_diff(a: dict[str, list[float]], b: dict[str, list[float]]) -> float:
    """The largest |a - b| / |a| over every loss and step (the two must record the same losses and steps)."""
    assert a.keys() == b.keys(), (sorted(a), sorted(b))
    worst = 0.0
    for name in a:
        assert len(a[name]) == len(b[name]), (name, len(a[name]), len(b[name]))
        for x, y in zip(a[name], b[name], strict=True):
            worst = max(worst, abs(x - y) / max(abs(x), 1e-12))
    return worst


def max_weight_diff(a: dict, b: dict) -> float:
    """The largest absolute difference between two state dicts with the same keys and shapes."""
    assert a.keys() == b.keys(), sorted(set(a) ^ set(b))
    worst = 0.0
    for key in a:
        assert a[key].shape == b[key].shape, (key, a[key].shape, b[key].shape)
        if a[key].is_floating_point():
            worst = max(worst, (a[key].double() - b[key].double()).abs().max().item())
        else:
            assert (a[key] == b[key]).all(), key
    return worst
