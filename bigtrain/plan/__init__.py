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

Modules: `facts` reads the model (meta-device build, counts, activation models), `memory` does the
per-layout arithmetic and the recommendation, `inputs` reads what the planner is given; the `bigtrain plan`
command line and its table are in `bigtrain.commands.plan`.
"""

from bigtrain.plan.facts import ModelFacts, family_of, fill_data_sizes, meta_copy, model_facts
from bigtrain.plan.inputs import instantiate, parse_memory, recipe_args
from bigtrain.plan.memory import (
    GIB,
    HEADROOM,
    Estimate,
    Layout,
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
    "Layout",
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
    "precision_of",
    "recipe_args",
    "recommend",
]
