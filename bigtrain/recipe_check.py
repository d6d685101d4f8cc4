"""`bigtrain recipes check` and `recipes diff`: a recipe resolved and built on the meta device; two compared.

Checking builds what `bigtrain fit` would build, except that the network is made on the meta device (no
memory, no initialisation) and the DataModule is constructed but never set up: no file is read and nothing is
downloaded. Sizes the network needs from the data come from the recipe when it gives them, from data made
inside bigtrain (the built-in text, the glyphs), or else from stand-ins, which the report names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bigtrain.errors import UserError
from bigtrain.plan.inputs import device_count

IN_PACKAGE_SOURCES = ("builtin", "glyphs")
"""Data sources bigtrain makes itself: their sizes cost no file read and no download."""
STAND_INS = {"vocab_size": 256, "channels": 3, "image_size": 32, "num_classes": 10}
"""Data-derived sizes assumed when only the data could tell them (a byte vocabulary, CIFAR-like images)."""
NOT_COMPARED = ("recipe_name", "base")
"""Resolved keys that name where a config came from rather than what it trains."""


@dataclass
class CheckReport:
    """What `recipes check` found about one recipe."""

    recipe: str
    model: str
    params: int
    data: str
    batch: str
    strategy: str
    hardware: str
    verdict: str

    def lines(self) -> list[str]:
        """The report as aligned `label  value` lines, the recipe first."""
        rows = [("model", f"{self.model}, {self.params:,} parameters"), ("data", self.data)]
        rows += [("batch", self.batch), ("strategy", f"{self.strategy} on {self.hardware}")]
        rows += [("plan", self.verdict)]
        return [f"{self.recipe}: ok", *(f"  {label:<9} {value}" for label, value in rows)]


def resolved(recipe: str, overrides: list[str]) -> dict[str, Any]:
    """The recipe (a name or a YAML file) with `overrides`, resolved as `bigtrain fit` would, quietly."""
    from bigtrain.commands.submit import resolve_run_config

    return resolve_run_config(recipe, overrides)


def check(recipe: str, overrides: list[str]) -> CheckReport:
    """Resolve `recipe`, build its model on the meta device and its DataModule without data; a UserError
    names what is broken."""
    from bigtrain.lightning_errors import as_user_error
    from bigtrain.plan.facts import model_facts
    from bigtrain.plan.inputs import instantiate

    config = resolved(recipe, overrides)
    try:
        model, data = instantiate(config["model"]), instantiate(config["data"])
        sizes = _data_sizes(data)
        facts = model_facts(model, data)
    except Exception as err:  # a constructor's refusal of a recipe value is one line; a bug still raises
        found = as_user_error(err)
        if isinstance(found, UserError):
            raise found from err
        raise
    trainer = config["trainer"]
    nodes, devices = int(trainer.get("num_nodes") or 1), device_count(trainer.get("devices"))
    strategy, options = _strategy(trainer.get("strategy"))
    source = getattr(data, "source", None)
    return CheckReport(
        recipe=recipe,
        model=facts.description,
        params=facts.params,
        data=f"{type(data).__name__} {source or ''}".strip() + f" ({sizes})",
        batch=_batch_text(facts.global_batch, facts.micro_batch, strategy, options, (nodes, devices)),
        strategy=strategy,
        hardware=f"{nodes} node(s) x {devices} {trainer.get('accelerator') or 'auto'} device(s)",
        verdict=_verdict(facts, trainer, options, nodes, devices),
    )


def _data_sizes(data: Any) -> str:
    """Give `data` the sizes the network is built from without reading any data file; says where from."""
    from bigtrain.data.images import KNOWN_SIZES
    from bigtrain.plan.facts import fill_data_sizes

    source = getattr(data, "source", None)
    free = source in IN_PACKAGE_SOURCES or source in KNOWN_SIZES
    free = free or (source == "tokens" and getattr(data, "requested_vocab_size", None))
    if free:
        fill_data_sizes(data)
        _normalisation(data)
        return "sizes known without reading data"
    assumed = []
    for name, value in STAND_INS.items():
        if hasattr(data, name) and getattr(data, name) is None:
            setattr(data, name, value)
            assumed.append(f"{name} {value}")
    _normalisation(data)
    return f"data not read; assumed {', '.join(assumed)}" if assumed else "data not read"


def _normalisation(data: Any) -> None:
    """Per-channel mean and std where only the images could tell them: models keep them as buffers, so
    they change no shape and no parameter count."""
    channels = getattr(data, "channels", None)
    for name, value in (("mean", 0.5), ("std", 0.25)):
        if channels and hasattr(data, name) and getattr(data, name) is None:
            setattr(data, name, (value,) * channels)


def _strategy(value: Any) -> tuple[str, dict[str, Any]]:
    """(short name, init_args) of trainer.strategy, a name or a class_path entry."""
    if isinstance(value, dict):
        name = str(value.get("class_path", "?")).rsplit(".", 1)[-1]
        return name, dict(value.get("init_args") or {})
    return str(value or "auto"), {}


def _batch_text(
    batch: int, micro: int | None, strategy: str, options: dict[str, Any], hardware: tuple[int, int]
) -> str:
    """`global 512 = 32 ranks x 16` (a UserError when it does not split as the run would split it)."""
    from bigtrain.strategies.batch import split_batch, split_ranks

    nodes, devices = hardware
    world = 1 if strategy.lower() in ("single", "singledevicestrategy") else nodes * devices
    tp = int(options.get("tensor_parallel_size") or 1)
    ranks = split_ranks(world, tp, options.get("data_parallel_size"), nodes=nodes)
    split = split_batch(batch, ranks, micro)
    text = f"global {batch} = {ranks.size} data-parallel rank(s) x {split.per_device}"
    return text + (f" (micro-batches of {micro})" if micro else "")


def _verdict(facts: Any, trainer: dict[str, Any], options: dict[str, Any], nodes: int, devices: int) -> str:
    """The planner's one-line recommendation for this hardware (as `bigtrain plan` prints it)."""
    from bigtrain.plan.memory import choose, default_device_memory, estimate, layouts, precision_of

    prec = precision_of(trainer.get("precision"), options.get("mixed_precision"))
    estimates = [estimate(facts, lay, prec) for lay in layouts(facts, nodes, devices)]
    return choose(estimates, default_device_memory()).reason


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted key: value} of a nested config (lists stay values)."""
    if not isinstance(config, dict) or (prefix and not config):
        return {prefix: config}
    out: dict[str, Any] = {}
    for key, value in config.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


MISSING = "(not set)"
"""Shown for a key that one of the two configs does not have."""


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(dotted key, value in a, value in b) of every resolved key whose values differ, sorted by key."""
    flat_a, flat_b = flatten(a), flatten(b)
    keys = sorted((set(flat_a) | set(flat_b)) - set(NOT_COMPARED))
    rows = [(k, flat_a.get(k, MISSING), flat_b.get(k, MISSING)) for k in keys]
    return [row for row in rows if row[1] != row[2]]
