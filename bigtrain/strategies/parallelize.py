"""Apply a family's sharding plan under the trainer's strategy, in torchtitan's order.

Each family builds its network in `configure_model()` with one call, `self.net = parallelize(self, build)`.
The family is known here only through its network's hooks: `blocks()` (the units sharded one by one),
`init_weights()` (to materialise a network built on the meta device) and, for tensor parallel,
`tp_plan(tp_size)` (a `parallelize_module` plan per block). The order is:

1. BatchNorm synchronised across the data-parallel ranks (when there is more than one);
2. tensor parallel (FSDP with `tensor_parallel_size > 1`; only networks with `tp_plan()`);
3. activation checkpointing per block (FSDP);
4. `torch.compile` per block (any bigtrain strategy with `compile: true`);
5. `fully_shard` per BatchNorm layer when the parameters are cast to bf16/fp16 (BatchNorm keeps fp32 ones:
   `FSDP.batchnorm_policy`), then per block, then per sub-network that has blocks of its own (the GAN's
   generator and discriminator, which its training step calls directly), then the root;
6. materialisation of a meta-device network: each rank initialises its own shards.

With no device mesh, or a data-parallel mesh of size 1, nothing is sharded: one module runs under every
strategy. Calling it again on a network it has already prepared returns that network unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from bigtrain.errors import UserError
from bigtrain.lightning_compat import attached_trainer
from bigtrain.strategies.batch import data_parallel
from bigtrain.strategies.fsdp import FSDP, META_INIT_MIN_BYTES
from bigtrain.strategies.mesh import data_parallel_group
from bigtrain.strategies.sync_norm import sync_batchnorm
from bigtrain.torch_compat import BatchNormBase

_DONE = "_bigtrain_parallelized"


def parallelize(
    module: Any, net: nn.Module | Callable[[], nn.Module], strategy: Any | None = None
) -> nn.Module:
    """Build `net` (given a factory) and apply the strategy's parallelism to it; returns the network."""
    trainer = attached_trainer(module)
    if strategy is None and trainer is not None:
        strategy = trainer.strategy
    built = net if isinstance(net, nn.Module) else _build(net, strategy)
    if getattr(built, _DONE, False):
        return built
    dp_size, _ = data_parallel(trainer) if trainer is not None else (1, 0)
    if getattr(strategy, "sync_batchnorm", False) and dp_size > 1:
        sync_batchnorm(built, data_parallel_group(trainer))
    if isinstance(strategy, FSDP):
        _apply_fsdp(built, strategy)
    elif getattr(strategy, "compile", False):
        _compile_blocks(built)
    setattr(built, _DONE, True)
    return built


def _build(factory: Callable[[], nn.Module], strategy: Any) -> nn.Module:
    """The network, on the meta device when FSDP will initialise it shard by shard."""
    meta_init = getattr(strategy, "meta_init", False) if isinstance(strategy, FSDP) else False
    if meta_init is False or _mesh_size(strategy) <= 1:
        return factory()
    with torch.device("meta"):
        net = factory()
    if meta_init is None and _param_bytes(net) < META_INIT_MIN_BYTES:
        # Small enough to initialise in full: every rank draws the same weights a single process would.
        return factory()
    return net


def _apply_fsdp(net: nn.Module, strategy: FSDP) -> None:
    mesh = strategy.device_mesh
    tp_mesh, dp_mesh = mesh["tensor_parallel"], mesh["data_parallel"]
    if tp_mesh.size() > 1:
        _tensor_parallel(net, tp_mesh)
    if strategy.activation_checkpointing:
        for block in _blocks(net):
            _checkpoint(block)
    if strategy.compile:
        _compile_blocks(net)
    if dp_mesh.size() > 1 or tp_mesh.size() > 1:
        _fully_shard(net, dp_mesh, strategy)
    if _on_meta(net):
        device = torch.device("cpu") if strategy.cpu_offload else strategy.root_device
        net.to_empty(device=device)
        with torch.no_grad():
            _init_weights(net)


def _tensor_parallel(net: nn.Module, tp_mesh: Any) -> None:
    from torch.distributed.tensor.parallel import parallelize_module

    if not callable(getattr(net, "tp_plan", None)):
        raise UserError(
            f"trainer.strategy.tensor_parallel_size {tp_mesh.size()}: {type(net).__name__} has no "
            f"tensor-parallel plan (only the transformer family has one); use tensor_parallel_size 1"
        )
    plan = net.tp_plan(tp_mesh.size())
    for block in _blocks(net):
        parallelize_module(block, tp_mesh, plan)


def _checkpoint(block: nn.Module) -> None:
    """Recompute the block's activations in backward (in place: the module and its state-dict keys stay)."""
    from torch.utils.checkpoint import checkpoint

    forward = block.forward

    def checkpointed(*args: Any, **kwargs: Any) -> Any:
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    block.forward = checkpointed


def _compile_blocks(net: nn.Module) -> None:
    for block in _blocks(net):
        block.compile()  # in place, so parameter names (and checkpoints) do not change


def _fully_shard(net: nn.Module, dp_mesh: Any, strategy: FSDP) -> None:
    from torch.distributed.fsdp import fully_shard

    kwargs = dict(
        mesh=dp_mesh,
        reshard_after_forward=strategy.reshard_after_forward,
        mp_policy=strategy.mixed_precision_policy(),
        offload_policy=strategy.offload_policy(),
    )
    norm_policy = strategy.batchnorm_policy()
    if norm_policy is not None:
        # Each BatchNorm its own unit, sharded before the block around it claims its parameters, so it
        # computes with fp32 parameters and statistics on the block's bf16/fp16 activations.
        for norm in [m for m in net.modules() if isinstance(m, BatchNormBase)]:
            fully_shard(norm, **{**kwargs, "mp_policy": norm_policy})
    for block in _blocks(net):
        fully_shard(block, **kwargs)
    for child in net.children():
        if callable(getattr(child, "blocks", None)):
            fully_shard(child, **kwargs)
    fully_shard(net, **kwargs)


def _blocks(net: nn.Module) -> list[nn.Module]:
    if not callable(getattr(net, "blocks", None)):
        raise TypeError(f"{type(net).__name__} has no blocks(): the family's sharding plan is missing")
    return list(net.blocks())


def _init_weights(net: nn.Module) -> None:
    if callable(getattr(net, "init_weights", None)):
        net.init_weights()
        return
    for module in net.modules():
        if module is not net and callable(getattr(module, "reset_parameters", None)):
            module.reset_parameters()


def _mesh_size(strategy: FSDP) -> int:
    mesh = strategy.device_mesh
    return mesh["data_parallel"].size() * mesh["tensor_parallel"].size()


def _param_bytes(net: nn.Module) -> int:
    return sum(p.numel() * 4 for p in net.parameters())


def _on_meta(net: nn.Module) -> bool:
    return any(t.is_meta for t in (*net.parameters(), *net.buffers()))
