"""FSDP2 (`torch.distributed.fsdp.fully_shard`), optionally x tensor parallel, as a Lightning strategy.

Lightning's own `strategy="fsdp"` is FSDP1, which refuses CPUs and is being replaced upstream. This is its
`ModelParallelStrategy` (which runs FSDP2 on any device, gloo included) with typed options and bigtrain's
defaults: every rank is data parallel unless a tensor-parallel degree is asked for. The sharding itself is
applied by `bigtrain.strategies.parallelize` from each family's `configure_model()`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

import torch

from bigtrain.errors import UserError
from bigtrain.lightning_compat import ModelParallelHooks
from bigtrain.strategies.batch import split_ranks

Dtype = Literal["fp32", "bf16", "fp16"]
"""A floating-point type by its short name."""

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

DEFAULT_TIMEOUT_S = 600.0
"""Collective timeout: long enough for a slow first step, short enough that a hung rank ends the job."""

META_INIT_MIN_BYTES = 2**30
"""With `meta_init: null`: networks with at least this many fp32 parameter bytes are initialised sharded."""


def mesh_sizes(
    data_parallel_size: int | None, tensor_parallel_size: int, world_size: int, nodes: int | None = None
) -> tuple[int, int]:
    """(data-parallel, tensor-parallel) sizes for `world_size` ranks; UserError when they do not fit."""
    ranks = split_ranks(world_size, tensor_parallel_size, data_parallel_size, nodes=nodes)
    return ranks.size, ranks.tp


class FSDP(ModelParallelHooks):
    """Fully sharded data parallel (FSDP2) over the family's blocks, optionally 2D with tensor parallel.

    Args:
        data_parallel_size: Ranks that shard the model and split the global batch; None: all ranks divided by
            the tensor-parallel degree.
        tensor_parallel_size: Ranks that split each layer (transformer only); 1: pure FSDP.
        mixed_precision: Dtype of the parameters in forward and backward (the sharded master copy stays fp32;
            BatchNorm layers keep fp32 parameters, as under autocast).
        reduce_dtype: Dtype in which gradients are reduced across ranks.
        activation_checkpointing: Recompute each block's activations in backward instead of storing them.
        cpu_offload: Keep the sharded parameters, gradients and optimizer state in CPU memory (pinned when an
            accelerator is used).
        reshard_after_forward: Free each block's gathered parameters after its forward (less memory, one more
            all-gather in backward); False keeps them until backward (ZeRO-2 style).
        compile: `torch.compile` each block.
        meta_init: Build the network on the meta device and initialise each rank's shards after sharding
            (for models that do not fit one device). None: only when the parameters take at least 1 GiB in
            fp32; smaller networks are initialised in full, identically to a single-device run, then sharded.
        sync_batchnorm: Normalise over the whole global batch in BatchNorm layers (so N ranks train exactly as
            one process would); False: each rank normalises over its own share.
        save_distributed_checkpoint: Save sharded checkpoints (a folder with a file per rank); False: one
            full checkpoint gathered on rank 0.
        timeout_s: Seconds a collective may wait for the other ranks before the job fails.
    """

    def __init__(
        self,
        data_parallel_size: int | None = None,
        tensor_parallel_size: int = 1,
        mixed_precision: Dtype = "fp32",
        reduce_dtype: Dtype = "fp32",
        activation_checkpointing: bool = False,
        cpu_offload: bool = False,
        reshard_after_forward: bool = True,
        compile: bool = False,
        meta_init: bool | None = None,
        sync_batchnorm: bool = True,
        save_distributed_checkpoint: bool = True,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        for name, value in (
            ("data_parallel_size", data_parallel_size),
            ("tensor_parallel_size", tensor_parallel_size),
        ):
            if value is not None and value < 1:
                raise UserError(f"trainer.strategy.{name} must be >= 1, got {value}")
        for name, value in (("mixed_precision", mixed_precision), ("reduce_dtype", reduce_dtype)):
            if value not in DTYPES:
                raise UserError(f"trainer.strategy.{name} must be one of {', '.join(DTYPES)}, got {value!r}")
        if timeout_s <= 0:
            raise UserError(f"trainer.strategy.timeout_s must be > 0, got {timeout_s}")
        super().__init__(
            data_parallel_size=data_parallel_size or 1,
            tensor_parallel_size=tensor_parallel_size,
            save_distributed_checkpoint=save_distributed_checkpoint,
            timeout=timedelta(seconds=timeout_s),
        )
        self.data_parallel_size = data_parallel_size
        self.tensor_parallel_size = tensor_parallel_size
        self.mixed_precision = mixed_precision
        self.reduce_dtype = reduce_dtype
        self.activation_checkpointing = activation_checkpointing
        self.cpu_offload = cpu_offload
        self.reshard_after_forward = reshard_after_forward
        self.compile = compile
        self.meta_init = meta_init
        self.sync_batchnorm = sync_batchnorm
        self.timeout_s = timeout_s

    def _mesh_sizes(self) -> tuple[int, int]:
        world = self.num_nodes * self.num_processes
        return mesh_sizes(self.data_parallel_size, self.tensor_parallel_size, world, self.num_nodes)

    def before_launch(self) -> None:  # noqa: D102
        # Checked here, in the launching process, so a bad degree fails before any rank starts.
        self.set_mesh_sizes(*self._mesh_sizes())

    def setup_environment(self) -> None:  # noqa: D102
        self.set_mesh_sizes(*self._mesh_sizes())
        super().setup_environment()

    def setup(self, trainer: Any) -> None:  # noqa: D102
        super().setup(trainer)
        # torch's clip_grad_norm_ stacks every gradient's norm, which fails when FSDP x TP leaves DTensors
        # on two meshes (sharded 1D and 2D); Lightning's clipping (trainer.gradient_clip_val, and a module's
        # clip_gradients) goes through the precision plugin, so its norm is computed mesh by mesh instead.
        plugin = self.precision_plugin
        plugin.clip_grad_by_norm = lambda opt, max_norm: clip_grad_norm(plugin.main_params(opt), max_norm)

    def model_to_device(self) -> None:  # noqa: D102
        if not self.cpu_offload:
            return super().model_to_device()
        # Offloaded shards stay in CPU memory (FSDP2 copies them per use); only the buffers move.
        assert self.model is not None
        for module in self.model.modules():
            for name, buffer in module.named_buffers(recurse=False):
                setattr(module, name, buffer.to(self.root_device))  # replaces the buffer, persistence kept
        return None

    def mixed_precision_policy(self) -> Any:
        """FSDP2's MixedPrecisionPolicy for these options."""
        from torch.distributed.fsdp import MixedPrecisionPolicy

        param = None if self.mixed_precision == "fp32" else DTYPES[self.mixed_precision]
        reduce = None if param is None and self.reduce_dtype == "fp32" else DTYPES[self.reduce_dtype]
        return MixedPrecisionPolicy(param_dtype=param, reduce_dtype=reduce)

    def batchnorm_policy(self) -> Any:
        """The MixedPrecisionPolicy of BatchNorm layers: fp32 parameters, inputs left in the compute dtype.

        A BatchNorm's running statistics are fp32 buffers (FSDP casts parameters, not buffers), and torch's
        batch_norm takes either parameters of its input's dtype beside statistics of that dtype too, or fp32
        parameters and statistics beside a low-precision input ("expected scalar type BFloat16 but found
        Float" otherwise); the latter also accumulates the statistics in fp32 and returns the input's dtype,
        as autocast does. None when parameters are fp32 anyway.
        """
        from torch.distributed.fsdp import MixedPrecisionPolicy

        policy = self.mixed_precision_policy()
        if policy.param_dtype in (None, torch.float32):
            return None
        return MixedPrecisionPolicy(
            param_dtype=torch.float32, reduce_dtype=policy.reduce_dtype, cast_forward_inputs=False
        )

    def offload_policy(self) -> Any:
        """FSDP2's offload policy: CPU offload (pinned only where an accelerator exists) or none."""
        from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy

        if not self.cpu_offload:
            return OffloadPolicy()
        return CPUOffloadPolicy(pin_memory=self.root_device.type != "cpu")

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> dict[str, Any]:
        """Resume from a sharded checkpoint through bigtrain's safe reader: DCP's own would unpickle its
        `.metadata` and non-tensor entries as they are now, whatever was vetted before."""
        from pathlib import Path

        from torch.distributed.tensor import DTensor

        from bigtrain.checkpoints.fits import check_fits, saved_shapes
        from bigtrain.checkpoints.load import META_FILE
        from bigtrain.checkpoints.sharded import load_sharded_into

        path = Path(self.broadcast(checkpoint_path))
        strict = self.lightning_module.strict_loading
        check_fits(saved_shapes(path), self.lightning_module, strict=strict)
        sharded = path.is_dir() and (path / META_FILE).is_file()  # Lightning's test for a sharded folder
        if not sharded or not any(isinstance(p, DTensor) for p in self.model.parameters()):
            return super().load_checkpoint(path, weights_only)  # a file; or Lightning's own refusal
        return load_sharded_into(path, self.model, self.optimizers, strict=strict)

    def __repr__(self) -> str:
        dp, tp, mp = self.data_parallel_size, self.tensor_parallel_size, self.mixed_precision
        return f"FSDP(data_parallel_size={dp}, tensor_parallel_size={tp}, mixed_precision={mp})"


@torch.no_grad()
def clip_grad_norm(parameters: Any, max_norm: float) -> torch.Tensor:
    """Scale gradients to a total 2-norm of at most max_norm, with DTensor gradients on different meshes."""
    from torch.distributed.tensor import DTensor

    params = [p for p in parameters if p.grad is not None]
    grads = [p.grad for p in params]
    if not grads:
        return torch.tensor(0.0)
    by_mesh: dict[Any, list[torch.Tensor]] = {}
    for g in grads:
        by_mesh.setdefault(g.device_mesh if isinstance(g, DTensor) else None, []).append(g)
    parts = []
    for mesh, group in by_mesh.items():
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in group]))
        parts.append(norm.full_tensor() if mesh is not None else norm)
    device = grads[0].to_local().device if isinstance(grads[0], DTensor) else grads[0].device
    total = torch.linalg.vector_norm(torch.stack([p.to(device) for p in parts]))
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, total, foreach=False)
    return total
