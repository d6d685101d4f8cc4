"""`bigtrain plan RECIPE`: read a recipe, estimate every layout, print a table or JSON."""

from __future__ import annotations

import json
from dataclasses import asdict

from bigtrain.commands.args import OneLineParser
from bigtrain.errors import UserError
from bigtrain.plan.facts import ModelFacts, fill_data_sizes, model_facts
from bigtrain.plan.inputs import device_count, instantiate, parse_memory, recipe_args
from bigtrain.plan.memory import (
    Estimate,
    Precision,
    Recommendation,
    choose,
    default_device_memory,
    estimate,
    layouts,
    precision_of,
    size_text,
)


def main(argv: list[str]) -> int:
    """`bigtrain plan RECIPE [overrides] [--nodes N --devices-per-node G --device-memory 80GB] [--json]`."""
    parser = OneLineParser(
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
    from bigtrain.lightning_cli import resolve

    config = resolve("fit", [*recipe_args(args.recipe), *overrides])
    trainer = config["trainer"]
    nodes = args.nodes or int(trainer.get("num_nodes") or 1)
    devices = args.devices_per_node or device_count(trainer.get("devices"))
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
        f"{nodes} node(s) x {devices} device(s) of {size_text(memory)}; precision {prec.name} "
        f"(parameters {prec.param} bytes, activations {prec.compute} bytes)"
    )
    table = Table("layout", "ranks", "batch/dev", "params", "grads", "optimizer", "activations", "other",
                  "total", "fits", title="estimated memory per device")  # fmt: skip
    table.columns[0].no_wrap = True
    for e in estimates:
        fits = "yes" if e.fits(memory) else ("no: " + e.note if e.note else "no")
        sizes = [size_text(v) for v in (e.params, e.grads, e.optimizer, e.activations, e.other, e.total)]
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
