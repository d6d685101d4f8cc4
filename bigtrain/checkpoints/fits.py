"""Does a checkpoint fit the model it is loaded into? One line when it does not (another family, preset or
size), instead of torch's page of missing and unexpected keys."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bigtrain.errors import UserError


def shapes(state_dict: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """{name: shape} of the tensors in a state dict (a DTensor gives its global shape)."""
    return {name: tuple(value.shape) for name, value in state_dict.items() if hasattr(value, "shape")}


def check_fits(saved: Mapping[str, tuple[int, ...]], model: Any, *, strict: bool = True) -> None:
    """UserError unless the checkpoint's tensors (`saved`: name -> shape) load into `model`'s state dict."""
    wanted = shapes(model.state_dict())
    extra = sorted(set(saved) - set(wanted))
    missing = sorted(set(wanted) - set(saved)) if strict else []
    what = f"the checkpoint does not fit this {type(model).__name__}"
    if extra or missing:
        parts = [f"{len(extra)} of its tensors are not in the model (e.g. {extra[0]})"] if extra else []
        parts += [f"it lacks {len(missing)} the model needs (e.g. {missing[0]})"] if missing else []
        raise UserError(
            f"{what}: {'; '.join(parts)}; was it saved by another model family or preset? "
            f"(give --ckpt_path a checkpoint of this recipe)"
        )
    for name in sorted(set(saved) & set(wanted)):
        if saved[name] != wanted[name]:
            raise UserError(
                f"{what}: {name} is {list(saved[name])} in the checkpoint but {list(wanted[name])} here; "
                f"was it saved with other model.net settings? (give --ckpt_path a checkpoint of this recipe)"
            )


def saved_shapes(path: Any) -> dict[str, tuple[int, ...]]:
    """{name: shape} of the model tensors in a checkpoint file or sharded folder (read safely, not loaded)."""
    from pathlib import Path

    from bigtrain.checkpoints.sharded import is_sharded
    from bigtrain.checkpoints.unpickle import load_file, read_metadata

    path = Path(path)
    if not is_sharded(path):
        return shapes(load_file(path, mmap=True).get("state_dict", {}))
    with (path / ".metadata").open("rb") as f:
        entries = read_metadata(f, path).state_dict_metadata
    prefix = "state_dict."
    return {
        name[len(prefix) :]: tuple(getattr(entry, "size", ()))
        for name, entry in entries.items()
        if name.startswith(prefix) and hasattr(entry, "size")
    }
