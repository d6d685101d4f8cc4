"""`bigtrain checkpoint export` never destroys a checkpoint: not its source, not another checkpoint, and no
folder; an existing plain file is replaced only with --force."""

from __future__ import annotations

import hashlib

import pytest
import torch

from bigtrain.checkpoints.export import export
from bigtrain.errors import UserError


@pytest.fixture
def ckpt(tmp_path):
    path = tmp_path / "epoch=0-step=4.ckpt"
    torch.save({"state_dict": {"net.w": torch.arange(6.0).reshape(2, 3)}, "global_step": 4}, path)
    return path


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_exporting_onto_its_own_source_is_one_line_and_keeps_it(ckpt, bigtrain_cmd):
    before = _digest(ckpt)
    result = bigtrain_cmd("checkpoint", "export", str(ckpt), str(ckpt))
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0, result.stderr
    assert "is the checkpoint being exported" in result.stderr
    assert _digest(ckpt) == before


def test_other_checkpoints_folders_and_plain_files(ckpt, tmp_path):
    other = tmp_path / "last-good.ckpt"
    other.write_bytes(b"precious")
    for target, message in [
        (other, "exists and is a checkpoint"),
        (tmp_path, "is a folder"),
    ]:
        with pytest.raises(UserError, match=message):
            export(ckpt, target, force=True)
    assert other.read_bytes() == b"precious" and not list(tmp_path.glob(".*.tmp"))

    plain = tmp_path / "weights.safetensors"
    plain.write_bytes(b"old")
    with pytest.raises(UserError, match="exists; give another name, or --force"):
        export(ckpt, plain)
    assert plain.read_bytes() == b"old"
    export(ckpt, plain, force=True)
    from safetensors.torch import load_file

    assert torch.equal(load_file(plain)["w"], torch.arange(6.0).reshape(2, 3))


def test_module_keeps_the_lightning_module_keys(ckpt, tmp_path, bigtrain_cmd):
    """`--module`: keys as in the LightningModule (`net.w`); without it, the network's own (`w`)."""
    for flags, key in (([], "w"), (["--module"], "net.w")):
        out = tmp_path / f"weights{len(flags)}.pt"
        result = bigtrain_cmd("checkpoint", "export", str(ckpt), str(out), *flags)
        assert result.returncode == 0, result.stderr
        weights = torch.load(out, weights_only=True)
        assert list(weights) == [key] and torch.equal(weights[key], torch.arange(6.0).reshape(2, 3))
