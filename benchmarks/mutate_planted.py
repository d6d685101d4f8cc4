"""Hand-planted bugs that the README's promises rule out, and the tests that must catch each one.

`make mutate MUTATE_ARGS=--planted` plants each in a scratch copy of the repository, runs its tests there
and reports whether they failed (caught). They are the bugs that issue 13 found the suite did not catch,
then the ones it did; mutmut's operators cannot write them (each changes what a line means, not a token).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Plant:
    """Replace `old` (exactly once) with `new` in `path`; `tests` (pytest ids) must then fail."""

    path: str
    old: str
    new: str
    tests: tuple[str, ...]


PLANTED: dict[str, Plant] = {
    "keep_last ignored (every checkpoint kept)": Plant(
        "bigtrain/callbacks/checkpoints.py",
        "save_top_k=keep_last,",
        "save_top_k=-1,",
        ("tests/cluster/test_keep_last.py",),
    ),
    "tensor parallel skips the last block": Plant(
        "bigtrain/strategies/parallelize.py",
        "    plan = net.tp_plan(tp_mesh.size())\n    for block in _blocks(net):",
        "    plan = net.tp_plan(tp_mesh.size())\n    for block in list(_blocks(net))[:-1]:",
        ("tests/distributed/test_memory.py",),
    ),
    "tensor parallel skips the last block (in one process)": Plant(
        "bigtrain/strategies/parallelize.py",
        "    plan = net.tp_plan(tp_mesh.size())\n    for block in _blocks(net):",
        "    plan = net.tp_plan(tp_mesh.size())\n    for block in list(_blocks(net))[:-1]:",
        (
            "tests/strategies/test_parallelize_inprocess.py"
            "::test_tensor_parallel_splits_every_block_and_fsdp_shards_over_data_parallel_only",
        ),
    ),
    "strategy auto never asks the planner": Plant(
        "bigtrain/strategies/resolve.py",
        "    if model is None or plannable_network(model, datamodule) is None:",
        "    if True:",
        ("tests/distributed/test_strategies.py::test_auto_takes_fsdp_where_ddp_cannot_fit",),
    ),
    "the loader ignores its saved position in the epoch": Plant(
        "bigtrain/data/base.py",
        '        self._resume = (int(state["epoch"]), int(state["batches"]))',
        "        pass",
        (
            "tests/cluster/test_cluster_preemption.py"
            "::test_signal_saves_at_step_boundary_and_resume_trains_each_step_once",
        ),
    ),
    "every rank loads rank 0's share": Plant(
        "bigtrain/data/base.py",
        "num_replicas=world, rank=rank,",
        "num_replicas=world, rank=0,",
        (
            "tests/reliability/test_resume.py"
            "::test_resumed_rank_shares_are_disjoint_and_interleave_to_the_single_process_batches",
        ),
    ),
    "a resumed rank takes rank 0's share": Plant(
        "bigtrain/data/base.py",
        "            sampler.skip = resume[1] * self.batch_size  # type: ignore[operator]",
        "            sampler.skip = resume[1] * self.batch_size  # type: ignore[operator]\n"
        "            sampler.rank = 0",
        (
            "tests/reliability/test_resume.py"
            "::test_resumed_rank_shares_are_disjoint_and_interleave_to_the_single_process_batches",
        ),
    ),
    "RNG states not restored on resume": Plant(
        "bigtrain/callbacks/resume_state.py",
        '    torch.set_rng_state(state["torch"].cpu().clone())',
        "    return",
        ("tests/reliability/test_resume.py",),
    ),
    "checksums not compared": Plant(
        "bigtrain/checkpoints/manifest.py",
        'if checksums and sha256(path) != expected["sha256"]:',
        "if False:",
        ("tests/reliability/test_checkpoint_manifests.py",),
    ),
    "last.ckpt written as a copy": Plant(
        "bigtrain/callbacks/checkpoints.py",
        'kw.setdefault("save_last", "link")',
        'kw.setdefault("save_last", True)',
        ("tests/reliability/test_checkpoint_manifests.py", "tests/cluster/test_keep_last.py"),
    ),
    "best checkpoint ignores its mode": Plant(
        "bigtrain/callbacks/checkpoints.py",
        "        monitor=metric,\n        mode=mode,",
        '        monitor=metric,\n        mode="min",',
        ("tests/reliability/test_best_checkpoint.py",),
    ),
    "FSDP clipping takes each rank's shard norm for the global norm": Plant(
        "bigtrain/strategies/fsdp.py",
        "        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in group]))\n"
        "        parts.append(norm.full_tensor() if mesh is not None else norm)",
        "        local = [g.to_local() if isinstance(g, DTensor) else g for g in group]\n"
        "        norms = [torch.linalg.vector_norm(g) for g in local]\n"
        "        parts.append(torch.linalg.vector_norm(torch.stack(norms)))",
        (
            "tests/distributed/test_equivalence.py::test_gradient_clipping_clips_the_global_norm_under_every_strategy",
        ),
    ),
    "mixed_precision bf16 computes in fp32": Plant(
        "bigtrain/strategies/fsdp.py",
        "        return MixedPrecisionPolicy(param_dtype=param, reduce_dtype=reduce)",
        "        return MixedPrecisionPolicy(param_dtype=None, reduce_dtype=reduce)",
        ("tests/distributed/test_equivalence.py::test_fsdp_options_run_and_match_fp32",),
    ),
}
"""What each planted bug is -> where and how it is planted, and the tests that must catch it."""
