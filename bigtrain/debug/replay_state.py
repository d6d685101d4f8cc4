"""What a replay needs from a run directory: its config, the checkpoint at or before a step, its ranks, and
where in the data the next step's batch lies. Nothing here builds a model or reads a batch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bigtrain.checkpoints.manifest import (
    CHECKPOINT_SUFFIX,
    checkpoint_dir,
    read_manifest,
    verify_manifest,
)
from bigtrain.errors import UserError
from bigtrain.strategies.batch import DataParallel, split_ranks

CONFIG_FILE = "config.yaml"


@dataclass(frozen=True)
class Ranks:
    """The run's ranks, and the one replayed."""

    layout: DataParallel
    rank: int

    @property
    def dp_rank(self) -> int:
        """The replayed rank's data-parallel rank: the mesh is (data_parallel, tensor_parallel), row-major,
        so the ranks of one tensor-parallel group are consecutive and load the same share."""
        return self.rank // self.layout.tp


def run_config(run_dir: str) -> tuple[Path, dict[str, Any]]:
    """The run's `config.yaml` and its `fit` settings; UserError when `run_dir` is not a run directory."""
    import yaml

    run = Path(run_dir).expanduser()
    file = run / CONFIG_FILE
    if not run.is_dir() or not file.is_file():
        raise UserError(
            f"--from {run_dir!r} is not a run directory of `bigtrain fit` (no {CONFIG_FILE} in it); give "
            "the directory the run printed at its end"
        )
    from bigtrain.config_files import check_config_file

    check_config_file(file, str(file))  # size and alias bombs, before anything expands it
    try:
        config = yaml.safe_load(file.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise UserError(
            f"{file} cannot be read as YAML ({type(err).__name__}); it is not a run's config"
        ) from err
    if not isinstance(config, dict) or not isinstance(config.get("trainer"), dict):
        raise UserError(f"{file} has no trainer settings: it is not the config.yaml `bigtrain fit` writes")
    return file, config


def checkpoint_steps(run: Path) -> dict[Path, int]:
    """Each checkpoint of the run (file or sharded folder) with the step its manifest records."""
    folder = checkpoint_dir(run)
    if not folder.is_dir():
        return {}
    found = {}
    for path in folder.iterdir():
        if path.suffix != CHECKPOINT_SUFFIX or path.name.startswith(".") or path.is_symlink():
            continue  # `last.ckpt` links to one of the others; hidden names are unfinished writes
        manifest = read_manifest(path)
        step = manifest.get("step") if manifest else None
        if isinstance(step, int) and not isinstance(step, bool):
            found[path] = step
    return found


def pick_checkpoint(run: Path, step: int | None) -> tuple[Path, int]:
    """The newest checkpoint at or before `step` (None: the newest of all) whose files match its manifest."""
    found = checkpoint_steps(run)
    if not found:
        raise UserError(
            f"run directory {str(run)!r} has no finished checkpoint in checkpoints/: nothing to replay"
        )
    eligible = {p: s for p, s in found.items() if step is None or s <= step}
    steps = ", ".join(str(s) for s in sorted(set(found.values())))
    if not eligible:
        raise UserError(
            f"run directory {str(run)!r} has no checkpoint at or before step {step} (its checkpoints are at "
            f"step {steps}); give --step {min(found.values())} or later"
        )
    # The highest step; of two at one step (a restarted run), the newer file.
    path = max(eligible, key=lambda p: (eligible[p], p.stat().st_mtime_ns, p.name))
    problem = verify_manifest(path)
    if problem is not None:
        raise UserError(f"checkpoint {str(path)!r} is broken ({problem}); give an earlier --step")
    return path, eligible[path]


def _int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return int(value) if isinstance(value, str) and value.isdigit() else None


def run_ranks(trainer: dict[str, Any], checkpoint: dict[str, Any], rank: int) -> Ranks:
    """The run's data-parallel x tensor-parallel layout (from the ranks whose RNG states the checkpoint
    holds, else from trainer.num_nodes x devices) and the replayed rank; UserError if `rank` is not one."""
    saved = (checkpoint.get("callbacks") or {}).get("ResumeState") or {}
    world = _int(saved.get("world_size"))
    nodes = _int(trainer.get("num_nodes")) or 1
    if world is None:
        devices = trainer.get("devices")
        count = len(devices) if isinstance(devices, list) else _int(devices)
        world = nodes * (count or 1)
    strategy = trainer.get("strategy")
    options = (strategy.get("init_args") or {}) if isinstance(strategy, dict) else {}
    tp = _int(options.get("tensor_parallel_size")) or 1
    layout = split_ranks(world, tp, _int(options.get("data_parallel_size")), nodes=nodes)
    if rank >= world:
        raise UserError(f"--rank {rank} is not a rank of this run: it ran on {world} rank(s), 0..{world - 1}")
    return Ranks(layout, rank)


def check_step(trainer: dict[str, Any], step: int) -> None:
    """UserError when step `step + 1` lies beyond the run's `trainer.max_steps`."""
    last = _int(trainer.get("max_steps"))
    if last is not None and last > 0 and step >= last:
        raise UserError(
            f"--step {step} is beyond the run: it trains {last} steps (trainer.max_steps), so step "
            f"{step + 1} never ran; the last step to replay is --step {last - 1}"
        )


def loader_state(checkpoint: dict[str, Any]) -> dict[str, int]:
    """The training loader's saved position, `{"epoch": E, "batches": B}`; UserError without one."""
    fit = (checkpoint.get("loops") or {}).get("fit_loop") or {}
    states = (fit.get("state_dict") or {}).get("combined_loader") or []
    state = states[0] if states and isinstance(states[0], dict) else {}
    if not {"epoch", "batches"} <= state.keys():
        raise UserError(
            "the checkpoint holds no position of a bigtrain training loader (a DataModule that is not a "
            "BigtrainDataModule): the batch of the next step cannot be rebuilt"
        )
    # A checkpoint saved mid-step (the non-finite guard's "last good state") has handed out the batch of the
    # step it did not take: the loop counts it as ready, not processed, and so does the step replayed.
    progress = (fit.get("epoch_loop.batch_progress") or {}).get("current") or {}
    untaken = max(int(progress.get("ready", 0)) - int(progress.get("processed", 0)), 0)
    return {"epoch": int(state["epoch"]), "batches": max(int(state["batches"]) - untaken, 0)}


def epoch_length(loader_batches: int, limit: Any) -> int:
    """Loader batches in one epoch of the run: all of them, or `trainer.limit_train_batches` of them."""
    if isinstance(limit, int) and not isinstance(limit, bool):
        return min(loader_batches, limit)
    if isinstance(limit, float) and limit < 1.0:
        return int(loader_batches * limit)
    return loader_batches


def position(state: dict[str, int], ahead: int, length: int) -> tuple[int, int]:
    """(epoch, loader batch within it) `ahead` loader batches after a saved loader state; an epoch handed out
    to its end continues at the next one's first batch."""
    if length < 1:
        raise UserError("the run's training loader yields no batch per epoch: there is no step to replay")
    at = state["epoch"] * length + state["batches"] + ahead
    return divmod(at, length)


def synced_norm(trainer: dict[str, Any], layout: DataParallel) -> bool:
    """Whether the run's BatchNorm layers normalised over every data-parallel share (bigtrain's DDP and FSDP
    do unless `sync_batchnorm: false`), so that a rank's step also depended on the other ranks' samples."""
    strategy = trainer.get("strategy")
    path = strategy.get("class_path", "") if isinstance(strategy, dict) else str(strategy or "")
    options = (strategy.get("init_args") or {}) if isinstance(strategy, dict) else {}
    name = path.rpartition(".")[2].lower()
    synced = bool(trainer.get("sync_batchnorm"))
    if name in ("ddp", "fsdp"):
        synced = synced or options.get("sync_batchnorm", True) is not False
    return synced and layout.size > 1


def batches_ahead(checkpoint: dict[str, Any], steps: int, accumulation: int) -> int:
    """Loader batches that `steps` more optimizer steps take: at the checkpoint's own ratio of batches to
    steps (a GAN steps twice a batch, accumulation once in several), else `accumulation` a step."""
    fit = (checkpoint.get("loops") or {}).get("fit_loop") or {}
    processed = ((fit.get("epoch_loop.batch_progress") or {}).get("total") or {}).get("processed")
    done = checkpoint.get("global_step")
    if isinstance(processed, int) and isinstance(done, int) and processed > 0 and done > 0:
        return steps * processed // done
    return steps * accumulation


def one_device(trainer: dict[str, Any], gpu: bool) -> tuple[list[str], list[str]]:
    """The overrides that run the run's classes in one process on one device, and one line per change."""
    precision = str(trainer.get("precision") or "32-true")
    changes = [f"strategy {_strategy_name(trainer.get('strategy'))} -> single, one device"]
    args = ["--trainer.strategy", "single", "--trainer.devices", "1", "--trainer.num_nodes", "1"]
    args += ["--trainer.accelerator", "gpu" if gpu else "cpu", "--data.num_workers", "0"]
    if not gpu and precision.startswith("16"):
        args += ["--trainer.precision", "32-true"]
        changes.append(f"precision {precision} -> 32-true (no float16 kernels on the CPU)")
    return args, changes


def _strategy_name(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("class_path")
    return str(value or "auto").rpartition(".")[2].lower()


@dataclass
class Replay:
    """What to replay: the loaded checkpoint, its step, the step asked for and the rank."""

    checkpoint: dict[str, Any]
    path: Path
    saved_step: int
    step: int
    """K: the batch replayed is the one of step K+1, on the weights of `saved_step` (<= K)."""
    ranks: Ranks
    accumulation: int
    limit: Any
    """The run's trainer.limit_train_batches (an epoch may end before the loader does)."""
    global_batch: bool = False
    """Replay every data-parallel share of the step together, as one batch."""
    caught_up: Any = None
    """The catch-up (a `replay_catchup.CaughtUp`) whose step-K checkpoint gives the weights, if one ran."""
    weights: dict[str, Any] | None = None
    """The weights of step K the catch-up trained (None: the checkpoint's own)."""
