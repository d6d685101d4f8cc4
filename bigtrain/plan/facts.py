"""What `bigtrain plan` knows about a model: its meta-device build, counts, optimizer states, activations.

The network is built on the meta device (no memory is allocated, no weights initialised) and the data is read
only as far as its sizes. Everything comes through public hooks: the DataModule's `data_sizes()` and
`sample_shape()`, the LightningModule's `configure_model()` and `configure_optimizers()`, the network's
`blocks()`, `tp_plan()`, `activation_bytes()`, `example_input()` and `example_loss()`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from bigtrain.errors import UserError

TP_DEGREES = (2, 4, 8)
"""Tensor-parallel degrees compared (each must suit the network's plan and divide every split layer)."""

Activations = Callable[[int, int, int, bool], float]
"""(per-device batch, compute bytes, tensor-parallel degree, activation checkpointing) -> bytes."""


@dataclass
class ModelFacts:
    """What the estimates need to know about one model, read from its meta-device build."""

    family: str
    description: str
    params: int
    root_params: int
    """Parameters outside every block (embeddings, stem, head): FSDP gathers them whole."""
    max_block_params: int
    tp_params: int
    """Parameters the tensor-parallel plan splits (networks with a `tp_plan()` only)."""
    tp_degrees: tuple[int, ...]
    states: float
    """Optimizer states per parameter, averaged over the optimizers: AdamW 2, SGD with momentum 1."""
    global_batch: int
    micro_batch: int | None
    activations: Activations = field(repr=False)


def family_of(model: Any) -> str:
    """The name of the package that defines the model's class (a bigtrain family: its folder name)."""
    package = type(model).__module__.rpartition(".")[0]
    return package.rpartition(".")[2] or type(model).__module__


def fill_data_sizes(datamodule: Any) -> None:
    """Give a DataModule its data-derived sizes (vocabulary, classes, channels, side), reading little."""
    if callable(getattr(datamodule, "data_sizes", None)):
        datamodule.data_sizes()
    elif hasattr(datamodule, "setup"):
        datamodule.setup("fit")


def sample_shape(datamodule: Any) -> tuple[int, ...] | None:
    """The DataModule's `sample_shape()`, or None when it has none."""
    hook = getattr(datamodule, "sample_shape", None)
    return hook() if callable(hook) else None


def meta_copy(model: Any, datamodule: Any) -> Any:
    """A fresh copy of `model` (from its hyper-parameters) whose network is built on the meta device."""
    import torch

    cls = type(model)
    accepted = inspect.signature(cls.__init__).parameters
    clone = cls(**{k: v for k, v in dict(model.hparams).items() if k in accepted})
    # configure_model reads the data's sizes through the trainer; this stand-in has nothing else.
    stand_in = SimpleNamespace(datamodule=datamodule, world_size=1, global_rank=0, strategy=None)
    clone.trainer = stand_in
    with torch.device("meta"):
        clone.configure_model()
    clone.trainer = None
    return clone


def plannable_network(model: Any, datamodule: Any = None) -> Any | None:
    """The model's network built on the meta device, or None for a model the planner cannot ask.

    A model qualifies when its `net` is a bigtrain `Network`, whose hooks the planner asks, or still None
    (configure_model builds it) and then built as one.
    """
    own = getattr(model, "net", False)
    if own is not None and not is_network(own):
        return None
    if datamodule is not None:
        fill_data_sizes(datamodule)
    net = getattr(meta_copy(model, datamodule), "net", None)
    return net if is_network(net) else None


def is_network(net: Any) -> bool:
    """Whether `net` is a bigtrain `Network`: one that answers the planner's hooks."""
    from bigtrain.models.network import Network

    return isinstance(net, Network)


def model_facts(model: Any, datamodule: Any = None) -> ModelFacts:
    """Parameter counts, block sizes, optimizer states and the activation model of a LightningModule."""
    clone = meta_copy(model, datamodule)
    net = getattr(clone, "net", None) or clone
    unique = {id(p): p for p in net.parameters()}
    params = sum(p.numel() for p in unique.values())
    blocks = list(net.blocks()) if hasattr(net, "blocks") else []
    block_sizes = [sum(p.numel() for p in b.parameters()) for b in blocks]
    tp_params, degrees = _tensor_parallel(net)
    preset = getattr(getattr(clone, "cfg", None), "preset", "")
    return ModelFacts(
        family=family_of(model) if is_network(net) else "other",
        description=f"{type(model).__name__} {preset}".strip(),
        params=params,
        root_params=params - sum(block_sizes),
        max_block_params=max(block_sizes, default=0),
        tp_params=tp_params,
        tp_degrees=degrees,
        states=_optimizer_states(clone, net),
        global_batch=int(getattr(datamodule, "batch_size", 1) or 1),
        micro_batch=getattr(datamodule, "micro_batch_size", None),
        activations=_activation_model(net, sample_shape(datamodule)),
    )


def _tensor_parallel(net: Any) -> tuple[int, tuple[int, ...]]:
    """Parameters the network's `tp_plan()` splits, and the degrees its plan and every layer accept."""
    if not callable(getattr(net, "tp_plan", None)):
        return 0, ()
    count, widths = 0, set()
    for block in net.blocks():
        for path, style in net.tp_plan(1).items():
            layer, column = block.get_submodule(path), type(style).__name__ == "ColwiseParallel"
            # Column-wise layers split weight and bias by output; row-wise ones split the weight only.
            count += layer.weight.numel() + (layer.bias.numel() if column and layer.bias is not None else 0)
            widths.add(layer.weight.shape[0 if column else 1])
    return count, tuple(t for t in TP_DEGREES if _accepts(net, t) and all(w % t == 0 for w in widths))


def _accepts(net: Any, tp: int) -> bool:
    """Whether the network's `tp_plan(tp)` accepts the degree (it refuses with a UserError, e.g. heads)."""
    try:
        net.tp_plan(tp)
    except UserError:
        return False
    return True


def _optimizer_states(clone: Any, net: Any) -> float:
    """Optimizer states per parameter over the module's optimizers: AdamW 2, SGD with momentum 1, SGD 0."""
    if not is_network(net):
        return 2.0  # a model the planner cannot ask: assume AdamW
    counts = [
        (sum(p.numel() for p in group["params"]), _states(optimizer, group))
        for optimizer in _optimizers(clone.configure_optimizers())
        for group in optimizer.param_groups
    ]
    total = sum(n for n, _ in counts)
    return sum(n * s for n, s in counts) / total if total else 2.0


def _optimizers(value: Any) -> list[Any]:
    """The optimizers in any of the shapes `configure_optimizers` may return."""
    import torch

    if isinstance(value, torch.optim.Optimizer):
        return [value]
    if isinstance(value, dict):
        return _optimizers(value.get("optimizer"))
    if isinstance(value, (list, tuple)):
        return [o for item in value for o in _optimizers(item)]
    return []


def _states(optimizer: Any, group: dict) -> int:
    """State tensors the size of a parameter that `optimizer` keeps for `group`."""
    import torch

    if isinstance(optimizer, torch.optim.SGD):
        return 1 if group.get("momentum", 0) > 0 else 0
    return 3 if group.get("amsgrad") else 2  # Adam(W): exp_avg, exp_avg_sq (and max_exp_avg_sq)


def _activation_model(net: Any, shape: tuple[int, ...] | None) -> Activations:
    """The network's `activation_bytes()`, or else a trace of its `example_loss()` (see `_trace`)."""
    import torch

    closed = getattr(net, "activation_bytes", None)
    cache: dict[int, tuple[int, int] | None] = {}

    def acts(b: int, d: int, tp: int, ac: bool) -> float:
        value = closed(b, shape, d, tp, ac) if callable(closed) else None
        if value is not None:
            return value
        if not callable(getattr(net, "example_input", None)):
            return 0.0
        if d not in cache:
            cache[d] = _trace(net, shape, {2: torch.bfloat16, 8: torch.float64}.get(d, torch.float32))
        if cache[d] is None:
            return 0.0
        full, checkpointed = cache[d]
        return (checkpointed if ac else full) * b / 2  # traced at batch 2, linear in the batch

    return acts


def _trace(net: Any, shape: tuple[int, ...] | None, dtype: Any) -> tuple[int, int] | None:
    """(saved bytes, saved bytes with per-block checkpointing) of one training forward at batch 2.

    The tensors autograd saves for backward in `net.example_loss(net.example_input(2, ...))` on the meta
    device; with checkpointing, the block inputs plus the largest block's saved tensors. None: no input.
    """
    import torch

    from bigtrain.torch_compat import storage_id

    net = net.to(dtype).train()
    excluded = {storage_id(t.untyped_storage()) for t in [*net.parameters(), *net.buffers()]}
    seen: set[int] = set()
    saved = [0]
    inside: list[int] = []
    inputs: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage_id(storage) not in seen and storage_id(storage) not in excluded:
            seen.add(storage_id(storage))
            saved[0] += storage.nbytes()
        return t

    def enter(module: Any, args: tuple) -> None:
        inputs.append(sum(a.nbytes for a in args if isinstance(a, torch.Tensor)))
        inside.append(-saved[0])

    def leave(module: Any, args: tuple, out: Any) -> None:
        inside[-1] += saved[0]

    blocks = list(net.blocks()) if hasattr(net, "blocks") else []
    hooks = [h for b in blocks for h in (b.register_forward_pre_hook(enter), b.register_forward_hook(leave))]
    try:
        with torch.device("meta"), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            x = net.example_input(2, shape, dtype)
            if x is None:
                return None
            net.example_loss(x)
    finally:
        for h in hooks:
            h.remove()
    checkpointed = saved[0] - sum(inside) + sum(inputs) + max(inside, default=0)
    return saved[0], checkpointed
