"""`bigtrain debug --from RUN_DIR [--step K] [--rank R]`: step K+1 of a run, as rank R took it, on one device.

The run's own config.yaml builds the module and DataModule (one process, one device). The checkpoint at or
before step K (a file or a sharded folder, through bigtrain's one safe loader) gives the weights, rank R's
random generators and the training loader's position; the DataModule's own loader, told it is rank R's
data-parallel share (the sampler arithmetic of `bigtrain.strategies.batch`), moved to the position of step
K+1, gives the batch. The module's own training_step then runs once under the debug probe: forward hooks
name the first module whose output went non-finite, anomaly detection names the backward node, and the
gradient check reads every parameter's gradient.
"""

from __future__ import annotations

import time
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from bigtrain.debug.checks import Verdict
from bigtrain.debug.replay_catchup import CATCH_UP_MAX, catch_up, check_limit
from bigtrain.debug.replay_state import Ranks, Replay, batches_ahead, epoch_length, one_device, position
from bigtrain.debug.session import DebugCLI
from bigtrain.debug.tensors import leaves
from bigtrain.errors import UserError

CHECKS = ("data", "nan", "grads")
"""The debug checks a replayed step runs (the others need many steps)."""
SHOWN = 16
"""Sample indices printed; debug.json keeps them all."""


class LoadCheckpoint(Callback):
    """Loads the checkpoint's weights once the module is built, and rank R's generators before the step."""

    def __init__(self, replay: Replay) -> None:
        self.replay = replay

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        state = self.replay.weights or self.replay.checkpoint.get("state_dict") or {}
        try:
            pl_module.load_state_dict(state, strict=True)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[:2]
            raise UserError(
                f"checkpoint {str(self.replay.path)!r} does not fit the module its run's config.yaml builds "
                f"({' '.join(line.strip() for line in first)[:200]})"
            ) from err

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, idx: int
    ) -> None:  # noqa: D102
        if idx:
            return
        from bigtrain.callbacks.resume_state import restore_rng

        rng = ((self.replay.checkpoint.get("callbacks") or {}).get("ResumeState") or {}).get("rng")
        if rng and all(v.shape[0] > self.replay.ranks.rank for v in rng.values()):
            # Dropout masks and other draws of the step come from the generators rank R had then.
            restore_rng({name: v[self.replay.ranks.rank] for name, v in rng.items()})


class ReplayCLI(DebugCLI):
    """The debug run of one replayed step: the checkpoint's weights, rank R's batch of step K+1."""

    replay: Replay
    one_step = True

    def prepare_trainer_config(self, config: dict[str, Any]) -> None:
        """The probe (see DebugCLI) and the checkpoint loader."""
        super().prepare_trainer_config(config)
        config["callbacks"] = [*config["callbacks"], LoadCheckpoint(self.replay)]

    def read_batches(self, loader: Any) -> tuple[list[Any], list[float]]:
        """Rank R's micro-batches of step K+1 (with `global_batch`, every share's, joined in rank order)
        from the DataModule's own loader; their sample indices are kept as `samples`."""
        replay = self.replay
        shares = range(replay.ranks.layout.size) if replay.global_batch else [replay.ranks.dp_rank]
        parts = [self._share(loader, share) for share in shares]
        micro = replay.accumulation
        rows = len(parts[0][0]) // micro
        batches = [join([part[1][j] for part in parts]) for j in range(micro)]
        seconds = [sum(part[2][j] for part in parts) for j in range(micro)]
        self.samples = [v for j in range(micro) for part in parts for v in part[0][j * rows : (j + 1) * rows]]
        self.batches = batches
        self.where["rows_per_batch"] = rows * len(parts)
        self.where["share_rows"] = rows
        return batches, seconds

    def _share(self, loader: Any, share: int) -> tuple[list[int], list[Any], list[float]]:
        """One data-parallel share's sample indices, micro-batches, and the seconds each took."""
        from bigtrain.data.base import EpochSampler, ResumableDataLoader
        from bigtrain.debug.replay_state import loader_state

        replay, datamodule = self.replay, self.datamodule
        # The DataModule asks the trainer for its share; this one-device trainer would say "1 of 1".
        datamodule._ranks = lambda: (replay.ranks.layout.size, share)
        made = loader()
        if not isinstance(made, ResumableDataLoader) or not isinstance(made.sampler, EpochSampler):
            raise UserError(
                f"{type(datamodule).__name__}'s training loader is not bigtrain's resumable one: the "
                "batch of a step cannot be rebuilt from a checkpoint"
            )
        length = epoch_length(len(made), replay.limit)
        ahead = batches_ahead(replay.checkpoint, replay.step - replay.saved_step, replay.accumulation)
        epoch, first = position(loader_state(replay.checkpoint), ahead, length)
        made.sampler.set_epoch(epoch)
        rows = made.batch_size
        values = list(islice(iter(made.sampler), first * rows, (first + replay.accumulation) * rows))
        made.load_state_dict({"epoch": epoch, "batches": first})
        batches, seconds, it = [], [], iter(made)
        for _ in range(replay.accumulation):
            start = time.perf_counter()
            batches.append(next(it))
            seconds.append(time.perf_counter() - start)
        self.where = {"epoch": epoch, "loader_batch": first}
        n = len(made.sampler.dataset)
        return [v % n for v in values], batches, seconds


def join(parts: list[Any]) -> Any:
    """Batches of the same structure (tensors, tuples, lists, dicts) joined along the first dimension."""
    first = parts[0]
    if len(parts) == 1:
        return first
    if isinstance(first, torch.Tensor):
        return torch.cat(parts)
    if isinstance(first, (list, tuple)):
        return type(first)(join(list(items)) for items in zip(*parts, strict=True))
    if isinstance(first, dict):
        return {key: join([part[key] for part in parts]) for key in first}
    raise UserError(f"--global-batch: a batch holding a {type(first).__name__} cannot be joined")


def build_argv(
    config_file: Path, trainer: dict[str, Any], accumulation: int, gpu: bool, run_dir: Path
) -> tuple[list[str], list[str]]:
    """The command line that builds the run's classes for one device, and one line per setting changed."""
    args, changes = one_device(trainer, gpu)
    knobs = {
        "max_steps": 1, "max_epochs": -1, "limit_val_batches": 0, "num_sanity_val_steps": 0,
        "val_check_interval": 1.0, "check_val_every_n_epoch": 1, "logger": "false",
        "enable_checkpointing": "false", "enable_progress_bar": "false", "enable_model_summary": "false",
        "log_every_n_steps": 1, "accumulate_grad_batches": accumulation, "max_time": "null",
        "limit_train_batches": "null",
    }  # fmt: skip
    args += [x for k, v in knobs.items() for x in (f"--trainer.{k}", str(v))]
    args += ["--run_dir", str(run_dir), "--ckpt_path", "null"]
    return ["--config", str(config_file), *args], changes


def sample_verdict(cli: ReplayCLI) -> Verdict:
    """Which samples of the batch carry NaN/Inf inputs, and whose rows of the first non-finite module output
    are non-finite; pass when neither."""
    samples = getattr(cli, "samples", [])
    details: dict[str, Any] = {
        "samples": samples,
        **getattr(cli, "where", {}),
        "losses": losses(cli),
    }
    rows = details.get("rows_per_batch") or len(samples) or 1
    inputs = [j * rows + r for j, b in enumerate(getattr(cli, "batches", [])) for r in _nonfinite_rows(b)]
    found = cli.probe.seen.nonfinite
    parts = []
    if inputs:
        details["nonfinite_input_samples"] = [samples[i] for i in inputs if i < len(samples)]
        parts.append(f"NaN/Inf inputs in sample(s) {_indices(details['nonfinite_input_samples'])} "
                     f"(batch row(s) {_indices(inputs)})")  # fmt: skip
    if found is not None:
        bad, offset = found.get("rows"), found.get("batch", 0) * rows
        out_rows = (
            found["output"][0]["shape"][0] if found.get("output") and found["output"][0]["shape"] else 0
        )
        if bad and out_rows == rows and len(bad) < rows:
            details["nonfinite_output_samples"] = [
                samples[offset + i] for i in bad if offset + i < len(samples)
            ]
            parts.append(f"{found['module']}'s output non-finite for sample(s) "
                         f"{_indices(details['nonfinite_output_samples'])}")  # fmt: skip
        else:
            parts.append(f"{found['module']}'s output non-finite in every sample's row: no single sample")
    if not parts:
        return Verdict("samples", "pass", f"{len(samples)} samples: finite inputs and outputs", details)
    return Verdict("samples", "FAIL", "; ".join(parts), details)


def losses(cli: ReplayCLI) -> list[float]:
    """Each micro-batch's loss as training_step returned it (the probe sees it over the accumulation)."""
    return [x * cli.replay.accumulation for x in cli.probe.seen.losses]


def _nonfinite_rows(batch: Any) -> list[int]:
    """Rows (samples) of a batch whose floating-point tensors hold a NaN/Inf."""
    bad: set[int] = set()
    for _, t in leaves(batch):
        if t.is_floating_point() and t.dim() > 0:
            bad.update((~torch.isfinite(t)).reshape(t.shape[0], -1).any(dim=1).nonzero().flatten().tolist())
    return sorted(bad)


def _indices(values: list[int]) -> str:
    more = f" ... ({len(values)} in all)" if len(values) > SHOWN else ""
    return ", ".join(map(str, values[:SHOWN])) + more


def replay(
    run_dir: str,
    step: int | None,
    rank: int,
    *,
    details: bool = False,
    global_batch: bool = False,
    catch_up_max: int | None = CATCH_UP_MAX,
) -> int:
    """Replay step `step + 1` (default: the one after the newest checkpoint) of rank `rank` of the run in
    `run_dir` on one device (`global_batch`: every rank's share together), after training up to step `step`
    from an older checkpoint (at most `catch_up_max` steps; None: on the checkpoint's weights), in a new debug
    run directory (the replayed run is left as it is); 0 when finite with healthy gradients, 1 when not."""
    from bigtrain.checkpoints.load import load_checkpoint
    from bigtrain.config_files import check_config_files
    from bigtrain.debug import report
    from bigtrain.debug.replay_state import check_step, pick_checkpoint, run_config, run_ranks, synced_norm
    from bigtrain.debug.session import Options, verdicts
    from bigtrain.lightning_cli import build_cli
    from bigtrain.run_names import fresh_run_dir

    config_file, config = run_config(run_dir)
    trainer = config["trainer"]
    if step is not None:
        check_step(trainer, step)
    path, saved = pick_checkpoint(config_file.parent, step)
    step = saved if step is None else step
    check_step(trainer, step)
    check_config_files(["--config", str(config_file)])
    if catch_up_max is not None:
        check_limit(saved, step, catch_up_max)  # before the checkpoint of a big model is loaded
    checkpoint = load_checkpoint(path)
    ranks = run_ranks(trainer, checkpoint, rank)
    limit = trainer.get("limit_train_batches")
    plan = Replay(checkpoint, path, saved, step, ranks, _accumulation(config, ranks), limit, global_batch)
    debug_dir = fresh_run_dir(f"{config.get('recipe_name') or config_file.parent.name}-replay")
    if saved < step and catch_up_max is not None:
        catch_up(config_file, config, plan, debug_dir)  # trains to step K; the replay takes its weights
    argv, changes = build_argv(config_file, trainer, plan.accumulation, torch.cuda.is_available(), debug_dir)
    options = Options(checks=CHECKS, steps=1)
    cli = build_cli("fit", argv, type("ReplayCLI", (ReplayCLI,), {"options": options, "replay": plan}))
    if cli.probe.seen.nonfinite is not None:
        cli.probe.seen.nonfinite["step"] = step + 1  # the probe counts this run's own steps from 0
    rows = [*verdicts(cli, options), sample_verdict(cli)]
    lines = report_lines(cli, synced_norm(trainer, ranks.layout))
    report.write(cli.run_dir, f"--from {run_dir}", [*lines, *changes], rows)
    model = f"replay of {type(cli.model).__name__} on {cli.model.device}"
    report.show(f"--from {run_dir}", model, changes, rows, cli.run_dir, details=details, notes=lines)
    return 0 if report.passed(rows) else 1


def _accumulation(config: dict[str, Any], ranks: Ranks) -> int:
    """Loader batches per optimizer step: the micro-batches of a rank's share, else the trainer's setting."""
    from bigtrain.strategies.batch import split_batch

    data = (config.get("data") or {}).get("init_args") or {}
    if data.get("micro_batch_size") and data.get("batch_size"):
        return split_batch(int(data["batch_size"]), ranks.layout, int(data["micro_batch_size"])).accumulation
    value = config["trainer"].get("accumulate_grad_batches") or 1
    return value if isinstance(value, int) else 1


def report_lines(cli: ReplayCLI, synced: bool) -> list[str]:
    """The lines under the report's title: the checkpoint, the step's rank and samples, the loss, caveats."""
    from bigtrain.torch_compat import BatchNormBase

    plan, where = cli.replay, getattr(cli, "where", {})
    ranks, step, saved = plan.ranks, plan.step, plan.saved_step
    seen = losses(cli)
    loss = "loss " + ", ".join(f"{x:.4g}" for x in seen) if seen else "no loss"
    loss += f" ({len(seen)} micro-batches)" if len(seen) > 1 else ""
    share = f"rank {ranks.rank} (data-parallel rank {ranks.dp_rank} of {ranks.layout.size}"
    if plan.global_batch:
        a = ranks.dp_rank * where.get("share_rows", 0)
        share = f"all {ranks.layout.size} data-parallel shares joined (rank {ranks.rank}'s: rows {a}.."
        share += f"{a + where.get('share_rows', 0) - 1} of each batch"
    kind = ", sharded" if plan.path.is_dir() else ""
    lines = [
        f"checkpoint {plan.path.name} (step {saved}{kind}) of a run on {ranks.layout.world} rank(s)",
        f"step {step + 1} on {share}; epoch {where.get('epoch', '?')}, loader batch "
        f"{where.get('loader_batch', '?')}): samples {_indices(getattr(cli, 'samples', []))}; {loss}",
    ]
    if plan.caught_up is not None:
        lines.insert(1, plan.caught_up.line())
    elif saved < step:
        lines.append(
            f"weights of step {saved}: the {step - saved} step(s) after it are not re-trained (--no-catch-up)"
        )
    norms = any(isinstance(m, BatchNormBase) for m in cli.model.modules())
    if synced and norms and not plan.global_batch:
        lines.append(
            f"BatchNorm normalised over all {ranks.layout.size} shares in the run, over this one here: the "
            "loss is not the run's (where a NaN starts is; --global-batch replays every share together)"
        )
    return lines
