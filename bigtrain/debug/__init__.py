"""`bigtrain debug`: any recipe shrunk to one device, checked, and reported in one table.

Modules: `shrink` (the overrides that make a run small), `probe` (the callback that watches the steps),
`tensors` (statistics of batches and tensors), `checks` (a verdict per check), `session` (the run itself,
through bigtrain's LightningCLI), `report` (the table and `debug.json`), `replay` and `replay_state`
(`--from RUN_DIR`: one step of a run, replayed).
"""

from __future__ import annotations

from typing import Any


def run(source: list[str], args: Any, overrides: list[str]) -> int:
    """Shrink, run and check the recipe named by `source` (`--recipe NAME` or `--config FILE`)."""
    import os

    from bigtrain.config_files import check_config_files
    from bigtrain.quiet import silence_known_noise
    from bigtrain.run_names import RUN_DIR_ENV

    silence_known_noise()
    _quiet_lightning()
    check_config_files([*source, *overrides])
    owns_env = RUN_DIR_ENV not in os.environ
    try:
        return _run(source, args, overrides)
    finally:
        if owns_env:
            os.environ.pop(RUN_DIR_ENV, None)


def run_replay(run_dir: str, step: int | None, rank: int, **options: Any) -> int:
    """`bigtrain debug --from RUN_DIR [--step K] [--rank R]`: one step of a run, replayed on one device
    (`options`: `replay.replay`'s details, global_batch, catch_up_max)."""
    import os

    from bigtrain.debug.replay import replay
    from bigtrain.quiet import silence_known_noise
    from bigtrain.run_names import RUN_DIR_ENV

    silence_known_noise()
    _quiet_lightning()
    owns_env = RUN_DIR_ENV not in os.environ
    try:
        return replay(run_dir, step, rank, **options)
    finally:
        if owns_env:
            os.environ.pop(RUN_DIR_ENV, None)


def _run(source: list[str], args: Any, overrides: list[str]) -> int:
    if getattr(args, "layout", None):
        from bigtrain.debug.simulate import simulate

        return simulate(source, args, overrides)
    import torch

    from bigtrain.debug import report
    from bigtrain.debug.session import DebugCLI, Options, min_steps, verdicts
    from bigtrain.debug.shrink import shrink
    from bigtrain.lightning_cli import build_cli, resolve

    config = resolve("fit", [*source, *overrides])
    gpu = torch.cuda.is_available()
    user_keys = {a[2:].split("=", 1)[0] for a in overrides if a.startswith("--")}
    small = shrink(config, tiny=args.tiny, keep_size=args.keep_size, gpu=gpu, user_keys=user_keys)
    steps = min_steps(args.checks, args.steps)
    options = Options(checks=args.checks, steps=steps, trace=args.trace)
    knobs = {
        "max_steps": steps, "max_epochs": -1, "limit_val_batches": 0, "num_sanity_val_steps": 0,
        "val_check_interval": 1.0, "check_val_every_n_epoch": 1, "logger": "false",
        "enable_checkpointing": "false", "enable_progress_bar": "false", "enable_model_summary": "false",
        "log_every_n_steps": 1, "accumulate_grad_batches": 1, "max_time": "null",
    }  # fmt: skip
    argv = [*source, *small.args, *[x for k, v in knobs.items() for x in (f"--trainer.{k}", str(v))]]
    cls = type("DebugCLI", (DebugCLI,), {"options": options})
    cli = build_cli("fit", [*argv, *overrides], cls)
    learn = " (ends once the loss has fallen enough)" if "learns" in args.checks else ""
    plural = "s" if steps > 1 else ""
    changes = [*small.changes, f"up to {steps} step{plural} on one fixed batch{learn}"]
    lrs = cli.probe.seen.lrs
    if lrs:
        changes.append("learning rate held at " + ", ".join(f"{x:g}" for x in lrs) + " (no warm-up/decay)")
    rows = verdicts(cli, options)
    recipe = source[1]
    device = str(cli.model.device) if hasattr(cli.model, "device") else "cpu"
    params = sum(p.numel() for p in cli.model.parameters())
    description = f"{type(cli.model).__name__}, {params:,} parameters, on {device}"
    report.write(cli.run_dir, recipe, changes, rows)
    report.show(recipe, description, changes, rows, cli.run_dir, details=args.details)
    return 0 if report.passed(rows) else 1


def _quiet_lightning() -> None:
    """Lightning's info lines (devices found, seed set) would push the report off one screen."""
    import logging

    import lightning.pytorch  # noqa: F401  (it sets its loggers' levels when imported)

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
