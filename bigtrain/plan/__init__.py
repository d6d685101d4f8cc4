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
                 the network's `activation_bytes(b, sample_shape, d, tp, checkpointing)` where it has a
                 closed form (its docstring gives the formula); otherwise the tensors autograd saves for
                 backward in one traced training step (`example_loss(example_input(...))`) on the meta
                 device, scaled from a batch of 2; with checkpointing, the block inputs plus the largest
                 block's saved tensors.
    other        transient buffers: ddp's gradient buckets (a second gradient copy); fsdp's gathered copies
                 of the root (modules outside the blocks) and two blocks (the current and the prefetched
                 one) with their unsharded gradients; autocast's low-precision weight copies.

A layout fits when its total is at most 90% of the device memory: the rest goes to the CUDA context,
allocator fragmentation and communication buffers. Measured against real per-rank tensor bytes in
tests/distributed/test_memory.py (parameters + gradients + optimizer state within 15%).

The planner knows a family only through public hooks: the DataModule's `data_sizes()` (sizes without
reading the data where they are known) and `sample_shape()`, and the network's `blocks()`, `tp_plan()`,
`activation_bytes()`, `example_input()` and `example_loss()` (`bigtrain.models.network.Network`).

Modules: `facts` reads the model (meta-device build, counts, activation models), `memory` does the
per-layout arithmetic and the recommendation, `inputs` reads what the planner is given; the `bigtrain plan`
command line and its table are in `bigtrain.commands.plan`.
"""

from bigtrain.plan.facts import (
    ModelFacts,
    family_of,
    fill_data_sizes,
    meta_copy,
    model_facts,
    plannable_network,
    sample_shape,
)
from bigtrain.plan.inputs import instantiate, parse_memory, recipe_args
from bigtrain.plan.memory import (
    GIB,
    HEADROOM,
    Estimate,
    ParallelLayout,
    Precision,
    Recommendation,
    choose,
    default_device_memory,
    estimate,
    layouts,
    precision_of,
    recommend,
)

__all__ = [
    "GIB",
    "HEADROOM",
    "Estimate",
    "ParallelLayout",
    "ModelFacts",
    "Precision",
    "Recommendation",
    "choose",
    "default_device_memory",
    "estimate",
    "family_of",
    "fill_data_sizes",
    "instantiate",
    "layouts",
    "meta_copy",
    "model_facts",
    "parse_memory",
    "plannable_network",
    "precision_of",
    "recipe_args",
    "recommend",
    "sample_shape",
]
