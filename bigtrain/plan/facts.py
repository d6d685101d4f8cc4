"""What `bigtrain plan` knows about a model: its meta-device build, counts, optimizer states, activations.

The network is built on the meta device (no memory is allocated, no weights initialised) and the data is read
only as far as its sizes. The activation models follow the formulas in `bigtrain.plan`'s docstring.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from bigtrain.errors import UserError

TP_DEGREES = (2, 4, 8)
"""Tensor-parallel degrees compared (each must divide the heads and every split layer)."""
KNOWN_IMAGES = {"mnist": (1, 28, 10), "fashion-mnist": (1, 28, 10), "cifar10": (3, 32, 10)}
"""source -> (channels, side, classes): fixed facts, so planning needs no download."""

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
    """Parameters the tensor-parallel plan splits (transformer only)."""
    tp_degrees: tuple[int, ...]
    states: float
    """Optimizer states per parameter, averaged over the optimizers: AdamW 2, SGD with momentum 1."""
    global_batch: int
    micro_batch: int | None
    activations: Activations = field(repr=False)


def family_of(model: Any) -> str:
    """The bigtrain family of a LightningModule ('transformer', 'cnn', ...), or 'other'."""
    parts = type(model).__module__.split(".")
    return parts[2] if parts[:2] == ["bigtrain", "models"] and len(parts) > 2 else "other"


def fill_data_sizes(datamodule: Any) -> None:
    """Give a DataModule its data-derived sizes (vocabulary, classes, channels, side), reading little."""
    source = getattr(datamodule, "source", None)
    if source in KNOWN_IMAGES and hasattr(datamodule, "requested_size"):
        datamodule.channels, side, datamodule.num_classes = KNOWN_IMAGES[source]
        datamodule.image_size = datamodule.requested_size or side
    elif source == "folder" and getattr(datamodule, "requested_size", None):
        # Reading every image of a large folder only to plan would take hours: count classes, assume RGB.
        root = datamodule.root()
        if not root.is_dir():
            raise UserError(f"data.path {root} is not a folder with one sub-folder per class")
        datamodule.num_classes = sum(1 for p in root.iterdir() if p.is_dir())
        datamodule.channels, datamodule.image_size = 3, datamodule.requested_size
    elif source == "tokens" and getattr(datamodule, "requested_vocab_size", None):
        datamodule.vocab_size = datamodule.requested_vocab_size  # token files can be terabytes
    elif hasattr(datamodule, "setup"):
        datamodule.setup("fit")


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


def model_facts(model: Any, datamodule: Any = None) -> ModelFacts:
    """Parameter counts, block sizes, optimizer states and the activation model of a LightningModule."""
    import torch

    family = family_of(model)
    clone = meta_copy(model, datamodule)
    net = getattr(clone, "net", None) or clone
    unique = {id(p): p for p in net.parameters()}
    params = sum(p.numel() for p in unique.values())
    blocks = list(net.blocks()) if hasattr(net, "blocks") else []
    block_sizes = [sum(p.numel() for p in b.parameters()) for b in blocks]
    tp_params, degrees = _tensor_parallel(net)
    cfg = getattr(clone, "cfg", None)
    acts = _activation_model(family, net, cfg, datamodule, torch)
    preset = getattr(cfg, "preset", "")
    return ModelFacts(
        family=family,
        description=f"{type(model).__name__} {preset}".strip(),
        params=params,
        root_params=params - sum(block_sizes),
        max_block_params=max(block_sizes, default=0),
        tp_params=tp_params,
        tp_degrees=degrees,
        states=_optimizer_states(clone, net),
        global_batch=int(getattr(datamodule, "batch_size", 1) or 1),
        micro_batch=getattr(datamodule, "micro_batch_size", None),
        activations=acts,
    )


def _tensor_parallel(net: Any) -> tuple[int, tuple[int, ...]]:
    """Parameters the network's `tp_plan()` splits, and the degrees that divide every split layer."""
    if not callable(getattr(net, "tp_plan", None)):
        return 0, ()
    count, widths = 0, set()
    for block in net.blocks():
        for path, style in net.tp_plan(1).items():
            layer, column = block.get_submodule(path), type(style).__name__ == "ColwiseParallel"
            # Column-wise layers split weight and bias by output; row-wise ones split the weight only.
            count += layer.weight.numel() + (layer.bias.numel() if column and layer.bias is not None else 0)
            widths.add(layer.weight.shape[0 if column else 1])
    heads = getattr(net.cfg, "n_head", 1)
    return count, tuple(t for t in TP_DEGREES if heads % t == 0 and all(w % t == 0 for w in widths))


def _optimizer_states(clone: Any, net: Any) -> float:
    """Optimizer states per parameter: AdamW 2, SGD with momentum 1, plain SGD 0 (GAN: per optimizer)."""

    def states(cfg: Any) -> int:
        if cfg is None or cfg.name == "adamw":
            return 2
        return 1 if cfg.momentum > 0 else 0

    groups = [(net, getattr(clone, "optim_cfg", None))]
    if hasattr(clone, "d_optim_cfg") and hasattr(net, "discriminator"):
        groups = [(net.generator, clone.optim_cfg), (net.discriminator, clone.d_optim_cfg)]
    counts = [(sum(p.numel() for p in m.parameters()), states(cfg)) for m, cfg in groups]
    total = sum(n for n, _ in counts)
    return sum(n * s for n, s in counts) / total if total else 2.0


def _activation_model(family: str, net: Any, cfg: Any, data: Any, torch: Any) -> Activations:
    """The family's activation estimate (see the module docstring)."""
    if family == "transformer":
        return _transformer_activations(cfg, getattr(data, "block_size", None) or cfg.block_size)
    if family == "rnn":
        steps = getattr(data, "block_size", None) if cfg.task == "lm" else getattr(data, "image_size", None)
        return _rnn_activations(cfg, steps or 1)
    if family in ("cnn", "autoencoder", "gan"):
        return _traced_activations(family, net, cfg, data, torch)
    return lambda b, d, tp, ac: 0.0


def _transformer_activations(cfg: Any, T: int) -> Activations:
    L, C, m, V = cfg.n_layer, cfg.n_embd, cfg.mlp_ratio, cfg.vocab_size

    def acts(b: int, d: int, tp: int, ac: bool) -> float:
        btc = b * T * C
        block = btc * (4 + (4 + 2 * m) / tp) * d
        blocks = L * btc * d + block if ac else L * block
        return blocks + 2 * btc * d + b * T * V * (d + 8)  # + final LayerNorm, logits and the loss

    return acts


def _rnn_activations(cfg: Any, T: int) -> Activations:
    gates = 4 if cfg.cell == "lstm" else 3
    H, L = cfg.hidden_size, cfg.n_layer
    out = cfg.vocab_size if cfg.task == "lm" else 0

    def acts(b: int, d: int, tp: int, ac: bool) -> float:
        layer = b * T * H * (gates + 2) * d
        layers = L * b * T * H * d + layer if ac else L * layer
        return layers + b * T * cfg.embd_size * d + b * T * out * (d + 8)

    return acts


def _traced_activations(family: str, net: Any, cfg: Any, data: Any, torch: Any) -> Activations:
    """Trace one training forward at batch 2 per compute dtype; scale linearly in the batch."""
    cache: dict[int, tuple[int, int]] = {}

    def acts(b: int, d: int, tp: int, ac: bool) -> float:
        if d not in cache:
            cache[d] = _trace(
                family, net, cfg, data, {2: torch.bfloat16, 8: torch.float64}.get(d, torch.float32)
            )
        full, checkpointed = cache[d]
        return (checkpointed if ac else full) * b / 2

    return acts


def _trace(family: str, net: Any, cfg: Any, data: Any, dtype: Any) -> tuple[int, int]:
    """(saved bytes, saved bytes with per-block checkpointing) of one training forward at batch 2."""
    import torch
    import torch.nn.functional as F

    from bigtrain.lightning_compat import storage_id

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
    side = getattr(data, "image_size", None) or cfg.image_size
    channels = getattr(data, "channels", None) or getattr(cfg, "in_channels", None) or cfg.channels
    try:
        with torch.device("meta"), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            x = torch.empty(2, channels, side, side, dtype=dtype)
            if family == "cnn":
                F.cross_entropy(net(x).float(), torch.zeros(2, dtype=torch.long))
            elif family == "autoencoder":
                F.mse_loss(net(x)[0].float(), x.float())
            else:  # gan: the generator's step and the discriminator on real images
                fake = net.generator(torch.empty(2, cfg.latent_dim, dtype=dtype))
                net.discriminator(fake).sum() + net.discriminator(x).sum()
    finally:
        for h in hooks:
            h.remove()
    checkpointed = saved[0] - sum(inside) + sum(inputs) + max(inside, default=0)
    return saved[0], checkpointed
