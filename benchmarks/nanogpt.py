"""nanoGPT's protocol: its CPU baby GPT on Tiny Shakespeare through `bigtrain fit` against a plain loop.

    python -m benchmarks.nanogpt [--steps 2000] [--shakespeare DIR] [--out result.json]

`transformer/shakespeare-char-cpu` (nanoGPT's 4-layer, 128-wide baby GPT, 2,000 steps) runs through `bigtrain
fit`, and a plain PyTorch loop trains the same network class with the same optimizer, schedule, clipping and
data loader, both read from the recipe. The two run at the same time, each pinned to its own core with one
thread, so that machine noise hits both alike. Reported for each: the median step time from step 200 on
(wall and CPU time), the time from the first step to the last (bigtrain's validations and text samples
included), and the mean loss over the whole validation split in back-to-back windows of the
context (nanoGPT's own model scores 1.898 there; its printed `val loss` samples random batches instead).

Tiny Shakespeare (`input.txt`) is read from --shakespeare DIR, else `$BIGTRAIN_TEST_DATA/tinyshakespeare`,
else `../shared/data/tinyshakespeare` beside the project; without it this part is skipped with one line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import benchmarks.contenders as contenders

RECIPE = "transformer/shakespeare-char-cpu"
ROOT = Path(__file__).resolve().parents[1]
RESULT: dict[str, float] = {}
"""What the contender of this process measured besides step times (the full-validation loss)."""


def shakespeare_dir(given: str | None) -> Path | None:
    """The folder holding Tiny Shakespeare's input.txt, or None when there is none."""
    data = Path(os.environ.get("BIGTRAIN_TEST_DATA", ROOT.parent / "shared" / "data"))
    folder = Path(given) if given else data / "tinyshakespeare"
    return folder if (folder / "input.txt").is_file() else None


def recipe_args(folder: Path, steps: int) -> list[str]:
    """`bigtrain fit` arguments of the recipe on the local copy of the text, for `steps` steps."""
    return ["--recipe", RECIPE, "--data.path", str(folder), "--data.download", "false",
            "--trainer.max_steps", str(steps)]  # fmt: skip


def full_val_loss(net, data) -> float:  # noqa: ANN001
    """Mean next-token loss over every window of the validation split (the DataModule's, back to back)."""
    import torch
    import torch.nn.functional as F

    total, count = torch.zeros((), dtype=torch.float64), 0
    was_training = net.training
    net.eval()
    with torch.no_grad():
        for x, y in data.val_dataloader():
            loss = F.cross_entropy(net(x).flatten(0, 1), y.flatten(), reduction="sum")
            total += loss.double()
            count += y.numel()
    net.train(was_training)
    return float(total) / count


def _val_callback():  # noqa: ANN202
    from lightning.pytorch import Callback

    class FullValLoss(Callback):
        """Records the full-validation loss of the trained network when training ends."""

        def on_train_end(self, trainer, pl_module) -> None:  # noqa: ANN001, D102
            RESULT["val_loss"] = full_val_loss(pl_module.net, trainer.datamodule)

    return FullValLoss()


def __getattr__(name: str):  # noqa: ANN202
    """`benchmarks.nanogpt.FullValLoss`, made on demand (a callback class named in `bigtrain fit` args)."""
    if name == "FullValLoss":
        return type(_val_callback())
    raise AttributeError(name)


def bigtrain(folder: Path, steps: int) -> None:
    """The recipe through `bigtrain fit`, as a user runs it (validation, samples, checkpoints)."""
    from bigtrain.lightning_cli import run

    with tempfile.TemporaryDirectory() as root:
        run("fit", [*recipe_args(folder, steps), "--run_dir", f"{root}/run",
                    "--trainer.callbacks+=benchmarks.contenders.StepTimer",
                    "--trainer.callbacks+=benchmarks.nanogpt.FullValLoss"])  # fmt: skip


def plain(folder: Path, steps: int) -> None:
    """The hand-written loop over the recipe's network, optimizer, schedule, clipping and loader."""
    import torch
    import torch.nn.functional as F

    from bigtrain.data.text import TextDataModule
    from bigtrain.lightning_cli import resolve
    from bigtrain.models.config import resolve as resolve_net
    from bigtrain.models.optim import OptimConfig, build_optimizer, lr_factor
    from bigtrain.models.transformer.model import GPT, PRESETS, GPTConfig

    config = resolve("fit", recipe_args(folder, steps))
    data = TextDataModule(**config["data"]["init_args"])
    data.setup("fit")
    model_args = config["model"]["init_args"]
    net_cfg = {**model_args["net"], "block_size": data.block_size, "vocab_size": data.vocab_size}
    torch.manual_seed(config["seed_everything"])
    net = GPT(resolve_net(GPTConfig(**net_cfg), PRESETS))
    optim = OptimConfig(**model_args["optim"])
    opt = build_optimizer(list(net.parameters()), optim)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, optim, steps))
    clip, step = config["trainer"]["gradient_clip_val"], 0
    while step < steps:
        for x, y in data.train_dataloader():
            contenders.CLOCK.step_started()
            loss = F.cross_entropy(net(x).flatten(0, 1), y.flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
            opt.step()
            sched.step()
            contenders.CLOCK.step_ended()
            step += 1
            if step == steps:
                break
    RESULT["val_loss"] = full_val_loss(net, data)


def measure(folder: Path, steps: int, rounds: int = 2) -> dict[str, list[dict]]:
    """Both contenders at once, each pinned to its own core (one core: both on it), the cores swapped every
    round; {contender: [result per round]}."""
    results: dict[str, list[dict]] = {"plain": [], "bigtrain": []}
    for r in range(rounds):
        for name, result in _round(folder, steps, shift=r).items():
            results[name].append(result)
            print(f"nanoGPT round {r + 1}: {name} {result}", flush=True)
    return results


def _round(folder: Path, steps: int, shift: int) -> dict[str, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        commands = {
            name: [
                sys.executable,
                "-m",
                "benchmarks.nanogpt",
                "--one",
                name,
                "--steps",
                str(steps),
                "--shakespeare",
                str(folder),
                "--out",
                f"{tmp}/{name}.json",
            ]  # fmt: skip
            for name in ("plain", "bigtrain")
        }
        contenders.run_pinned(commands, shift, "nanoGPT protocol")
        return {name: json.loads(Path(f"{tmp}/{name}.json").read_text()) for name in commands}


def table(results: dict[str, list[dict]], steps: int) -> str:
    """The markdown table: per round, the ms/step of each, bigtrain's ratio, and each full-validation loss;
    then bigtrain's ratio over the rounds (median)."""
    rounds = len(results["plain"])
    lines = [
        f"`{RECIPE}`, {steps} steps, both at once, each on its own core, the cores swapped every round "
        "(goals: bigtrain <= 1.02x the plain loop's ms/step; full-validation loss <= 1.90)",
        "",
        "| round | run | CPU ms/step | vs plain | wall ms/step | vs plain | steps span (s) | full-val loss |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i in range(rounds):
        base = results["plain"][i]
        for name, runs in results.items():
            r = runs[i]
            lines.append(
                f"| {i + 1} | {name} | {r['cpu_ms']:.2f} | {r['cpu_ms'] / base['cpu_ms']:.3f}x | "
                f"{r['step_ms']:.2f} | {r['step_ms'] / base['step_ms']:.3f}x | {r['span_s']:.1f} | "
                f"{r['val_loss']:.4f} |"
            )
    pairs = list(zip(results["plain"], results["bigtrain"], strict=True))
    wall = statistics.median(b["step_ms"] / a["step_ms"] for a, b in pairs)
    loss = statistics.median(b["val_loss"] for _, b in pairs)
    lines += ["", f"bigtrain: {wall:.3f}x the plain loop's wall ms/step (median of {rounds} rounds), "
              f"full-validation loss {loss:.4f}."]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    """Run the protocol and print its table (or one contender, with --one)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--shakespeare", help="folder with Tiny Shakespeare's input.txt")
    parser.add_argument("--one", choices=["plain", "bigtrain"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help="write the results here as JSON")
    args = parser.parse_args()
    folder = shakespeare_dir(args.shakespeare)
    if folder is None:
        print("nanoGPT protocol skipped: no Tiny Shakespeare input.txt (give --shakespeare DIR or set "
              "BIGTRAIN_TEST_DATA)")  # fmt: skip
        return
    if args.one:
        import benchmarks.nanogpt as this  # by its package name: the callback path imports that one

        getattr(this, args.one)(folder, args.steps)
        clock = contenders.CLOCK  # span: first to last step start, bigtrain's validations included
        span = {"span_s": clock.times[-1] - clock.times[0]}
        Path(args.out).write_text(json.dumps({**clock.result(), **span, **this.RESULT}))
        return
    results = measure(folder, args.steps, args.rounds)
    print(table(results, args.steps))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.exit(main())
