"""Sharded checkpoints: the folders bigtrain's fsdp strategy writes, read only through the one unpickler.

A sharded checkpoint is DCP's (torch.distributed.checkpoint) `*.distcp` shards, DCP's pickled `.metadata`,
and Lightning's `meta.pt` (loops, hyper-parameters, schedulers). DCP itself would unpickle `.metadata` with
plain `pickle.load` and the shards' non-tensor entries with `torch.load(weights_only=False)`; every read here
goes through `MetadataReader` (the allow-list of `bigtrain.checkpoints.unpickle`) and `weights_only=True`
instead: when vetting a folder, when exporting it, and when the fsdp strategy resumes from it, so a file
swapped after it was vetted is refused too.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bigtrain.checkpoints.unpickle import META_FILE, METADATA_FILE, load_bytes, load_file, read_metadata
from bigtrain.errors import UserError


def is_sharded(path: Path) -> bool:
    """Whether `path` is a distributed checkpoint folder (DCP writes `.metadata` last)."""
    return path.is_dir() and (path / METADATA_FILE).is_file()


def check_sharded(folder: str | Path) -> None:
    """Vet a sharded checkpoint folder: only DCP's own classes may appear in its `.metadata` pickle."""
    folder = Path(folder)
    metadata = folder / METADATA_FILE
    if not metadata.is_file():
        raise UserError(f"checkpoint {folder} has no .metadata: not a complete sharded checkpoint")
    if (folder / META_FILE).is_file():
        load_file(folder / META_FILE, mmap=True)
    with metadata.open("rb") as f:
        _check_shards(read_metadata(f, folder), folder)


def _check_shards(metadata: Any, folder: Path) -> None:
    """Every shard file `.metadata` names is there (DCP would fail deep inside a collective read)."""
    storage = getattr(metadata, "storage_data", None) or {}
    named = {getattr(info, "relative_path", None) for info in storage.values()} - {None}
    missing = sorted(name for name in named if not (folder / name).is_file())
    if missing:
        raise UserError(
            f"checkpoint {folder} is missing {len(missing)} of its {len(named)} shard file(s) "
            f"({', '.join(missing[:3])}): not a complete sharded checkpoint"
        )


def metadata_reader(folder: str | Path) -> Any:
    """A DCP storage reader of `folder` whose `.metadata` goes through the one unpickler."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta

    class MetadataReader(FileSystemReader):
        def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
            rank = kwargs.get("rank")
            name = METADATA_FILE if rank is None else f"__{rank}{METADATA_FILE}"
            with (Path(self.path) / name).open("rb") as file:
                metadata = read_metadata(file, folder)
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    reader = MetadataReader(folder)
    reader.read_metadata()  # first on its own: DCP would bury a refusal in a CheckpointException
    return reader


def _load_bytes_safely(planner: Any, read_item: Any, value: io.BytesIO) -> None:
    """A DCP planner's `load_bytes` with `weights_only=True`: non-tensor entries are plain data."""
    from bigtrain.torch_compat import set_element

    named = f"{planner.bigtrain_folder} (a shard's entry {read_item.dest_index.fqn})"
    obj = load_bytes(value, named, map_location=None)  # as DCP itself would place it
    if planner.flatten_state_dict:
        set_element(planner.original_state_dict, planner.mappings[read_item.dest_index.fqn], obj)
    else:
        planner.state_dict[read_item.dest_index.fqn] = obj


def _planner(folder: Path, *, empty: bool) -> Any:
    """DCP's load planner (`empty`: one that fills an empty dict) whose byte entries load safely."""
    from torch.distributed.checkpoint import DefaultLoadPlanner

    from bigtrain.torch_compat import empty_load_planner

    base = empty_load_planner() if empty else DefaultLoadPlanner
    planner = type("SafeLoadPlanner", (base,), {"load_bytes": _load_bytes_safely})()
    planner.bigtrain_folder = folder
    return planner


def _dcp_load(state: dict[str, Any], folder: Path, *, empty: bool = False) -> None:
    """`torch.distributed.checkpoint.load` through the safe reader and planner; refusals stay one line."""
    from torch.distributed.checkpoint import load
    from torch.distributed.checkpoint.api import CheckpointException

    from bigtrain.torch_compat import load_without_process_group

    reader, planner = metadata_reader(folder), _planner(folder, empty=empty)
    try:
        if empty:
            load_without_process_group(state, reader, planner)
        else:
            load(state, storage_reader=reader, planner=planner)
    except CheckpointException as err:
        for failure in err.failures.values():
            cause = failure[0] if isinstance(failure, tuple) else failure
            if isinstance(cause, UserError):
                raise cause from err
        raise


def read_sharded(folder: Path) -> dict[str, Any]:
    """A sharded checkpoint folder as one plain dict of full tensors (in this process's memory)."""
    state: dict[str, Any] = {}
    _dcp_load(state, Path(folder), empty=True)
    return state


def load_sharded(folder: Path) -> dict[str, Any]:
    """A sharded checkpoint as a Lightning checkpoint dict: state_dict, optimizer_states, loops, ..."""
    folder = Path(folder)
    if not is_sharded(folder):
        raise UserError(f"checkpoint {folder} has no .metadata: not a complete sharded checkpoint")
    check_sharded(folder)  # every shard present, before DCP reads any
    state = read_sharded(folder)
    meta = load_file(folder / META_FILE) if (folder / META_FILE).is_file() else {}
    optims = sorted((k for k in state if k.startswith("optimizer_")), key=lambda k: int(k.split("_")[1]))
    checkpoint = {**meta, "state_dict": state.get("state_dict", {})}
    checkpoint["optimizer_states"] = [state[k] for k in optims]
    return checkpoint


def load_sharded_into(
    folder: Path, module: Any, optimizers: Sequence[Any], *, strict: bool
) -> dict[str, Any]:
    """Load a sharded checkpoint into a sharded module and its optimizers (every rank calls this), the way
    Lightning's ModelParallelStrategy does; returns the rest of the checkpoint (`meta.pt`)."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
        set_optimizer_state_dict,
    )

    folder = Path(folder)
    module_state = {"state_dict": get_model_state_dict(module)}
    _dcp_load(module_state, folder)
    module.load_state_dict(module_state["state_dict"], strict=strict)
    for index, optimizer in enumerate(optimizers):
        key = f"optimizer_{index}"
        optimizer_state = {key: get_optimizer_state_dict(module, optimizer)}
        _dcp_load(optimizer_state, folder)
        options = StateDictOptions(cpu_offload=True)
        set_optimizer_state_dict(module, optimizer, optim_state_dict=optimizer_state[key], options=options)
    return load_file(folder / META_FILE, map_location=None)  # where Lightning would put it
