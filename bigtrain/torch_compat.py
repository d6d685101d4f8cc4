"""Every use bigtrain makes of a private name of torch alone, in one place (Lightning's are in
`bigtrain.lightning_compat`).

A private name can change in any release without notice. Each use here is a small function with the
reason no public API serves. `bigtrain.private_names.PRIVATE_NAMES` lists them all, and
`tests/test_lightning_compat.py` checks that each exists in what is installed and that no other module
uses one. Heavier imports are made inside the functions that need them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.nn.modules.batchnorm import _BatchNorm

# ---- torch.distributed -----------------------------------------------------------------------------------


def default_store() -> Any:
    """The key-value store of the default process group (torch has no public accessor for it)."""
    from torch.distributed.distributed_c10d import _get_default_store

    return _get_default_store()


def forget_device_meshes() -> None:
    """Drop DTensor's caches of sharding decisions and redistribution plans, which hold device meshes.

    They are keyed by a mesh's shape and dimension names, not by its process groups, so a mesh of a destroyed
    process group (`bigtrain debug --simulate`'s fake ones) would answer for a new, equal mesh and name a
    group that no longer exists. torch clears them only through functions it files under debugging.
    """
    from torch.distributed.tensor._redistribute import clear_redistribute_planner_cache
    from torch.distributed.tensor.debug import _clear_sharding_prop_cache

    _clear_sharding_prop_cache()
    clear_redistribute_planner_cache()


# ---- torch -----------------------------------------------------------------------------------------------


def own_persistent_buffers(module: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The module's own (not its children's) buffers that its state_dict keeps."""
    # nn.Module has no public way to ask whether a buffer is persistent.
    return [
        (name, buf)
        for name, buf in module._buffers.items()
        if buf is not None and name not in module._non_persistent_buffers_set
    ]


def norms_float32(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each tensor's 2-norm computed in float32 (non-finite if it holds a NaN or Inf), in fused kernels."""
    # No public fused form (torch.nn.utils.get_total_norm fuses too, but in the tensors' own dtype, where
    # the norm of finite half values can overflow).
    return list(torch._foreach_norm(tensors, 2, dtype=torch.float32))


def copy_each_(destinations: list[torch.Tensor], sources: list[torch.Tensor]) -> None:
    """Copy each source into its destination in place, in fused kernels."""
    torch._foreach_copy_(destinations, sources)  # no public fused form


BatchNormBase = _BatchNorm
"""The base class of every torch BatchNorm (1d/2d/3d, SyncBatchNorm, lazy ones); torch has no public one."""


def check_input_dim(norm: torch.nn.Module, x: torch.Tensor) -> None:
    """Raise as the BatchNorm's own forward does when `x` has the wrong number of dimensions."""
    # Each BatchNorm class checks its input rank in a private method; nothing public does it.
    norm._check_input_dim(x)


def conv_forward(conv: torch.nn.Conv2d, x: torch.Tensor, weight: torch.Tensor, bias: Any) -> torch.Tensor:
    """The Conv2d's forward with another weight and bias (its padding mode included)."""
    # F.conv2d ignores the layer's padding_mode; Conv2d applies it only in this private method.
    return conv._conv_forward(x, weight, bias)


def storage_id(storage: torch.UntypedStorage) -> int:
    """An id of the storage itself, the same for every tensor viewing it (meta storages included)."""
    # data_ptr() is 0 for every meta or empty storage, so it cannot tell them apart.
    return storage._cdata


# ---- torch.distributed.checkpoint ------------------------------------------------------------------------
# Reading a sharded checkpoint into one process without a process group and without knowing its contents
# in advance is what `format_utils.dcp_to_torch_save` does, through these same private names; the public
# `load` needs a state dict of the right shape to fill.


def empty_load_planner() -> type:
    """DCP's load planner that builds the state dict from the checkpoint's metadata (a base class)."""
    from torch.distributed.checkpoint.default_planner import _EmptyStateDictLoadPlanner

    return _EmptyStateDictLoadPlanner


def set_element(root: dict[str, Any], path: Any, value: Any) -> None:
    """Put `value` at the nested position `path` (DCP's flattening mapping) of `root`."""
    from torch.distributed.checkpoint._traverse import set_element as set_nested

    set_nested(root, path, value)


def load_without_process_group(state: dict[str, Any], reader: Any, planner: Any) -> None:
    """Load a DCP checkpoint into `state` in this process alone."""
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    _load_state_dict(state, storage_reader=reader, planner=planner, no_dist=True)


# ---- FLOP counting ---------------------------------------------------------------------------------------


def cpu_attention_flop_formulas() -> dict[Any, Callable[..., int]]:
    """`FlopCounterMode(custom_mapping=...)` entries counting CPU flash attention as torch counts CUDA's.

    torch's FLOP table names only the CUDA attention kernels, so on a CPU a transformer's attention would
    count as zero FLOPs; the CPU kernels are private aten ops.
    """
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    def forward(query_shape, key_shape, value_shape, *args: Any, out_shape: Any = None, **kw: Any) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    def backward(
        grad_shape, query_shape, key_shape, value_shape, *args: Any, out_shape: Any = None, **kw: Any
    ) -> int:
        return sdpa_backward_flop_count(grad_shape, query_shape, key_shape, value_shape)

    aten = torch.ops.aten
    return {
        aten._scaled_dot_product_flash_attention_for_cpu: forward,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: backward,
    }


def flop_counter() -> Any:
    """A context manager counting the FLOPs of every aten op run under it (`.total`), by torch's own
    formula table (what FlopCounterMode counts) plus CPU flash attention.

    Not FlopCounterMode itself: its module tracker hooks every module's backward, which changes the order in
    which autograd sums a tensor's gradients (a residual block's two branches): a step counted under it ends
    some bits away from the same step without it, and a resumed run would no longer match an uninterrupted
    one. A plain dispatch mode (torch's base class for it is in a private module) leaves autograd alone.
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry, shape_wrapper

    formulas = dict(flop_registry)
    formulas.update({op: shape_wrapper(f) for op, f in cpu_attention_flop_formulas().items()})

    class FlopCount(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.total = 0

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = formulas.get(func._overloadpacket)
            if formula is not None:
                self.total += int(formula(*args, **kwargs, out_val=out))
            return out

    return FlopCount()


def record_cuda_memory(enabled: bool) -> None:
    """Start (or stop) recording CUDA allocations with their stacks, for a memory snapshot."""
    # PyTorch's "Understanding CUDA Memory Usage" page documents this private function; no public one exists.
    torch.cuda.memory._record_memory_history(enabled="all" if enabled else None)


def dump_cuda_memory(path: str) -> None:
    """Write the recorded CUDA allocations to `path`; https://pytorch.org/memory_viz opens the file."""
    torch.cuda.memory._dump_snapshot(path)
