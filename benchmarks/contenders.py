"""One timed training run: a raw PyTorch loop, plain Lightning, or `bigtrain fit`, on the same model,
optimizer, schedule, clipping and data (bigtrain's DataModule loader).

    python -m benchmarks.contenders raw|lightning|bigtrain --net fixed|recipe|cnn --steps N --out result.json

`fixed` is the 1-layer 16-wide GPT at batch 2 on the built-in corpus, whose step is nearly all framework
overhead (fixed per-step cost); `recipe` is `transformer/builtin-char` as packaged (the tiny preset, batch
32); `cnn` is `cnn/glyphs` as packaged (the tiny ResNet, batch 64; no lightning contender). Writes {"step_ms":
median wall time of a step from step 200 on, "cpu_ms": the same in CPU time of the process, "startup_s":
process start to the end of the first optimizer step}. On a shared, loaded machine the CPU time is the
steadier measure of what a step costs: waiting for a core does not count in it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WARMUP_STEPS = 200
"""Steps left out of the median: start-up, allocator and cache warm-up."""
NETS = {
    "fixed": {"n_layer": 1, "n_head": 1, "n_embd": 16, "batch": 2},
    "recipe": {"batch": 32},  # the recipe's own net (the tiny preset)
    "cnn": {},  # cnn/glyphs as packaged
}
BLOCK, LR, BETAS, WD, WARMUP, MIN_LR, CLIP = 64, 2e-3, (0.9, 0.99), 0.1, 40, 2e-4, 1.0
"""transformer/builtin-char's settings."""


def bench_env() -> dict[str, str]:
    """The environment of every benchmarked process: one thread, no warnings, this project importable."""
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    return env


def run_pinned(commands: dict[str, list[str]], shift: int, what: str) -> None:
    """Start the commands at once, each pinned to its own core (the cores rotated by `shift`), and wait for
    all; on a machine with fewer cores than commands, one after the other. A failure ends the benchmark."""
    cores = sorted(os.sched_getaffinity(0))
    running = {}
    for i, (name, cmd) in enumerate(commands.items()):
        core = {cores[(i + shift) % len(cores)]}
        running[name] = subprocess.Popen(  # noqa: S603 (our own interpreter and modules)
            cmd, env=bench_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            preexec_fn=lambda core=core: os.sched_setaffinity(0, core),  # noqa: PLW1509
        )  # fmt: skip
        if len(cores) < len(commands):
            running[name].wait()
    for name, proc in running.items():
        _, err = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"{what}, {name} failed:\n{err[-3000:]}")


def process_age_s() -> float:
    """Seconds since this process started (Linux /proc); imports nothing heavy."""
    stat = Path("/proc/self/stat").read_text()
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - int(stat.rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")


class Clock:
    """Step start times, and the process age when the first step ended."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.cpu: list[float] = []
        self.startup_s: float | None = None

    def step_started(self) -> None:  # noqa: D102
        self.times.append(time.perf_counter())
        self.cpu.append(time.process_time())

    def step_ended(self) -> None:  # noqa: D102
        if self.startup_s is None:
            self.startup_s = process_age_s()

    def result(self) -> dict:  # noqa: D102
        def median_ms(clock: list[float]) -> float:
            kept = clock[WARMUP_STEPS:]
            return 1e3 * statistics.median(b - a for a, b in zip(kept, kept[1:], strict=False))

        return {"step_ms": median_ms(self.times), "cpu_ms": median_ms(self.cpu), "startup_s": self.startup_s}


CLOCK = Clock()


def _parts(net: str, steps: int):  # noqa: ANN202
    """(network, optimizer, LambdaLR, train loader, loss, clip) as bigtrain builds them for the recipe."""
    import torch
    import torch.nn.functional as F

    if net == "cnn":
        return _cnn_parts(steps)

    from bigtrain.data.text import TextDataModule
    from bigtrain.models.config import resolve
    from bigtrain.models.optim import OptimConfig, build_optimizer, lr_factor
    from bigtrain.models.transformer.model import GPT, PRESETS, GPTConfig

    torch.manual_seed(0)
    sizes = {k: v for k, v in NETS[net].items() if k != "batch"}
    data = TextDataModule(block_size=BLOCK, batch_size=NETS[net]["batch"])
    data.setup("fit")
    cfg = resolve(GPTConfig(**sizes, block_size=BLOCK, vocab_size=data.vocab_size), PRESETS)
    model = GPT(cfg)
    optim = OptimConfig(lr=LR, betas=BETAS, weight_decay=WD, warmup_steps=WARMUP, min_lr=MIN_LR)
    opt = build_optimizer(list(model.parameters()), optim)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, optim, steps))

    def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.flatten(0, 1), y.flatten())

    return model, opt, sched, data.train_dataloader(), loss_fn, CLIP


def _cnn_parts(steps: int):  # noqa: ANN202
    """The ResNet, optimizer, schedule, loader, loss and clip of cnn/glyphs, read from the recipe."""
    import torch
    import torch.nn.functional as F

    from bigtrain.data import ImageDataModule
    from bigtrain.lightning_cli import resolve
    from bigtrain.models.cnn.model import PRESETS, ResNet, ResNetConfig
    from bigtrain.models.config import resolve as resolve_net
    from bigtrain.models.optim import OptimConfig, build_optimizer, lr_factor

    config = resolve("fit", ["--recipe", "cnn/glyphs"])
    data = ImageDataModule(**config["data"]["init_args"])
    data.setup("fit")
    args = config["model"]["init_args"]
    torch.manual_seed(config["seed_everything"])
    sizes = {"in_channels": data.channels, "num_classes": data.num_classes}
    model = ResNet(resolve_net(ResNetConfig(**{**args["net"], **sizes}), PRESETS))
    optim = OptimConfig(**args["optim"])
    opt = build_optimizer(list(model.parameters()), optim)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, optim, steps))

    def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, label_smoothing=args["label_smoothing"])

    return model, opt, sched, data.train_dataloader(), loss_fn, config["trainer"].get("gradient_clip_val")


def raw(net: str, steps: int) -> None:
    """The hand-written loop: forward, loss, backward, clip, step, schedule."""
    import torch

    model, opt, sched, loader, loss_fn, clip = _parts(net, steps)
    step = 0
    while step < steps:
        for x, y in loader:
            CLOCK.step_started()
            loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            sched.step()
            CLOCK.step_ended()
            step += 1
            if step == steps:
                break


def _timer():  # noqa: ANN202
    from lightning.pytorch import Callback

    class StepTimer(Callback):
        def on_train_batch_start(self, *args) -> None:  # noqa: ANN002, D102
            CLOCK.step_started()

        def on_train_batch_end(self, *args) -> None:  # noqa: ANN002, D102
            CLOCK.step_ended()

    return StepTimer()


def lightning(net: str, steps: int) -> None:
    """A plain LightningModule around the same GPT, `self.log` of the loss, Lightning's defaults."""
    import torch.nn.functional as F
    from lightning.pytorch import LightningModule, Trainer

    if net == "cnn":
        raise SystemExit("benchmarks.contenders: no plain Lightning contender for --net cnn")
    model, opt, sched, loader, _, _ = _parts(net, steps)

    class Plain(LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201, D102
            x, y = batch
            loss = F.cross_entropy(self.net(x).flatten(0, 1), y.flatten())
            self.log("train/loss", loss, prog_bar=True)
            return loss

        def configure_optimizers(self):  # noqa: ANN201, D102
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    with tempfile.TemporaryDirectory() as root:
        trainer = Trainer(
            max_steps=steps, gradient_clip_val=CLIP, enable_progress_bar=False, callbacks=[_timer()],
            default_root_dir=root, log_every_n_steps=20,
        )  # fmt: skip
        trainer.fit(Plain(), loader)


def bigtrain(net: str, steps: int) -> None:
    """`bigtrain fit --recipe transformer/builtin-char` (or cnn/glyphs), defaults, no progress bar, no
    validation."""
    from bigtrain.lightning_cli import run

    if net == "cnn":
        with tempfile.TemporaryDirectory() as root:
            run("fit", ["--recipe", "cnn/glyphs", "--trainer.max_steps", str(steps), "--trainer.max_epochs",
                        "-1", "--trainer.enable_progress_bar", "false", "--trainer.limit_val_batches", "0",
                        "--run_dir", f"{root}/run",
                        "--trainer.callbacks+=benchmarks.contenders.StepTimer"])  # fmt: skip
        return
    sizes = [a for k, v in NETS[net].items() if k != "batch" for a in (f"--model.net.{k}", str(v))]
    with tempfile.TemporaryDirectory() as root:
        run("fit", ["--recipe", "transformer/builtin-char", *sizes,
                    "--data.batch_size", str(NETS[net]["batch"]), "--trainer.max_steps", str(steps),
                    "--trainer.enable_progress_bar", "false", "--trainer.limit_val_batches", "0",
                    "--model.sample_tokens", "0", "--run_dir", f"{root}/run",
                    "--trainer.callbacks+=benchmarks.contenders.StepTimer"])  # fmt: skip


def __getattr__(name: str):  # noqa: ANN202
    """`benchmarks.contenders.StepTimer`, made on demand so that `raw` never imports Lightning."""
    if name == "StepTimer":
        return type(_timer())
    raise AttributeError(name)


def main() -> None:
    """Run one contender and write its result."""
    parser = argparse.ArgumentParser()
    parser.add_argument("contender", choices=["raw", "lightning", "bigtrain"])
    parser.add_argument("--net", choices=sorted(NETS), default="fixed")
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    # The module by its package name: a recipe's callback path imports that one, not `__main__`.
    import benchmarks.contenders as this

    getattr(this, args.contender)(args.net, args.steps)
    Path(args.out).write_text(json.dumps(this.CLOCK.result()))


if __name__ == "__main__":
    sys.exit(main())
