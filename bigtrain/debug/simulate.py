"""`bigtrain debug RECIPE --simulate DPxTP`: the recipe's own FSDP sharding plan over DP x TP ranks, in this
one process, on torch's fake process group (collectives that move no data).

This process plays rank 0, then the last rank, each in its own fake world: it builds the recipe's module,
applies `bigtrain.strategies.parallelize` under the recipe's FSDP settings with a DP x TP device mesh, reads
every parameter's local shard, and runs one forward and backward on the sharded network. A network whose
fp32 parameters exceed `REAL_MAX_BYTES` stays on the meta device: its shards are shapes only (nothing is
allocated) and the forward and backward are skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from types import SimpleNamespace
from typing import Any

from bigtrain.debug.checks import Verdict
from bigtrain.debug.shards import (
    ROOT,
    Shard,
    class_name,
    missed_blocks,
    shards,
    size_text,
    tp_problems,
    unit_names,
    unit_summary,
)
from bigtrain.errors import UserError

REAL_MAX_BYTES = 256 * 2**20
"""Networks with more fp32 parameter bytes than this are simulated on the meta device (shapes only)."""
ROWS_PER_RANK = 2
"""Samples in the simulated forward: it checks that the sharded network runs, not its memory."""
MESH_DIMS = ("data_parallel", "tensor_parallel")
"""The device mesh's dimension names, as Lightning's ModelParallelStrategy names them."""
KEPT_CHANGES = ("model.", "data.source", "data.path", "data.download", "data.vocab_size", "data.tokenizer",
                "data.block_size", "data.num_samples", "data.augment_flip")  # fmt: skip
"""The shrink's changes that still apply: the model's size and the data it reads its sizes from."""


@contextmanager
def fake_world(world: int, rank: int) -> Iterator[None]:
    """A fake default process group of `world` ranks with this process as `rank`, always destroyed."""
    import torch.distributed as dist

    from bigtrain.torch_compat import forget_device_meshes

    if dist.is_initialized():
        raise RuntimeError("a process group already exists in this process: the simulation needs its own")
    dist.init_process_group("fake", rank=rank, world_size=world)
    try:
        yield
    finally:
        dist.destroy_process_group()
        forget_device_meshes()


@dataclass
class RankRun:
    """What one simulated rank saw."""

    rank: int
    shards: list[Shard] = field(default_factory=list)
    classes: dict[str, str] = field(default_factory=dict)
    missed: list[tuple[str, str]] = field(default_factory=list)
    error: str | None = None
    """The plan or the forward/backward raised: the error's first line."""
    no_grad: list[str] = field(default_factory=list)
    blocks: int = 0
    """How many blocks `blocks()` returned: the units sharded one by one."""


def simulate(source: list[str], args: Any, overrides: list[str]) -> int:
    """Run the layout simulation of `args.layout` (dp, tp) for a recipe and print its report; exit status."""
    from bigtrain.debug import report
    from bigtrain.lightning_cli import resolve

    dp, tp = args.layout
    config = resolve("fit", [*source, *overrides])
    fsdp_args, note = _fsdp_args(config["trainer"])
    cli = _build(source, args, overrides, config)
    model, datamodule = cli.model, cli.datamodule
    _fill_sizes(datamodule)
    net = _meta_network(model, datamodule)
    if tp > 1 and not callable(getattr(net, "tp_plan", None)):
        raise UserError(
            f"--simulate {args.simulate}: {type(net).__name__} has no tensor-parallel plan (only the "
            f"transformer family has one); simulate a data-parallel layout such as --simulate {dp * tp}"
        )
    params = sum(p.numel() for p in {id(p): p for p in net.parameters()}.values())
    device = "cpu" if params * 4 <= REAL_MAX_BYTES else "meta"
    rows = [layout_verdict(dp, tp, config)]
    problems = _tp_check(net, tp) if tp > 1 else []
    if tp > 1:
        rows.append(tp_verdict(problems, net, tp))
    if problems:
        why = "not run: the tensor-parallel plan does not divide"
        rows += [Verdict("shards", "skip", why), Verdict("fwdbwd", "skip", why)]
        runs: list[RankRun] = []
    else:
        ranks = [0, dp * tp - 1] if dp * tp > 1 else [0]
        runs = [_run_rank(model, datamodule, fsdp_args, dp, tp, r, device) for r in ranks]
        planned = _planned_bytes(model, datamodule, config, fsdp_args, dp, tp)
        rows += [shards_verdict(runs, planned), fwdbwd_verdict(runs, device, params)]
    changes = [c for c in cli.shrink_changes if c.startswith(KEPT_CHANGES)]
    changes += [f"trainer.strategy: FSDP over {dp} x {tp} = {dp * tp} fake ranks in this one process"]
    changes += [note] if note else []
    description = f"{type(model).__name__}, {params:,} parameters, sharded on {device}"
    report.write(cli.run_dir, source[1], changes, rows)
    report.show(source[1], description, changes, rows, cli.run_dir)
    if args.details:
        _print_details(runs)
    return 0 if report.passed(rows) else 1


def _fsdp_args(trainer: dict) -> tuple[dict, str]:
    """The recipe's FSDP settings, and a note when the recipe does not use FSDP (its defaults are used)."""
    strategy = trainer.get("strategy")
    if isinstance(strategy, dict) and str(strategy.get("class_path", "")).rpartition(".")[2] == "FSDP":
        args = dict(strategy.get("init_args") or {})
        return {k: v for k, v in args.items() if k not in ("data_parallel_size", "tensor_parallel_size")}, ""
    name = strategy.get("class_path") if isinstance(strategy, dict) else strategy
    if name == "fsdp":  # the short name: FSDP with its defaults
        return {}, ""
    return {}, f"the recipe's strategy {name!r} shards nothing: bigtrain's FSDP with its defaults instead"


def _build(source: list[str], args: Any, overrides: list[str], config: dict) -> Any:
    """The recipe's module and DataModule through bigtrain's CLI, shrunk to one process (nothing runs)."""
    from bigtrain.debug.session import DebugCLI, Options
    from bigtrain.debug.shrink import shrink
    from bigtrain.lightning_cli import build_cli

    user_keys = {a[2:].split("=", 1)[0] for a in overrides if a.startswith("--")}
    small = shrink(config, tiny=args.tiny, keep_size=args.keep_size, gpu=False, user_keys=user_keys)
    knobs = ["--trainer.logger", "false", "--trainer.enable_checkpointing", "false",
             "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]  # fmt: skip
    hooks = {
        "options": Options(checks=(), steps=1),
        "after_instantiate_classes": _no_run,
        "run_subcommand": _no_run,
    }
    cls = type("SimulateCLI", (DebugCLI,), hooks)
    cli = build_cli("fit", [*source, *small.args, *knobs, *overrides], cls)
    cli.shrink_changes = small.changes
    return cli


def _no_run(self: Any, *subcommand: str) -> None:
    """Neither fitted nor checked for one device's memory: each simulated rank builds its own sharded copy."""


def _fill_sizes(datamodule: Any) -> None:
    from bigtrain.plan.facts import fill_data_sizes

    if datamodule is not None:
        fill_data_sizes(datamodule)


def _meta_network(model: Any, datamodule: Any) -> Any:
    """The model's network built on the meta device without a plan (what the plan will be applied to)."""
    from bigtrain.plan.facts import meta_copy

    net = getattr(meta_copy(model, datamodule), "net", None)
    if net is None or not callable(getattr(net, "blocks", None)):
        raise UserError(
            f"--simulate: {type(model).__name__} builds no network with blocks() in configure_model(), so it "
            "has no sharding plan to simulate"
        )
    return net


def _tp_check(net: Any, tp: int) -> list[str]:
    """Tensor-parallel dimensions that do not divide, then the plan's own refusal (attention heads)."""
    problems = tp_problems(net, tp)
    try:
        net.tp_plan(tp)
    except UserError as err:
        problems.append(str(err))
    return problems


def _run_rank(
    model: Any, datamodule: Any, fsdp_args: dict, dp: int, tp: int, rank: int, device: str
) -> RankRun:
    """Rank `rank` of a fake DP x TP world: a fresh module, the real plan, its shards, one step."""
    import torch
    from torch.distributed.device_mesh import init_device_mesh

    from bigtrain.lightning_compat import set_device_mesh
    from bigtrain.strategies.fsdp import FSDP

    world = dp * tp
    out = RankRun(rank)
    with fake_world(world, rank):
        strategy = FSDP(**{**fsdp_args, "data_parallel_size": dp, "tensor_parallel_size": tp})
        strategy.parallel_devices = [torch.device(device)] * world
        set_device_mesh(strategy, init_device_mesh("cpu", (dp, tp), mesh_dim_names=MESH_DIMS))
        module = _fresh(model)
        # configure_model reaches the strategy and the data's sizes through its trainer; this stands in.
        module.trainer = SimpleNamespace(
            datamodule=datamodule, strategy=strategy, world_size=world, global_rank=rank, num_nodes=1,
            num_devices=world,
        )  # fmt: skip
        try:
            with torch.device(device):
                module.configure_model()
            net = module.net
            out.shards = shards(net)
            out.classes = {name or ROOT: class_name(net.get_submodule(name)) for name in unit_names(net)}
            out.missed = missed_blocks(net)
            out.blocks = len(list(net.blocks()))
            if device != "meta":
                out.no_grad = _forward_backward(net, datamodule)
        except UserError:
            raise
        except Exception as err:  # the plan's or the network's own fault: a finding, not a crash of debug
            lines = [ln for ln in str(err).strip().splitlines() if ln.strip()]
            out.error = f"{type(err).__name__}: {lines[0] if lines else ''}"
        finally:
            module.trainer = None
    return out


def _fresh(model: Any) -> Any:
    """A new instance of the model's class from its hyper-parameters (each rank builds its own)."""
    import inspect

    accepted = inspect.signature(type(model).__init__).parameters
    return type(model)(**{k: v for k, v in dict(model.hparams).items() if k in accepted})


def _forward_backward(net: Any, datamodule: Any) -> list[str]:
    """One forward and backward of the sharded network; the parameters whose gradient is missing or not
    shaped like their shard."""
    import torch
    from torch.distributed.tensor import DTensor

    from bigtrain.plan.facts import sample_shape

    shape = sample_shape(datamodule)
    dtype = torch.long if shape is not None and len(shape) == 1 else torch.float32
    x = net.example_input(ROWS_PER_RANK, shape, dtype)
    if x is None:
        raise ValueError("the DataModule gives no sample shape to build an input from")
    # Token 0 exists in any vocabulary; images get values a normalisation would give.
    x = torch.zeros_like(x) if dtype == torch.long else torch.randn_like(x)
    net.example_loss(x).backward()
    bad = []
    for name, p in net.named_parameters():
        local = p.to_local() if isinstance(p, DTensor) else p
        grad = p.grad.to_local() if isinstance(p.grad, DTensor) else p.grad
        if p.requires_grad and (grad is None or grad.shape != local.shape):
            bad.append(name)
    return bad


def _planned_bytes(
    model: Any, datamodule: Any, config: dict, fsdp_args: dict, dp: int, tp: int
) -> int | None:
    """`bigtrain plan`'s parameter bytes per device for this FSDP layout, or None."""
    from bigtrain.plan.facts import model_facts
    from bigtrain.plan.memory import ParallelLayout, estimate, precision_of

    try:
        facts = model_facts(model, datamodule)
        precision = precision_of(config["trainer"].get("precision"), fsdp_args.get("mixed_precision"))
        return estimate(facts, ParallelLayout("fsdp", "fsdp", dp * tp, dp, tp), precision).params
    except Exception:  # a side note: a model the planner cannot read still gets its report
        return None


def layout_verdict(dp: int, tp: int, config: dict) -> Verdict:
    """Whether the recipe's global batch splits over the layout's data-parallel ranks."""
    from bigtrain.strategies.batch import DataParallel, split_batch

    data = config["data"].get("init_args") or {}
    batch, micro = data.get("batch_size"), data.get("micro_batch_size")
    head = f"{dp}x{tp} = {dp * tp} ranks ({dp} data-parallel x {tp} tensor-parallel)"
    details = {"dp": dp, "tp": tp, "batch_size": batch}
    if not isinstance(batch, int):
        return Verdict("layout", "pass", f"{head}; the recipe sets no data.batch_size", details)
    try:
        split = split_batch(batch, DataParallel(dp, tp), micro)
    except UserError as err:
        return Verdict("layout", "FAIL", f"{head}: {err}", details)
    accumulate = ""
    if split.accumulation > 1:
        accumulate = f" in {split.accumulation} micro-batches of {split.loader_batch}"
    share = f"data.batch_size {batch} -> {split.per_device} per data-parallel rank{accumulate}"
    return Verdict("layout", "pass", f"{head}; {share}", details)


def tp_verdict(problems: list[str], net: Any, tp: int) -> Verdict:
    """The tensor-parallel plan's split dimensions all divide by `tp`, or the first that does not."""
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return Verdict("tp", "FAIL", problems[0] + more, {"problems": problems})
    layers = len(net.tp_plan(1))
    return Verdict("tp", "pass", f"each block's {layers} tensor-parallel layers split evenly {tp} ways")


def shards_verdict(runs: list[RankRun], planned: int | None) -> Verdict:
    """Shard bytes per simulated rank beside the plan's estimate; FAIL on a missed block or a plan error."""
    details = {"ranks": {str(r.rank): [asdict(s) for s in r.shards] for r in runs}}
    broken = [r for r in runs if r.error and not r.shards]
    if broken:
        first = broken[0]
        return Verdict("shards", "FAIL", f"rank {first.rank}: the plan failed: {first.error}", details)
    if runs[0].blocks == 0:
        text = "blocks() returned no block: the whole network is one FSDP unit, gathered whole at every step"
        return Verdict("shards", "FAIL", text, details)
    missed = runs[0].missed
    if missed:
        block, unit = missed[0]
        n = len(missed)
        names = ", ".join(b for b, _ in missed[:4]) + (" ..." if n > 4 else "")
        more = f" ({n} blocks missed: {names})" if n > 1 else ""
        where = "the root unit" if unit == ROOT else f"unit {unit}"
        text = (
            f"block {block} is not an FSDP unit: blocks() left it out, so its parameters sit in {where} and "
            f"are gathered whole at every step{more}"
        )
        return Verdict("shards", "FAIL", text, details)
    per_rank = "; ".join(f"rank {r.rank} {size_text(sum(s.bytes for s in r.shards))}" for r in runs)
    plan = f" (plan {size_text(planned)})" if planned is not None else ""
    units = unit_summary(runs[0].shards, runs[0].classes)
    return Verdict("shards", "pass", f"parameter shards: {per_rank}{plan}; units {units}", details)


def fwdbwd_verdict(runs: list[RankRun], device: str, params: int) -> Verdict:
    """Whether one forward and backward ran on every simulated rank with a gradient for every shard."""
    if device == "meta":
        why = (
            f"{size_text(params * 4)} of fp32 parameters stay on the meta device (shapes only, nothing "
            "allocated); --tiny runs the forward and backward"
        )
        return Verdict("fwdbwd", "skip", why)
    failed = [r for r in runs if r.error and r.shards]
    if failed:
        return Verdict("fwdbwd", "FAIL", f"rank {failed[0].rank}: {failed[0].error}")
    if any(r.error for r in runs):
        return Verdict("fwdbwd", "skip", "not run: the plan failed")
    bad = next((r for r in runs if r.no_grad), None)
    if bad is not None:
        names = ", ".join(bad.no_grad[:4]) + (" ..." if len(bad.no_grad) > 4 else "")
        text = f"rank {bad.rank}: no gradient shaped like its shard: {names}"
        return Verdict("fwdbwd", "FAIL", text, {"no_grad": bad.no_grad})
    ranks = " and ".join(str(r.rank) for r in runs)
    plural = "s" if len(runs) > 1 else ""
    text = f"forward and backward ran on rank{plural} {ranks}; every gradient is shaped like its shard"
    return Verdict("fwdbwd", "pass", text)


def _print_details(runs: list[RankRun]) -> None:
    """`--details`: every parameter's full and local shape, placement and bytes, per simulated rank."""
    for r in runs:
        print(f"rank {r.rank}: parameter, FSDP unit, full shape -> local shape, placements, bytes")
        for s in r.shards:
            full, local = "x".join(map(str, s.shape)), "x".join(map(str, s.local))
            print(f"  {s.name:<36} {s.unit:<16} {full:>12} -> {local:<12} {s.placements:<40} {s.bytes:>12,}")
