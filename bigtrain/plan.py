"""`bigtrain plan`: the bytes each device needs under each strategy, and the layout `strategy: auto` picks.

Everything here is an estimate from the model's shapes: the network is built on the meta device (no memory
is allocated, no weights initialised) and the data is read only as far as its sizes. Per device, with P
parameters of which P_tp are sharded by the tensor-parallel plan, dp data-parallel and tp tensor-parallel
ranks:

    parameters   P_local x param bytes, P_local = P (single, ddp), P / dp (fsdp), (P_tp/tp + P - P_tp) / dp
                 (fsdp x TP). Param bytes are the stored dtype: fp32 master weights under mixed precision
                 (FSDP2's MixedPrecisionPolicy keeps sharded fp32 parameters and gathers bf16 copies).
    gradients    P_local x param bytes (FSDP2 reduce-scatters into sharded gradients of the stored dtype).
    optimizer    P_local x param bytes x states: AdamW keeps 2 (exp_avg, exp_avg_sq), SGD with momentum 1.
    activations  at the per-device batch b (the global batch / dp, or the micro-batch), compute bytes d:
                 transformer  L*b*T*C*(4 + (4 + 2m)/tp)*d + b*T*V*(d + 8): per block the residual input,
                              two LayerNorm inputs and outputs (replicated under TP), q, k, v, the attention
                              output and the two m*C-wide MLP activations (split by TP); a fused attention
                              kernel keeps no T x T scores; the logits plus the fp32 log-softmax and its
                              gradient. Activation checkpointing keeps only each block's input (L*b*T*C*d)
                              and recomputes one block at a time.
                 rnn          L*b*T*H*(gates + 2)*d + b*T*E*d + logits (gates: 4 LSTM, 3 GRU).
                 cnn, autoencoder, gan  the tensors autograd saves for backward in one traced training
                              forward on the meta device, scaled from a batch of 2; with checkpointing, the
                              block inputs plus the largest block's saved tensors.
    other        transient buffers: ddp's gradient buckets (a second gradient copy); fsdp's gathered copies
                 of the root (modules outside the blocks) and two blocks (the current and the prefetched
                 one) with their unsharded gradients; autocast's low-precision weight copies.

A layout fits when its total is at most 90% of the device memory: the rest goes to the CUDA context,
allocator fragmentation and communication buffers. Measured against real per-rank tensor bytes in
tests/distributed/test_memory.py (parameters + gradients + optimizer state within 15%).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from types import SimpleNamespace
from typing import Any

from bigtrain.errors import UserError

GIB = 2**30
HEADROOM = 0.9
"""Share of a device's memory the estimate may fill."""
DEFAULT_MEMORY = 80 * GIB
"""Device memory assumed without --device-memory or a CUDA device: a data-centre GPU."""
TP_DEGREES = (2, 4, 8)
KNOWN_IMAGES = {"mnist": (1, 28, 10), "fashion-mnist": (1, 28, 10), "cifar10": (3, 32, 10)}
"""source -> (channels, side, classes): fixed facts, so planning needs no download."""
BITS = {"64": 8, "32": 4, "16": 2, "bf16": 2}
SHORT_PRECISION = {"16": "16-mixed", "bf16": "bf16-mixed", "32": "32-true", "64": "64-true"}

Activations = Callable[[int, int, int, bool], float]
"""(per-device batch, compute bytes, tensor-parallel degree, activation checkpointing) -> bytes."""


@dataclass(frozen=True)
class Precision:
    """Bytes per stored parameter (the fp32 master under mixed precision) and per activation."""

    param: int
    compute: int
    name: str


def precision_of(trainer_precision: Any = None, mixed_precision: Any = None) -> Precision:
    """Precision from Lightning's `trainer.precision` and an FSDP mixed-precision option (e.g. 'bf16')."""
    text = str(trainer_precision if trainer_precision is not None else "32-true")
    text = SHORT_PRECISION.get(text, text).replace("transformer-engine", "bf16-mixed")
    head, _, mode = text.partition("-")
    if head not in BITS or mode not in ("true", "mixed"):
        raise UserError(
            f"trainer.precision '{text}' is not one of 64-true, 32-true, 16-mixed, bf16-mixed, ..."
        )
    compute = BITS[head]
    param = 4 if mode == "mixed" else compute
    if isinstance(mixed_precision, dict):
        mixed_precision = mixed_precision.get("param_dtype")
    if mixed_precision and str(mixed_precision).lower() in ("bf16", "bfloat16", "fp16", "float16", "16"):
        compute, text = 2, f"{text} + fsdp {mixed_precision}"
    return Precision(param=param, compute=compute, name=text)


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


@dataclass(frozen=True)
class Layout:
    """One way to run: a strategy over `ranks` devices, dp data-parallel x tp tensor-parallel."""

    name: str
    strategy: str
    ranks: int
    dp: int
    tp: int = 1
    checkpointing: bool = False


@dataclass(frozen=True)
class Estimate:
    """Estimated bytes per device of one layout."""

    layout: Layout
    batch: int
    params: int
    grads: int
    optimizer: int
    activations: int
    other: int
    note: str = ""

    @property
    def total(self) -> int:
        """Every component together."""
        return self.params + self.grads + self.optimizer + self.activations + self.other

    @property
    def states(self) -> int:
        """Parameters, gradients and optimizer state: what the memory test measures."""
        return self.params + self.grads + self.optimizer

    def fits(self, memory: int) -> bool:
        """Whether the total stays within the usable share of `memory`."""
        return not self.note and self.total <= HEADROOM * memory


@dataclass(frozen=True)
class Recommendation:
    """The cheapest layout that fits (or the smallest one, with fits False), as strategy settings."""

    strategy: str
    tensor_parallel_size: int
    activation_checkpointing: bool
    fits: bool
    reason: str
    estimate: Estimate


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

    net = net.to(dtype).train()
    excluded = {t.untyped_storage()._cdata for t in [*net.parameters(), *net.buffers()]}
    seen: set[int] = set()
    saved = [0]
    inside: list[int] = []
    inputs: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage._cdata not in seen and storage._cdata not in excluded:
            seen.add(storage._cdata)
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


def layouts(facts: ModelFacts, nodes: int, devices_per_node: int) -> list[Layout]:
    """The layouts to compare: one device, DDP, FSDP (with and without checkpointing), FSDP x TP."""
    world = nodes * devices_per_node
    out = [Layout("single", "single", 1, 1)]
    if world > 1:
        out += [
            Layout("ddp", "ddp", world, world),
            Layout("fsdp", "fsdp", world, world),
            Layout("fsdp + AC", "fsdp", world, world, checkpointing=True),
        ]
        for t in facts.tp_degrees:
            if t <= devices_per_node and devices_per_node % t == 0:
                out.append(Layout(f"fsdp x TP{t}", "fsdp", world, world // t, t))
                out.append(Layout(f"fsdp x TP{t} + AC", "fsdp", world, world // t, t, checkpointing=True))
    return out


def estimate(facts: ModelFacts, layout: Layout, precision: Precision) -> Estimate:
    """Estimated bytes per device of `layout` (see the module docstring for the formulas)."""
    P, tp, dp = facts.params, layout.tp, layout.dp
    local = P if layout.strategy != "fsdp" else (facts.tp_params / tp + P - facts.tp_params) / dp
    note, batch = "", facts.global_batch // dp
    if facts.global_batch % dp:
        note = f"batch {facts.global_batch} does not divide over {dp} data-parallel ranks"
    if facts.micro_batch:
        batch = min(batch, facts.micro_batch)
    if layout.strategy == "fsdp":
        gathered = facts.root_params + 2 * facts.max_block_params / tp
        other = gathered * (precision.compute + precision.param)
    else:
        other = P * precision.param if layout.strategy == "ddp" else 0
        other += P * precision.compute if precision.compute != precision.param else 0
    return Estimate(
        layout=layout,
        batch=max(batch, 1),
        params=round(local * precision.param),
        grads=round(local * precision.param),
        optimizer=round(local * precision.param * facts.states),
        activations=round(facts.activations(max(batch, 1), precision.compute, tp, layout.checkpointing)),
        other=round(other),
        note=note,
    )


def choose(estimates: list[Estimate], memory: int) -> Recommendation:
    """The cheapest estimate that fits (single only on one device), else the smallest one."""
    world = max(e.layout.ranks for e in estimates)
    candidates = [e for e in estimates if (e.layout.strategy == "single") == (world == 1)]
    fitting = [e for e in candidates if e.fits(memory)]
    best = fitting[0] if fitting else min(candidates, key=lambda e: e.total)
    room = f"{_size(HEADROOM * memory)} usable of {_size(memory)}"
    if fitting:
        reason = f"{best.layout.name} needs {_size(best.total)} per device ({room})"
    else:
        reason = f"nothing fits ({room}); the smallest, {best.layout.name}, needs {_size(best.total)}"
    strategy = best.layout.strategy
    return Recommendation(strategy, best.layout.tp, best.layout.checkpointing, bool(fitting), reason, best)


def recommend(
    model: Any,
    datamodule: Any = None,
    *,
    num_nodes: int = 1,
    devices_per_node: int = 1,
    precision: Any = "32-true",
    mixed_precision: Any = None,
    device_memory: int | None = None,
) -> Recommendation:
    """The layout `strategy: auto` should use for this model and data on num_nodes x devices_per_node."""
    if datamodule is not None:
        fill_data_sizes(datamodule)
    facts = model_facts(model, datamodule)
    prec = precision_of(precision, mixed_precision)
    memory = device_memory or default_device_memory()
    return choose([estimate(facts, lay, prec) for lay in layouts(facts, num_nodes, devices_per_node)], memory)


def default_device_memory() -> int:
    """The first CUDA device's memory, else DEFAULT_MEMORY."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory
    return DEFAULT_MEMORY


def parse_memory(text: str) -> int:
    """'80GB', '80GiB', '80G', '512MB', '1.5T' or a byte count -> bytes (units are binary, as GPUs sell)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*", text.lower())
    if not match:
        raise UserError(f"--device-memory '{text}' is not a size such as 80GB, 40GiB or 24000MB")
    value = float(match.group(1)) * 1024 ** " kmgt".index(match.group(2) or " ")
    if value < 1:
        raise UserError(f"--device-memory must be positive, got '{text}'")
    return int(value)


def _size(n: float) -> str:
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / 2**20:.1f} MiB"


def instantiate(spec: dict) -> Any:
    """The object a `{class_path, init_args}` config entry describes."""
    module, _, name = spec["class_path"].rpartition(".")
    return getattr(importlib.import_module(module), name)(**(spec.get("init_args") or {}))


def recipe_args(recipe: str) -> list[str]:
    """`--config FILE` for an existing YAML file (a run's config.yaml), else `--recipe NAME`."""
    from pathlib import Path

    return ["--config", recipe] if Path(recipe).is_file() else ["--recipe", recipe]


def _devices(value: Any) -> int:
    if isinstance(value, list):
        return len(value)
    if isinstance(value, int) or str(value).isdigit():
        return max(int(value), 1)
    import torch

    return max(torch.cuda.device_count(), 1)


def main(argv: list[str]) -> int:
    """`bigtrain plan RECIPE [overrides] [--nodes N --devices-per-node G --device-memory 80GB] [--json]`."""
    parser = argparse.ArgumentParser(
        prog="bigtrain plan",
        allow_abbrev=False,
        description="Estimated memory per device under each strategy, and the recommended one. Any other "
        "option is a recipe override, e.g. --model.net.preset gpt2-350m.",
    )
    parser.add_argument("recipe", help="recipe name (bigtrain recipes list) or a config YAML")
    parser.add_argument("--nodes", type=int, help="nodes (default: the recipe's trainer.num_nodes)")
    parser.add_argument("--devices-per-node", type=int, help="devices per node (default: trainer.devices)")
    parser.add_argument("--device-memory", help="memory of one device, e.g. 80GB (default: CUDA's or 80GB)")
    parser.add_argument("--json", action="store_true", help="print the estimates as JSON")
    args, overrides = parser.parse_known_args(argv)
    memory = parse_memory(args.device_memory) if args.device_memory else default_device_memory()
    from bigtrain.cli import resolve_config

    config = resolve_config("fit", [*recipe_args(args.recipe), *overrides])
    trainer = config["trainer"]
    nodes = args.nodes or int(trainer.get("num_nodes") or 1)
    devices = args.devices_per_node or _devices(trainer.get("devices"))
    if nodes < 1 or devices < 1:
        raise UserError("--nodes and --devices-per-node must be >= 1")
    model, data = instantiate(config["model"]), instantiate(config["data"])
    fill_data_sizes(data)
    facts = model_facts(model, data)
    strategy = trainer.get("strategy")
    options = (strategy.get("init_args") or {}) if isinstance(strategy, dict) else {}
    prec = precision_of(trainer.get("precision"), options.get("mixed_precision"))
    estimates = [estimate(facts, lay, prec) for lay in layouts(facts, nodes, devices)]
    choice = choose(estimates, memory)
    if args.json:
        print(json.dumps(_as_json(facts, prec, estimates, choice, memory), indent=2))
    else:
        _print(args.recipe, facts, prec, estimates, choice, (nodes, devices, memory))
    return 0


def _as_json(
    facts: ModelFacts, prec: Precision, estimates: list[Estimate], choice: Recommendation, memory: int
):
    rows = [{**asdict(e), "total": e.total, "fits": e.fits(memory)} for e in estimates]
    model = {k: v for k, v in asdict(facts).items() if k != "activations"}
    return {"model": model, "precision": asdict(prec), "device_memory": memory, "estimates": rows,
            "recommendation": {k: v for k, v in asdict(choice).items() if k != "estimate"}}  # fmt: skip


def _print(recipe: str, facts: ModelFacts, prec: Precision, estimates: list[Estimate],
           choice: Recommendation, hardware: tuple[int, int, int]) -> None:  # fmt: skip
    from rich.console import Console
    from rich.table import Table

    nodes, devices, memory = hardware
    console = Console(width=max(Console().width, 128))
    console.print(
        f"[bold]{recipe}[/]: {facts.description}, {facts.params:,} parameters; global batch "
        f"{facts.global_batch}{f', micro-batch {facts.micro_batch}' if facts.micro_batch else ''}\n"
        f"{nodes} node(s) x {devices} device(s) of {_size(memory)}; precision {prec.name} "
        f"(parameters {prec.param} bytes, activations {prec.compute} bytes)"
    )
    table = Table("layout", "ranks", "batch/dev", "params", "grads", "optimizer", "activations", "other",
                  "total", "fits", title="estimated memory per device")  # fmt: skip
    table.columns[0].no_wrap = True
    for e in estimates:
        fits = "yes" if e.fits(memory) else ("no: " + e.note if e.note else "no")
        sizes = [_size(v) for v in (e.params, e.grads, e.optimizer, e.activations, e.other, e.total)]
        mark = "[bold green]" if e is choice.estimate else ""
        table.add_row(f"{mark}{e.layout.name}", str(e.layout.ranks), str(e.batch), *sizes, fits)
    console.print(table)
    tp = (
        f" --trainer.strategy.tensor_parallel_size {choice.tensor_parallel_size}"
        if choice.tensor_parallel_size > 1
        else ""
    )
    ac = " --trainer.strategy.activation_checkpointing true" if choice.activation_checkpointing else ""
    console.print(f"recommendation: [bold]{choice.strategy}[/]{tp}{ac}: {choice.reason}")
    console.print("estimates from the model's shapes (formulas: python -m pydoc bigtrain.plan); 'other' is")
    console.print("transient: DDP's gradient buckets, FSDP's gathered blocks, autocast's weight copies")
