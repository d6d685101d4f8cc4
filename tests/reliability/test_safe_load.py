"""Safe loading: a checkpoint whose pickle would run code is refused without running it; a damaged one is
reported in one line."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bigtrain.checkpoints.load import check_checkpoint, load_checkpoint
from bigtrain.checkpoints.sharded import check_sharded
from bigtrain.errors import UserError


class Payload:
    """Unpickling this calls `exec`, which writes the marker file: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('the payload ran')",))


def _evil(path: Path, marker: Path, *, zip_format: bool = True) -> Path:
    checkpoint = {"state_dict": {"w": torch.zeros(3)}, "global_step": 1, "extra": Payload(marker)}
    torch.save(checkpoint, path, _use_new_zipfile_serialization=zip_format)
    return path


def test_the_payload_is_live(tmp_path):
    """Control: an unsafe load of the same file does run the payload, so its absence below means something."""
    marker = tmp_path / "MARKER"
    path = _evil(tmp_path / "evil.ckpt", marker)
    code = f"import torch; torch.load({str(path)!r}, weights_only=False)"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    assert marker.read_text() == "the payload ran"


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_load_checkpoint_refuses_code_without_running_it(tmp_path, zip_format):
    marker = tmp_path / "MARKER"
    path = _evil(tmp_path / "evil.ckpt", marker, zip_format=zip_format)
    with pytest.raises(UserError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert message == (
        f"checkpoint {path} needs arbitrary code to load (GLOBAL builtins.exec); bigtrain refuses it — "
        "re-save it with plain tensors"
    )
    with pytest.raises(UserError):
        check_checkpoint(path)
    assert not marker.exists()


def test_plain_checkpoint_loads(tmp_path):
    path = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.arange(4.0)}, "global_step": 7, "name": "x"}, path)
    loaded = load_checkpoint(path)
    assert loaded["global_step"] == 7 and torch.equal(loaded["state_dict"]["w"], torch.arange(4.0))
    check_checkpoint(path)


def _damaged(tmp_path: Path, kind: str) -> Path:
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, good)
    path = tmp_path / f"{kind}.ckpt"
    data = good.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "text": b"not a checkpoint\n"}[kind])
    return path


@pytest.mark.parametrize(
    ("kind", "detail"),
    [
        ("truncated", "truncated or corrupt"),
        ("empty", "the file is empty"),
        ("text", "not a PyTorch checkpoint"),
    ],
)
def test_damaged_checkpoint_is_one_line(tmp_path, kind, detail):
    path = _damaged(tmp_path, kind)
    with pytest.raises(UserError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert message.startswith(f"checkpoint {path} cannot be read (") and "\n" not in message
    assert detail in message
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.ckpt")


def test_sharded_checkpoint_metadata_is_vetted(tmp_path):
    import torch.distributed.checkpoint as dcp

    folder = tmp_path / "sharded.ckpt"
    state = {"w": torch.zeros(3, 4), "b": torch.ones(2, dtype=torch.bfloat16), "step": 3}
    with pytest.warns(UserWarning):  # DCP notes that it saves from a single process
        dcp.save(state, checkpoint_id=folder)
    check_sharded(folder)
    check_checkpoint(folder)

    marker = tmp_path / "MARKER"
    (folder / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(UserError, match=r"needs arbitrary code to load \(GLOBAL builtins.exec\)"):
        check_sharded(folder)
    assert not marker.exists()
    # A name reached through an allowed module is refused too (the lookup alone would find os.system).
    (folder / ".metadata").write_bytes(_stack_global("pathlib", "os.system"))
    with pytest.raises(UserError, match="GLOBAL pathlib.os.system"):
        check_sharded(folder)
    (folder / ".metadata").write_bytes(b"\x80\x04\x95")
    with pytest.raises(UserError, match="cannot be read"):
        check_sharded(folder)
    (folder / ".metadata").unlink()
    with pytest.raises(UserError, match="no .metadata"):
        check_checkpoint(folder)


def _stack_global(module: str, name: str) -> bytes:
    """A protocol-4 pickle that looks up module.name and calls it with no arguments."""
    m, n = module.encode(), name.encode()
    return b"\x80\x04\x8c" + bytes([len(m)]) + m + b"\x8c" + bytes([len(n)]) + n + b"\x93)R."


def test_lightning_refusal_becomes_one_line():
    """A refusal raised inside Lightning (e.g. resuming with `--ckpt_path auto`) is translated by the CLI."""
    from bigtrain.lightning_errors import as_user_error

    try:
        torch.load(_evil_bytes(), weights_only=True)
    except pickle.UnpicklingError as err:
        translated = as_user_error(err)
    assert isinstance(translated, UserError)
    assert str(translated).startswith("a checkpoint needs arbitrary code to load (GLOBAL builtins.exec)")


def _evil_bytes():
    import io

    buffer = io.BytesIO()
    torch.save({"x": Payload(Path("never-written"))}, buffer)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize("kind", ["evil", "truncated", "missing"])
def test_fit_refuses_bad_ckpt_path_in_one_line(bigtrain_cmd, tmp_path, kind):
    marker = tmp_path / "MARKER"
    path = {
        "evil": lambda: _evil(tmp_path / "evil.ckpt", marker),
        "truncated": lambda: _damaged(tmp_path, "truncated"),
        "missing": lambda: tmp_path / "missing.ckpt",
    }[kind]()
    out = bigtrain_cmd(
        "fit", "--recipe", "cnn/glyphs", "--run_dir", str(tmp_path / "run"), "--ckpt_path", str(path)
    )
    assert out.returncode == 2, out.stderr[-3000:]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"bigtrain: error: checkpoint {path} "), out.stderr
    assert not marker.exists()


# The exact one-line messages of the unpickler, for each way a file can fail (mutation testing showed that
# substring checks let a garbled message through).


def _unreadable(path: Path, detail: str) -> str:
    size = path.stat().st_size if path.is_file() else 0
    return f"checkpoint {path} cannot be read ({detail}, {size} bytes); use another checkpoint"


def test_unreadable_messages_are_exact(tmp_path):
    from bigtrain.checkpoints.unpickle import load_file, unreadable_error

    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    cut = tmp_path / "cut.ckpt"
    torch.save({"w": torch.zeros(100)}, cut)
    cut.write_bytes(cut.read_bytes()[:300])
    for path, detail in [
        (empty, "the file is empty"),
        (text, "not a PyTorch checkpoint"),
        (cut, "the file is truncated or corrupt"),
    ]:
        with pytest.raises(UserError) as caught:
            load_file(path)
        assert str(caught.value) == _unreadable(path, detail)
    gone = tmp_path / "gone.ckpt"
    assert str(unreadable_error(gone, ValueError("x"))) == _unreadable(gone, "the file is empty")
    whole = tmp_path / "whole.ckpt"
    torch.save({"w": torch.zeros(1)}, whole)
    last = unreadable_error(whole, ValueError("first\n second \n  third  \n"))
    assert str(last) == _unreadable(whole, "ValueError: third")
    assert str(unreadable_error(whole, ValueError(""))) == _unreadable(whole, "ValueError: unreadable")


def test_a_checkpoint_that_is_not_a_dict_is_named(tmp_path):
    from bigtrain.checkpoints.unpickle import load_file

    path = tmp_path / "list.ckpt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(UserError) as caught:
        load_file(path)
    assert str(caught.value) == f"checkpoint {path} holds a list, not a dict of tensors"


REFUSAL = "bigtrain refuses it — re-save it with plain tensors"


def test_unsafe_messages_name_the_global_or_the_opcode():
    from bigtrain.checkpoints.unpickle import unsafe_error

    def says(path, message: str) -> str:
        return str(unsafe_error(path, pickle.UnpicklingError(message)))

    assert says("c.ckpt", "Weights only load failed. GLOBAL eval was not an allowed global") == (
        f"checkpoint c.ckpt needs arbitrary code to load (GLOBAL builtins.eval); {REFUSAL}"
    )
    assert says("c.ckpt", "GLOBAL os.system is not allowed") == (
        f"checkpoint c.ckpt needs arbitrary code to load (GLOBAL os.system); {REFUSAL}"
    )
    assert says(None, "GLOBAL not_a_builtin_name is not allowed") == (
        f"a checkpoint needs arbitrary code to load (GLOBAL not_a_builtin_name); {REFUSAL}"
    )
    assert says("c.ckpt", "Weights only load failed.\nUnsupported operand 149 in the pickle") == (
        f"checkpoint c.ckpt is a pickle that plain tensors do not need (pickle opcode 149); {REFUSAL}"
    )
    assert says("c.ckpt", "Weights only load failed.\n  first\n  the reason  \n") == (
        f"checkpoint c.ckpt is a pickle that plain tensors do not need (the reason); {REFUSAL}"
    )


def test_metadata_refuses_a_module_reached_through_dcps_namespace(tmp_path):
    """`os`, imported by DCP's metadata module, is not one of its classes: refused, not merely unreadable."""
    import io

    from bigtrain.checkpoints.unpickle import read_metadata

    hostile = b"ctorch.distributed.checkpoint.metadata\nos\n."  # GLOBAL then STOP, protocol 0
    with pytest.raises(UserError) as caught:
        read_metadata(io.BytesIO(hostile), tmp_path)
    expected = f"checkpoint {tmp_path} needs arbitrary code to load "
    assert str(caught.value) == f"{expected}(GLOBAL torch.distributed.checkpoint.metadata.os); {REFUSAL}"


def test_a_truncated_metadata_file_is_named_as_truncated(tmp_path):
    from bigtrain.checkpoints.unpickle import read_metadata

    metadata = tmp_path / ".metadata"
    metadata.write_bytes(b"\x80\x02")  # a pickle's first opcode, then nothing: the write stopped there
    with pytest.raises(UserError) as caught, metadata.open("rb") as stream:
        read_metadata(stream, tmp_path)
    assert str(caught.value) == _unreadable(metadata, "the file is truncated or corrupt")
