"""The `trainer.strategy` setting: short names, their classes, and what `auto` picks.

On the command line `--trainer.strategy fsdp` is rewritten to the class path before parsing, so options can
follow it (`--trainer.strategy.mixed_precision bf16`): jsonargparse cannot nest options under a plain string.
In a recipe, `strategy: fsdp` stays a string until the Trainer is built, where `resolve_strategy` maps it.
Lightning never sees the names `fsdp` or `single` (its `fsdp` is FSDP1, which refuses CPUs).
"""

from __future__ import annotations

from typing import Any

from bigtrain.errors import UserError, closest

STRATEGY_CLASSES: dict[str, str] = {
    "single": "bigtrain.strategies.Single",
    "ddp": "bigtrain.strategies.DDP",
    "fsdp": "bigtrain.strategies.FSDP",
}
"""bigtrain's short strategy names and the classes they stand for."""

STRATEGY_NAMES = ("single", "ddp", "fsdp", "auto")
"""Every short name `trainer.strategy` accepts."""

_OPTION = "--trainer.strategy"


def expand_strategy_argv(args: list[str]) -> list[str]:
    """Rewrite `--trainer.strategy single|ddp|fsdp` (or `=fsdp`, or `--trainer.strategy.help fsdp`) to its
    class path, so options may follow."""
    out, i = [], 0
    while i < len(args):
        arg = args[i]
        if (
            arg in (_OPTION, _OPTION + ".help")
            and i + 1 < len(args)
            and args[i + 1].lower() in STRATEGY_CLASSES
        ):
            out += [arg, STRATEGY_CLASSES[args[i + 1].lower()]]
            i += 2
            continue
        flag, _, name = arg.partition("=")
        if flag in (_OPTION, _OPTION + ".help") and name.lower() in STRATEGY_CLASSES:
            arg = f"{flag}={STRATEGY_CLASSES[name.lower()]}"
        out.append(arg)
        i += 1
    return out


def resolve_strategy(
    value: Any, trainer_config: dict[str, Any], model: Any = None, datamodule: Any = None
) -> Any:
    """The Strategy for a `trainer.strategy` value: bigtrain's short names become instances, others pass.

    `auto` asks `bigtrain.plan` which strategy fits `model` on the trainer's devices. Also takes
    `trainer.sync_batchnorm` over (Lightning's conversion fails on CPUs and drops a family's own BatchNorm
    class): bigtrain's strategies synchronise BatchNorm themselves.
    """
    from lightning.pytorch.strategies import ModelParallelStrategy, Strategy

    from bigtrain.strategies.ddp import DDP, Single
    from bigtrain.strategies.fsdp import FSDP

    if isinstance(value, str):
        value = _from_name(value, trainer_config, model, datamodule)
    if isinstance(value, ModelParallelStrategy) and not isinstance(value, FSDP):
        # It shards nothing itself: without bigtrain's plan the ranks would not even average gradients.
        raise UserError("trainer.strategy ModelParallelStrategy: use 'fsdp' (FSDP2 with the family's plan)")
    if isinstance(value, Single) and trainer_config.get("devices", "auto") in ("auto", None):
        trainer_config["devices"] = 1  # `auto` means every device: single takes the first
    if isinstance(value, FSDP) and value.tensor_parallel_size > 1 and model is not None:
        check_tensor_parallel(value.tensor_parallel_size, model, datamodule)
    if isinstance(value, (DDP, FSDP)):
        value.sync_batchnorm = value.sync_batchnorm or bool(trainer_config.get("sync_batchnorm"))
    if isinstance(value, (DDP, FSDP, Single)):
        trainer_config["sync_batchnorm"] = False
    elif not isinstance(value, (str, Strategy)):
        raise UserError(
            f"trainer.strategy must be one of {', '.join(STRATEGY_NAMES)} or a Strategy, got {value!r}"
        )
    return value


def _from_name(value: str, trainer_config: dict[str, Any], model: Any, datamodule: Any) -> Any:
    """A bigtrain strategy for a short name or one of its class paths; other names stay Lightning's."""
    from lightning.pytorch.strategies import FSDPStrategy

    from bigtrain.strategies.ddp import DDP, Single
    from bigtrain.strategies.fsdp import FSDP

    name = value.lower()
    # A class path without options stays a string through jsonargparse (the type is `str | Strategy`).
    name = {path.lower(): short for short, path in STRATEGY_CLASSES.items()}.get(name, name)
    options: dict[str, Any] = {}
    if name == "auto":
        name, options = auto_strategy(trainer_config, model, datamodule)
    if name in STRATEGY_CLASSES:
        return {"single": Single, "ddp": DDP, "fsdp": FSDP}[name](**options)
    if name in FSDPStrategy.get_registered_strategies():
        raise UserError(
            f"trainer.strategy '{value}' is Lightning's FSDP1; use 'fsdp' (FSDP2, with options such as "
            f"--trainer.strategy.cpu_offload true)"
        )
    _check_known(value)
    return value


def _check_known(value: str) -> None:
    """One line for a name neither bigtrain nor Lightning knows, suggesting the nearest (`dpp` -> `ddp`)."""
    from lightning.pytorch.strategies import FSDPStrategy, StrategyRegistry

    if "." in value:
        return  # a class path: jsonargparse or Lightning says whether it imports
    fsdp1 = set(FSDPStrategy.get_registered_strategies())
    lightning = sorted(n for n in StrategyRegistry.available_strategies() if n not in fsdp1)
    if value in lightning:
        return
    near = closest(value.lower(), [*STRATEGY_NAMES, *lightning])
    hint = f"; did you mean '{near}'?" if near else ""
    valid = ", ".join(sorted(STRATEGY_NAMES))
    # Lightning's ~30 registered names would drown bigtrain's; name two and where the rest are.
    raise UserError(
        f"unknown strategy '{value}'{hint} (valid: {valid}, or a name in Lightning's StrategyRegistry "
        f"such as ddp_spawn or deepspeed)"
    )


def check_tensor_parallel(tp_size: int, model: Any, datamodule: Any) -> None:
    """UserError, before any rank starts, when the model has no tensor-parallel plan for tp_size ranks."""
    from bigtrain.plan import plannable_network

    net = plannable_network(model, datamodule)
    if net is None:
        return  # not a bigtrain network: parallelize() decides once the network exists
    if not callable(getattr(net, "tp_plan", None)):
        raise UserError(
            f"trainer.strategy.tensor_parallel_size {tp_size}: {type(net).__name__} has no tensor-parallel "
            f"plan (only the transformer family has one); use tensor_parallel_size 1"
        )
    net.tp_plan(tp_size)  # checks the degree against the network (e.g. its attention heads)


def auto_strategy(
    trainer_config: dict[str, Any], model: Any = None, datamodule: Any = None
) -> tuple[str, dict[str, Any]]:
    """The short name and options `auto` stands for: `single` on one device, else the planner's choice.

    Without a model to plan for (or a model the planner does not know), `ddp`.
    """
    nodes, per_node = device_layout(trainer_config)
    if nodes * per_node == 1:
        return "single", {}
    from bigtrain.plan import plannable_network, recommend

    if model is None or plannable_network(model, datamodule) is None:
        return "ddp", {}
    from lightning.pytorch.utilities import rank_zero_info

    precision = trainer_config.get("precision")
    # Tensor parallelism is the user's explicit choice: auto picked it for tiny models whose global batch
    # could not split across every rank, using more ranks per replica than the model needs.
    choice = recommend(
        model,
        datamodule,
        num_nodes=nodes,
        devices_per_node=per_node,
        precision=precision,
        tensor_parallel=False,
    )
    options: dict[str, Any] = {}
    if choice.strategy == "fsdp":
        options = {
            "tensor_parallel_size": choice.tensor_parallel_size,
            "activation_checkpointing": choice.activation_checkpointing,
        }
    rank_zero_info(f"trainer.strategy auto: {choice.strategy} {options or ''}({choice.reason})")
    return choice.strategy, options


def device_layout(trainer_config: dict[str, Any]) -> tuple[int, int]:
    """(nodes, processes per node) the trainer will run, counting devices as Lightning does."""
    from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator, MPSAccelerator

    nodes = int(trainer_config.get("num_nodes") or 1)
    accelerator = str(trainer_config.get("accelerator") or "auto").lower()
    classes = {"cpu": CPUAccelerator, "gpu": CUDAAccelerator, "cuda": CUDAAccelerator, "mps": MPSAccelerator}
    if accelerator in classes:
        acc = classes[accelerator]
    elif accelerator == "auto":
        acc = next((c for c in (CUDAAccelerator, MPSAccelerator) if c.is_available()), CPUAccelerator)
    else:  # an accelerator bigtrain does not know: assume one device per node
        return nodes, 1
    devices = trainer_config.get("devices", "auto")
    if devices in ("auto", None):
        devices = acc.auto_device_count()
    return nodes, len(acc.get_parallel_devices(acc.parse_devices(devices)))
