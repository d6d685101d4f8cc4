"""Surviving mutants of `make mutate` that are equivalent to the original code, and why (by mutmut's name).

A mutant belongs here only when no input the program can reach tells it from the original; any other
survivor needs a test that kills it.
"""

from __future__ import annotations

EQUIVALENT: dict[str, str] = {
    "bigtrain.strategies.batch.x__near__mutmut_2": (
        "`_near` is only asked about a value that is not among the divisors (it did not divide), so `<` and "
        "`<=` pick the same ones"
    ),
    "bigtrain.strategies.batch.x__near__mutmut_6": (
        "as above: the value asked about is never a divisor, so `>` and `>=` pick the same ones"
    ),
    "bigtrain.strategies.batch.x__divisors__mutmut_7": "n + 1 never divides n (n >= 1): the same divisors",
    "bigtrain.strategies.batch.x_split_batch__mutmut_24": (
        "the example batch sizes are 0 or multiples of dp.size >= 2 (dp 1 always divides), so `v > 0` and "
        "`v > 1` keep the same ones"
    ),
    "bigtrain.strategies.batch.x_data_parallel__mutmut_8": (
        '`None` and `""` are both falsy, the only way the value is read (`if kwargs:`)'
    ),
    "bigtrain.checkpoints.manifest.x_sha256__mutmut_5": (
        "`read(None)` reads the whole file in one block: the same digest (only the memory it takes differs)"
    ),
}
EQUIVALENT.update(
    {
        f"bigtrain.checkpoints.discover.x__warn__mutmut_{n}": (
            "`flush` only decides when the line reaches stderr, not what it says"
        )
        for n in (5, 8, 9)
    }
)
# How the manifest's JSON is laid out (indentation, key order) is not read by anything: `json.loads` gives
# the same dict, so these change only the whitespace and order of the file.
EQUIVALENT.update(
    {
        f"bigtrain.checkpoints.manifest.x_write_manifest__mutmut_{n}": (
            "layout of the manifest's JSON only (indentation or key order): it reads back the same"
        )
        for n in (9, 10, 13, 14, 15, 16)
    }
)

_U = "bigtrain.checkpoints.unpickle."
_MMAP = (
    "mmap only decides whether a zip checkpoint's tensors are mapped or read; the values and the errors are "
    "the same"
)
_CPU = (
    "on a machine without CUDA every tensor loads onto the CPU with or without map_location='cpu'; only a "
    "checkpoint saved on a GPU, read where no GPU is, would tell them apart (not testable here)"
)
_WEIGHTS_ONLY = (
    "torch >= 2.6 (2.13 installed) loads with weights_only=True by default; on torch 2.5, which "
    "pyproject still admits, this would be a real hole"
)
EQUIVALENT.update(
    {
        _U + "x_load_file__mutmut_1": _MMAP,
        _U + "x_load_file__mutmut_11": _MMAP + " (None is False here)",
        _U + "x_load_file__mutmut_12": _CPU,
        _U + "x_load_file__mutmut_15": _MMAP,
        _U + "x_load_file__mutmut_16": "load_bytes's own default map_location is the same 'cpu'",
        _U + "x_load_bytes__mutmut_1": _MMAP + "; the one caller without mmap passes a stream, never mapped",
        _U + "x_load_bytes__mutmut_2": "a default no caller uses: both pass map_location",
        _U + "x_load_bytes__mutmut_3": "a default no caller uses: both pass map_location",
        _U + "x_load_bytes__mutmut_8": _CPU,
        _U + "x_load_bytes__mutmut_9": _WEIGHTS_ONLY,
        _U + "x_load_bytes__mutmut_10": _MMAP,
        _U + "x_load_bytes__mutmut_12": _CPU,
        _U + "x_load_bytes__mutmut_13": _WEIGHTS_ONLY,
        _U + "x_load_bytes__mutmut_14": _MMAP,
        _U + "x_load_bytes__mutmut_16": _MMAP,
        _U + "x_load_bytes__mutmut_23": (
            "this branch is a file that is neither a zip nor a pickle: unreadable_error then says 'not a "
            "PyTorch checkpoint' whatever the error"
        ),
        _U + "x_unsafe_error__mutmut_36": (
            "for a name without a dot both tests agree; a dotted name is never a builtins attribute, so "
            "hasattr is False either way"
        ),
        _U + "xǁMetadataUnpicklerǁfind_class__mutmut_1": (
            "a dotted name reaches an attribute of an allowed class or module; none of those is a DCP "
            "metadata class, a torch dtype/layout/format or an allow-listed pair, so it is refused either way"
        ),
    }
)

_MIX = (
    "another fixed mixing of (seed, epoch, index): every sample still gets its own generator, the same on "
    "every rank and on resume (test_sample_generators_differ_for_every_sample_even_for_large_seeds); no "
    "promise names the values"
)
_GEN = "bigtrain.data.base.x_sample_generator__mutmut_"
EQUIVALENT.update({f"{_GEN}{n}": _MIX for n in (2, 4, 6, 7, 10, 11, 13, 14, 15)})
EQUIVALENT["bigtrain.data.base.xǁBigtrainDataModuleǁloader__mutmut_20"] = (
    "persistent_workers=None is falsy like False; with workers the original's True is what tests check"
)
EQUIVALENT.update(
    {
        f"bigtrain.data.base.xǁBigtrainDataModuleǁloader__mutmut_{n}": (
            "torch's default collate of a ReadBatch restacks its samples into the same tensors "
            "(tests/data/test_plain_loader.py); only the per-sample work differs, which `make bench` times"
        )
        for n in (24, 34, 44)
    }
)

EQUIVALENT.update(
    {
        "bigtrain.callbacks.resume_state.xǁResumeStateǁ__init____mutmut_3": (
            "the set-aside state is only read as `self._outside_validation or capture_rng()`: '' and None "
            "are both falsy"
        ),
        "bigtrain.callbacks.resume_state.x_capture_rng__mutmut_11": (
            "torch.tensor of Python ints is int64 without the dtype too"
        ),
        "bigtrain.callbacks.resume_state.x_capture_rng__mutmut_13": (
            "torch.tensor of Python ints is int64 without the dtype too"
        ),
        "bigtrain.callbacks.resume_state.x_capture_rng__mutmut_26": (
            "numpy's MT19937 words are below 2**32, so float64 (astype(None)) holds them exactly, and "
            "restore_rng casts them back to uint32: the same generator"
        ),
        "bigtrain.callbacks.resume_state.x_restore_rng__mutmut_19": (
            "np.random.set_state converts the int64 words to uint32 itself (they are all below 2**32, "
            "as capture_rng read them)"
        ),
    }
)

UNREACHED: dict[str, str] = {}
"""Surviving mutants that are not equivalent but that no test can kill in this run, and why: they want a
CUDA device, or several ranks (whose tests mutmut cannot trace). They count as survivors."""
_RS = "bigtrain.callbacks.resume_state."
_CUDA = "CUDA generator state: needs a CUDA device (the gpu-marked tests; none here)"
UNREACHED.update({f"{_RS}x_capture_rng__mutmut_{n}": _CUDA for n in (33, 34, 35, 36)})
UNREACHED.update({f"{_RS}x_restore_rng__mutmut_{n}": _CUDA for n in (28, 29, 30, 31, 32, 33, 34)})
UNREACHED.update(
    {
        f"{_RS}x__gather__mutmut_{n}": (
            "the multi-rank gather: only the 2-rank resume tests reach it, and mutmut cannot trace them"
        )
        for n in range(1, 17)
    }
)

# The sharding plan (strategies/parallelize.py).
_PAR = "bigtrain.strategies.parallelize."
_FALSY = "the default is only tested for truth: None and False are both falsy"
EQUIVALENT.update({f"{_PAR}x_parallelize__mutmut_{n}": _FALSY for n in (16, 31, 51)})
EQUIVALENT.update(
    {
        f"{_PAR}x_parallelize__mutmut_23": "`data_parallel(None)` is (1, 0) itself: the same, trainer or not",
        f"{_PAR}x_parallelize__mutmut_27": "only the size is read (`dp_size, _ = ...`), not the rank",
        f"{_PAR}x__fully_shard__mutmut_35": (
            "the GAN's generator and discriminator hold no parameters outside their blocks (each its own "
            "unit), and tensor parallel is the transformer's only, so their mesh is the whole world either "
            "way: the unit's options apply to nothing"
        ),
    }
)
EQUIVALENT.update(
    {
        f"{_PAR}x__build__mutmut_{n}": (
            "FSDP always sets `meta_init` and no other strategy has it, so the default is never what is read"
        )
        for n in (3, 6, 9, 12)
    }
)
_OFFLOAD = (
    "CPU offload on a CPU-only machine: the compute device is the CPU too, so where the shards live cannot "
    "differ (tests/gpu covers offload, but calls fully_shard itself)"
)
UNREACHED.update({f"{_PAR}x__apply_fsdp__mutmut_{n}": _OFFLOAD for n in (29, 30)})
UNREACHED.update({f"{_PAR}x__fully_shard__mutmut_{n}": _OFFLOAD for n in (9, 13)})

# Preemption (callbacks/preemption.py).
_PRE = "bigtrain.callbacks.preemption."
_PRE_CLS = f"{_PRE}xǁPreemptionǁ"
EQUIVALENT.update(
    {
        f"{_PRE}x_requeue__mutmut_{n}": "`subprocess.run`'s check is False by default, and None is falsy"
        for n in (17, 22)
    }
)
EQUIVALENT.update(
    {
        f"{_PRE}x_requeue__mutmut_27": (
            "61 s instead of 60: nothing promises the exact limit, only that there is one "
            "(test_a_hung_scontrol_is_given_up_on)"
        ),
        f"{_PRE_CLS}__init____mutmut_5": (
            "setup() sets `_previous` before any teardown: Lightning calls a callback's teardown only after "
            "its setup (a failed fit runs on_exception, not teardown)"
        ),
        f"{_PRE_CLS}teardown__mutmut_8": "setup() sets `_previous` again before the next teardown",
        f"{_PRE_CLS}_agree__mutmut_19": "Lightning upper-cases the op's name: 'MAX' and 'max' are one op",
        f"{_PRE_CLS}_preempt__mutmut_18": "torch's broadcast_object_list takes src None as rank 0",
        f"{_PRE_CLS}_preempt__mutmut_20": "Lightning's broadcast takes src 0 by default",
    }
)
EQUIVALENT.update(
    {
        f"{_PRE_CLS}__init____mutmut_{n}": "on_train_start sets `_last_step` before the first batch ends"
        for n in (6, 7, 8)
    }
)
EQUIVALENT.update(
    {
        f"{_PRE_CLS}setup__mutmut_{n}": (
            "Lightning's accelerator connector holds the strategy's own environment object (it sets one "
            "from the other), so the fallback finds the same SLURMEnvironment"
        )
        for n in (1, 2, 7, 8)
    }
)
EQUIVALENT.update(
    {
        f"{_PRE_CLS}_preempt__mutmut_{n}": (
            "sys.stderr is line-buffered (Python >= 3.9) and the line ends in a newline: it is written at "
            "once, flushed or not"
        )
        for n in (42, 45, 46)
    }
)
_TWO_RANKS = (
    "the vote itself: the fake process group returns each number unchanged, so only two real ranks (the "
    "distributed test in tests/cluster, which mutmut cannot trace) tell apart who combines what"
)
UNREACHED.update({f"{_PRE_CLS}_agree__mutmut_{n}": _TWO_RANKS for n in (1, 2, 17)})
UNREACHED.update(
    {
        f"{_PRE_CLS}_agree__mutmut_{n}": (
            "where the vote's tensor lives: on a CPU-only machine the root device is the CPU"
        )
        for n in (7, 9)
    }
)
UNREACHED[f"{_PRE_CLS}teardown__mutmut_6"] = (
    "`signal.getsignal` gives None only for a handler C code installed before Python started; a test "
    "process cannot have one"
)
_NF = "bigtrain.callbacks.nonfinite."
_G = _NF + "xǁNonFiniteGuardǁ"
_SET_AT_START = "on_train_start sets it before any hook reads it (and again for every fit)"
EQUIVALENT.update(
    {
        _G + "on_train_end__mutmut_1": "read by nothing after the fit; " + _SET_AT_START,
        _G + "on_train_batch_start__mutmut_5": "`_snapshot_due` is only read as a truth value: None is False",
        **{
            f"{_G}_skip__mutmut_{n}": (
                "the buffers were just put back from the copy, so the copy already holds what the next step "
                "starts from: taking it again or not gives the same values (and on_train_start raises the "
                "flag for a later fit)"
            )
            for n in (5, 6)
        },
        # The agreement between ranks: these change the reduction in ways that give the same answer.
        _G + "_agree__mutmut_13": (
            "the strategies' default reduction, the mean, is finite exactly when the sum is (and where the "
            "sum overflows over finite values, the element check after it finds no culprit either way)"
        ),
        **{
            f"{_G}_agree__mutmut_{n}": (
                "the loss flag kept as a bool: stacked beside the float32 index, torch.stack promotes it to "
                "float32 anyway"
            )
            for n in (18, 20)
        },
        **{
            f"{_G}_agree__mutmut_{n}": (
                "the culprit index kept as int64: stacked beside the float32 loss flag, torch.stack promotes "
                "it to float32 anyway"
            )
            for n in (24, 26)
        },
        _G + "_agree__mutmut_31": (
            "reducing on one rank too: the one-process strategies' reduce returns the tensor unchanged"
        ),
        _NF + "x_checksum__mutmut_4": (
            "a loss reaches backward as a one-element tensor: reshape(1) and reshape(-1) give the same view"
        ),
    }
)
_ONE_DEVICE = (
    "the device the flags are put on: on a CPU-only machine every tensor is on the CPU anyway; only a CUDA "
    "run (gpu-marked tests, none here) could tell"
)
UNREACHED.update(
    {
        **{f"{_G}_agree__mutmut_{n}": _ONE_DEVICE for n in (1, 14, 17, 19, 23, 25)},
        **{f"{_NF}x_first_nonfinite__mutmut_{n}": _ONE_DEVICE for n in (13, 15)},
        **{
            f"{_NF}x_checksum__mutmut_{n}": (
                "the fallback for gradients on several devices: needs two devices (CUDA)"
            )
            for n in (13, 14, 15, 16)
        },
    }
)
