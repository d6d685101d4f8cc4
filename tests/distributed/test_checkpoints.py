"""FSDP sharded checkpoints: save at an epoch boundary, resume on 2, 4 and (exported) 1 rank, export, reject.

One 2-rank launch (gloo, CPU) trains a tiny GPT uninterrupted for 9 steps (U), and separately for one
4-step epoch (S, which leaves a sharded checkpoint: a folder of `.distcp` shards), resumes S on 2 ranks to
step 9, trains a tiny ResNet for a sharded checkpoint with BatchNorm buffers, and repeats S with
`save_distributed_checkpoint false` (F: one full file). The resumed losses must match U's steps 5 to 9
within 1e-5 (relative), and the final weights U's within 1e-5.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
import torch

from bigtrain.checkpoints.export import export
from bigtrain.checkpoints.load import load_checkpoint
from bigtrain.cli import main as bigtrain_main

EPOCH = 4
"""Steps per epoch: 32 windows per epoch, 8 per global batch."""
STEPS = 9
GPT = [
    "--recipe", "transformer/builtin-char", "--data.train_samples", "32", "--data.batch_size", "8",
    "--data.block_size", "32", "--model.sample_tokens", "0",
    # The schedule is fixed in steps, so a run stopped after one epoch decays its learning rate like one
    # that goes on (the default decays over the run's own length).
    "--model.optim.warmup_steps", "2", "--model.optim.decay_steps", "50",
]  # fmt: skip
CNN = ["--recipe", "cnn/glyphs", "--data.num_samples", "40", "--data.batch_size", "16"]
"""32 training images: one epoch is 2 steps."""
QUIET = [
    "--trainer.accelerator", "cpu", "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0",
    "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
    "--trainer.logger", "false", "--trainer.callbacks+=recorder.Record",
]  # fmt: skip
TOLERANCE = 1e-5
GATHERED = "save_distributed_checkpoint"
WEIGHT_ATOL = 1e-5
"""Final weights of a resumed run against the uninterrupted one (the equivalence tests' bound)."""


def _fit(base: list[str], run_dir: Path, strategy: str, devices: int, steps: int, *extra: str) -> list[str]:
    return [
        *base, *QUIET, "--trainer.strategy", strategy, "--trainer.devices", str(devices),
        "--trainer.max_steps", str(steps), "--run_dir", str(run_dir), *extra,
    ]  # fmt: skip


def _sharded(run: Path) -> Path:
    return run / "checkpoints" / f"epoch=0-step={EPOCH}.ckpt"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """The 2-rank launch: U (uninterrupted), S (one epoch, sharded checkpoint) and a CNN's checkpoint."""
    from dist_helpers import launch, wait

    root = tmp_path_factory.mktemp("checkpoints")
    spec = {
        "U": _fit(GPT, root / "U", "fsdp", 2, STEPS),
        "S": _fit(GPT, root / "S", "fsdp", 2, EPOCH),
        "C": _fit(CNN, root / "C", "fsdp", 2, 2),
        "F": _fit(GPT, root / "F", "fsdp", 2, EPOCH, f"--trainer.strategy.{GATHERED}", "false"),
    }
    wait(launch(spec, 2, root), root, 2)
    return root


def _resumed_diff(runs: Path, name: str) -> float:
    """The resumed run's largest relative loss difference to U's; its final weights must be U's too."""
    from dist_helpers import max_weight_diff, read_losses, read_weights

    full = read_losses(runs / "U")["train/loss"]
    resumed = read_losses(runs / name)["train/loss"]
    assert len(full) == STEPS and len(resumed) == STEPS - EPOCH, (len(full), len(resumed))
    diff = max(abs(a - b) / abs(a) for a, b in zip(full[EPOCH:], resumed, strict=True))
    weights = max_weight_diff(read_weights(runs / "U"), read_weights(runs / name))
    print(f"{name}: resumed losses {resumed}, max relative difference to the uninterrupted run {diff:.2e}, ")
    print(f"{name}: max final weight difference {weights:.2e}")
    assert weights <= WEIGHT_ATOL, weights
    return diff


@pytest.mark.distributed
@pytest.mark.slow
def test_sharded_checkpoint_is_a_folder_of_shards(runs):
    folder = _sharded(runs / "S")
    assert folder.is_dir() and (folder / ".metadata").is_file()
    assert len(list(folder.glob("*.distcp"))) == 2


@pytest.mark.distributed
@pytest.mark.slow
def test_save_distributed_checkpoint_false_writes_one_full_file(runs, tmp_path):
    """F is S with `save_distributed_checkpoint false`: one file gathered on rank 0, S's weights unsharded."""
    single = _sharded(runs / "F")
    assert single.is_file()
    saved = torch.load(single, weights_only=True, map_location="cpu")
    assert saved["global_step"] == EPOCH
    full = export(_sharded(runs / "S"), tmp_path / "S-full.ckpt", full=True)
    expected = torch.load(full, weights_only=True, map_location="cpu")["state_dict"]
    assert saved["state_dict"].keys() == expected.keys()
    for key, tensor in expected.items():
        assert torch.equal(saved["state_dict"][key], tensor), key


@pytest.mark.distributed
@pytest.mark.slow
def test_auto_skips_a_sharded_checkpoint_missing_a_shard(runs, tmp_path):
    """U keeps its two newest sharded checkpoints (steps 8 and 9); without one of step 9's shards, `auto`
    takes step 8's."""
    from bigtrain.checkpoints.discover import find_resume_checkpoint
    from bigtrain.checkpoints.manifest import manifest_path

    shutil.copytree(runs / "U" / "checkpoints", tmp_path / "checkpoints", symlinks=True)
    folder = tmp_path / "checkpoints"
    newest, previous = folder / "epoch=2-step=9.ckpt", folder / "epoch=1-step=8.ckpt"
    assert manifest_path(newest).is_file() and len(list(newest.glob("*.distcp"))) == 2
    assert find_resume_checkpoint(tmp_path) == newest
    (newest / "__1_0.distcp").unlink()
    warnings: list[str] = []
    assert find_resume_checkpoint(tmp_path, warn=warnings.append) == previous
    assert warnings == [f"skipping checkpoint {newest}: file __1_0.distcp is missing"]


def _resume(runs: Path, name: str, strategy: str, ranks: int, ckpt: Path) -> float:
    from dist_helpers import launch, wait

    work = runs / f"launch-{name}"
    spec = {name: _fit(GPT, runs / name, strategy, ranks, STEPS, "--ckpt_path", str(ckpt))}
    wait(launch(spec, ranks, work), work, ranks)
    return _resumed_diff(runs, name)


@pytest.mark.distributed
@pytest.mark.slow
def test_sharded_checkpoint_resumes_on_two_ranks(runs):
    assert _resume(runs, "R2", "fsdp", 2, _sharded(runs / "S")) <= TOLERANCE


@pytest.mark.distributed
@pytest.mark.slow
def test_exported_checkpoint_resumes_on_one_rank(runs):
    from dist_helpers import launch, wait

    full = export(runs / "S" / "checkpoints" / "last.ckpt", runs / "full.ckpt", full=True)
    work = runs / "one"
    wait(
        launch({"R1": _fit(GPT, runs / "R1", "single", 1, STEPS, "--ckpt_path", str(full))}, 1, work), work, 1
    )
    assert _resumed_diff(runs, "R1") <= TOLERANCE


@pytest.mark.distributed
@pytest.mark.slow
def test_sharded_checkpoint_resumes_on_four_ranks(runs):
    """DCP reshards on load: a checkpoint of 2 ranks resumes on 4 (the global batch is the same)."""
    assert _resume(runs, "R4", "fsdp", 4, _sharded(runs / "S")) <= TOLERANCE


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("run", ["S", "C"])
def test_export_loads_strictly_into_the_single_device_network(runs, tmp_path, run):
    from dist_helpers import read_weights
    from safetensors.torch import load_file

    from bigtrain.models.cnn import ResNet, ResNetConfig
    from bigtrain.models.transformer.model import GPT as Net
    from bigtrain.models.transformer.model import GPTConfig

    final = read_weights(runs / run)  # the trained weights, gathered by the recorder at the end of the fit
    plain = export(runs / run, tmp_path / "net.pt")  # a run directory: its newest checkpoint
    safe = export(runs / run, tmp_path / "net.safetensors")
    hparams = load_checkpoint(runs / run / "checkpoints" / "last.ckpt")["hyper_parameters"]["net"]
    for weights in (torch.load(plain, weights_only=True), load_file(str(safe))):
        net = Net(GPTConfig(**hparams)) if run == "S" else ResNet(ResNetConfig(**hparams))
        net.load_state_dict(weights, strict=True)
        for key, value in net.state_dict().items():
            assert torch.equal(value, final[f"net.{key}"]), key


def _error_line(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        bigtrain_main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


@pytest.mark.distributed
@pytest.mark.slow
def test_checkpoint_of_another_model_is_one_line_exit_2(runs, tmp_path, capsys):
    ckpt = str(runs / "S" / "checkpoints" / "last.ckpt")
    strict = ["checkpoint", "export", ckpt, str(tmp_path / "x.pt"), "--strict", "--config"]
    err = _error_line(capsys, [*strict, "rnn/builtin-char"])
    assert "does not match the model of rnn/builtin-char" in err and "missing from the checkpoint" in err
    wider = tmp_path / "wider.yaml"
    wider.write_text((runs / "S" / "config.yaml").read_text().replace("preset: tiny", "preset: baby"))
    err = _error_line(capsys, [*strict, str(wider)])
    assert "key 'net.wte.weight' has shape [" in err and "in the model" in err
    assert not (tmp_path / "x.pt").exists()
    # The run's own config (found beside the checkpoint) matches.
    assert export(ckpt, tmp_path / "ok.pt", strict=True).is_file()


@pytest.mark.distributed
@pytest.mark.slow
def test_export_errors_are_one_line(runs, tmp_path, capsys):
    err = _error_line(capsys, ["checkpoint", "export", str(tmp_path / "nothing"), str(tmp_path / "x.pt")])
    assert "does not exist" in err
    empty = tmp_path / "empty-run"
    empty.mkdir()
    err = _error_line(capsys, ["checkpoint", "export", str(empty), str(tmp_path / "x.pt")])
    assert "neither a sharded checkpoint" in err
    broken = tmp_path / "broken.ckpt"
    shutil.copytree(_sharded(runs / "S"), broken)
    # Pickles that call os.system (which would write a marker file) by name, and through an allowed module's
    # attribute; the control shows each one runs under plain pickle.
    for name, payload in [("os.system", _os_system), ("metadata.os.system", _dotted_os_system)]:
        control = tmp_path / f"control-{name}"
        pickle.loads(payload(control))
        assert control.is_file(), name
        marker = tmp_path / f"marker-{name}"
        (broken / ".metadata").write_bytes(payload(marker))
        err = _error_line(capsys, ["checkpoint", "export", str(broken), str(tmp_path / "x.pt")])
        assert err.startswith(
            f"bigtrain: error: checkpoint {broken} needs arbitrary code to load (GLOBAL "
        ), err
        assert "os.system" in err and not marker.exists()


def _os_system(marker: Path) -> bytes:
    """A pickle that calls os.system("touch MARKER"), naming it with protocol 0's GLOBAL opcode."""
    return f"cos\nsystem\n(Vtouch '{marker}'\ntR.".encode()


def _dotted_os_system(marker: Path) -> bytes:
    """The same call, reaching os.system as an attribute of DCP's metadata module (protocol 4)."""
    module, name, command = (
        b"torch.distributed.checkpoint.metadata",
        b"os.system",
        f"touch '{marker}'".encode(),
    )
    return (
        b"\x80\x04\x8c" + bytes([len(module)]) + module + b"\x8c" + bytes([len(name)]) + name + b"\x93"
        b"\x8c" + bytes([len(command)]) + command + b"\x85R."
    )


def test_shared_and_strided_tensors_are_written_as_standalone_copies(tmp_path):
    """Tied weights (one storage, two keys) and views: safetensors refuses them unless each owns memory."""
    from safetensors.torch import load_file, save_file

    from bigtrain.checkpoints.export import standalone

    embedding = torch.randn(10, 4)
    tied = {"wte.weight": embedding, "head.weight": embedding, "half": embedding[:5], "cols": embedding[:, 1]}
    with pytest.raises(RuntimeError):
        save_file(tied, str(tmp_path / "refused.safetensors"))
    out = standalone(tied)
    save_file(out, str(tmp_path / "ok.safetensors"))
    loaded = load_file(str(tmp_path / "ok.safetensors"))
    assert all(torch.equal(loaded[k], v) for k, v in tied.items())
