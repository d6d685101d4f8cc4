"""The one unpickler: torch.load with weights_only=True for checkpoint files, and DCP `.metadata` through
one allow-list (`MetadataUnpickler`). Every read of a checkpoint in bigtrain ends here; whatever cannot be
read safely ends as one UserError line. `bigtrain.checkpoints.load` and `.sharded` build on it.
"""

from __future__ import annotations

import builtins
import pickle
import re
import zipfile
from pathlib import Path
from typing import IO, Any

from bigtrain.errors import UserError

REFUSED = "re-save it with plain tensors"
METADATA_FILE = ".metadata"
"""DCP's pickled index of a sharded checkpoint; written last, so a folder without it is incomplete."""
META_FILE = "meta.pt"
"""Lightning's file of everything but weights and optimizer states, inside a sharded checkpoint."""

# Everything a torch.distributed.checkpoint `.metadata` pickle may name: DCP's metadata dataclasses, its
# storage-info record and a few torch and pathlib types. Exact names only: an allowed module is no licence for
# its other attributes (`filesystem.os.system` would otherwise resolve). Sets, slices and pure paths are not
# here: no checkpoint bigtrain's fsdp strategy writes names them (test_hostile_checkpoints.py shows it).
_DCP_METADATA = "torch.distributed.checkpoint.metadata"
_ALLOWED = {
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),  # maps a layout's name to torch.strided etc.
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("pathlib", "PosixPath"),
    ("pathlib", "WindowsPath"),
    ("collections", "OrderedDict"),
}


def load_file(path: str | Path, *, mmap: bool = False, map_location: str | None = "cpu") -> dict[str, Any]:
    """The checkpoint file at `path` as a dict of tensors and plain values; UserError if unsafe or unreadable.
    `mmap=True` maps the tensors instead of reading them (cheap when only checking it)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    checkpoint = load_bytes(path, path, mmap=mmap, map_location=map_location)
    if not isinstance(checkpoint, dict):
        raise UserError(f"checkpoint {path} holds a {type(checkpoint).__name__}, not a dict of tensors")
    return checkpoint


def load_bytes(
    source: Path | IO[bytes], named: str | Path, *, mmap: bool = False, map_location: str | None = "cpu"
) -> Any:
    """`torch.load(source, weights_only=True)`; a refusal or damage is a UserError naming `named`."""
    import torch

    is_zip = isinstance(source, Path) and _is_zip(source)
    try:
        return torch.load(source, map_location=map_location, weights_only=True, mmap=mmap and is_zip)
    except pickle.UnpicklingError as err:
        if isinstance(source, Path) and not is_zip and not _starts_like_pickle(source):
            raise unreadable_error(source, err) from err  # not a pickle at all: a stray file, not an attack
        raise unsafe_error(named, err) from err
    except (RuntimeError, EOFError, KeyError, ValueError, IndexError, TypeError, OSError) as err:
        raise unreadable_error(named, err) from err


def read_metadata(stream: IO[bytes], folder: str | Path) -> Any:
    """A sharded checkpoint's `.metadata`, unpickled through the allow-list; UserError naming `folder`."""
    try:
        return MetadataUnpickler(stream).load()
    except _Refused as err:
        raise unsafe_error(folder, err) from err
    except Exception as err:  # noqa: BLE001  (any other failure of a vetted pickle means a damaged file)
        raise unreadable_error(Path(folder) / METADATA_FILE, err) from err


def unsafe_error(path: str | Path | None, err: BaseException) -> UserError:
    """The one line for a checkpoint whose pickle names something beyond plain tensors and data."""
    message = str(err)
    which = f"checkpoint {path}" if path is not None else "a checkpoint"
    found = re.search(r"GLOBAL ([\w.]+)", message)
    if not found:
        op = re.search(r"Unsupported operand (\d+)", message)
        what = f"pickle opcode {op.group(1)}" if op else _last_line(message)
        return UserError(
            f"{which} is a pickle that plain tensors do not need ({what}); bigtrain refuses it — {REFUSED}"
        )
    name = found.group(1)
    if "." not in name and hasattr(builtins, name):
        name = f"builtins.{name}"  # torch names builtins without their module
    return UserError(f"{which} needs arbitrary code to load (GLOBAL {name}); bigtrain refuses it — {REFUSED}")


def unreadable_error(path: str | Path, err: BaseException) -> UserError:
    """The one line for a checkpoint that is truncated, corrupt or not a checkpoint at all."""
    size = Path(path).stat().st_size if Path(path).is_file() else 0
    if size == 0:
        detail = "the file is empty"
    elif "central directory" in str(err) or isinstance(err, (EOFError, zipfile.BadZipFile)):
        detail = "the file is truncated or corrupt"
    elif not _is_zip(Path(path)):
        detail = "not a PyTorch checkpoint"
    else:
        detail = f"{type(err).__name__}: {_last_line(str(err)) or 'unreadable'}"
    return UserError(f"checkpoint {path} cannot be read ({detail}, {size} bytes); use another checkpoint")


def is_refusal(err: BaseException) -> bool:
    """Whether `err` is torch.load's weights-only refusal (for translating errors raised inside Lightning)."""
    return isinstance(err, pickle.UnpicklingError)


class _Refused(pickle.UnpicklingError):
    pass


class MetadataUnpickler(pickle.Unpickler):
    """The one unpickler of DCP `.metadata`: it builds DCP's metadata classes and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        """The class or constant `module.name` if the allow-list admits it; else refuse the pickle."""
        if "." not in name:
            if (module, name) in _ALLOWED:
                return super().find_class(module, name)
            if module == _DCP_METADATA:
                found = super().find_class(module, name)
                if isinstance(found, type) and found.__module__ == _DCP_METADATA:
                    return found  # a dataclass or enum: building one runs no code of the file's choosing
            if module == "torch":
                found = super().find_class(module, name)
                if _is_torch_constant(found):
                    return found  # a dtype, layout or memory format
        raise _Refused(f"GLOBAL {module}.{name}")


def _is_torch_constant(value: Any) -> bool:
    import torch

    return isinstance(value, (torch.dtype, torch.layout, torch.memory_format))


def _is_zip(path: Path) -> bool:
    # torch.load can map only the zip format; a legacy or damaged file is read normally (and then refused).
    return path.is_file() and zipfile.is_zipfile(path)


def _starts_like_pickle(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(1) == b"\x80"  # the PROTO opcode every pickle since protocol 2 starts with


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
