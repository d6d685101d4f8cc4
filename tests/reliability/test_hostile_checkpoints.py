"""A hostile sharded checkpoint is refused the same way by every command that reads checkpoints.

The checkpoint is real: a 1-device fsdp run of the glyphs CNN writes a folder of DCP shards. Its `.metadata`
is then replaced by a pickle whose GLOBAL (`builtins.exec`) would write a marker file; torch's own DCP reader
runs it (the control test). `fit --ckpt_path DIR`, `fit --ckpt_path auto`, `validate --ckpt_path DIR` and
`checkpoint export DIR` must each end with the same one line, exit status 2, and never run it.
"""

from __future__ import annotations

import io
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bigtrain.checkpoints.load import REFUSED, MetadataUnpickler, check_checkpoint
from bigtrain.checkpoints.manifest import build_manifest, write_manifest
from bigtrain.checkpoints.sharded import check_sharded
from bigtrain.errors import UserError
from tests.conftest import run_bigtrain

GLYPHS = ["--recipe", "cnn/glyphs", "--data.num_samples", "40", "--data.batch_size", "16"]
QUIET = [
    "--trainer.accelerator", "cpu", "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0",
    "--trainer.enable_progress_bar", "false", "--trainer.logger", "false",
]  # fmt: skip
CHECKPOINT = "epoch=0-step=2.ckpt"


class Payload:
    """Unpickling this calls `exec`, which writes the marker file: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('the payload ran')",))


@pytest.fixture(scope="module")
def real_sharded(tmp_path_factory) -> Path:
    """A sharded checkpoint folder written by bigtrain's fsdp strategy (one device)."""
    run = tmp_path_factory.mktemp("fsdp") / "run"
    args = [*GLYPHS, *QUIET, "--trainer.strategy", "fsdp", "--trainer.devices", "1"]
    out = run_bigtrain("fit", *args, "--trainer.max_steps", "2", "--run_dir", str(run))
    assert out.returncode == 0, out.stderr[-3000:]
    folder = run / "checkpoints" / CHECKPOINT
    assert (folder / ".metadata").is_file() and list(folder.glob("*.distcp"))
    return folder


def _hostile_run(real_sharded: Path, run: Path) -> tuple[Path, Path]:
    """A run directory whose newest checkpoint (with a matching manifest) has a hostile `.metadata`."""
    folder = run / "checkpoints" / CHECKPOINT
    shutil.copytree(real_sharded, folder)
    marker = run.parent / "MARKER"
    (folder / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
    write_manifest(folder, build_manifest(folder, step=2, epoch=0))
    return folder, marker


def test_a_real_fsdp_checkpoint_needs_only_the_strict_allow_list(real_sharded):
    """The decision behind the one allow-list: the stricter one, not widened. export's old list also admitted
    builtins.set/frozenset/slice and pathlib.PurePosixPath/PureWindowsPath; no checkpoint that bigtrain's fsdp
    strategy writes names them, so they stay refused."""
    check_sharded(real_sharded)
    check_checkpoint(real_sharded)
    for module, name in [
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "slice"),
        ("pathlib", "PurePosixPath"),
        ("pathlib", "PureWindowsPath"),
    ]:
        with pytest.raises(pickle.UnpicklingError, match=f"GLOBAL {module}.{name}"):
            MetadataUnpickler(io.BytesIO(_global(module, name))).load()


def test_the_hostile_metadata_is_live(real_sharded, tmp_path):
    """Control: torch's own DCP reader runs the payload, so its absence below means something."""
    folder, marker = _hostile_run(real_sharded, tmp_path / "run")
    code = (
        "import sys, torch.distributed.checkpoint as dcp; dcp.FileSystemReader(sys.argv[1]).read_metadata()"
    )
    subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True)
    assert marker.read_text() == "the payload ran"


def test_every_path_that_reads_checkpoints_refuses_it_in_one_line(real_sharded, tmp_path):
    run = tmp_path / "run"
    folder, marker = _hostile_run(real_sharded, run)
    fit = ["fit", *GLYPHS, *QUIET, "--trainer.strategy", "fsdp", "--trainer.devices", "1"]
    validate = ["validate", *GLYPHS, *QUIET]
    commands = {
        "fit DIR": [*fit, "--run_dir", str(tmp_path / "other"), "--ckpt_path", str(folder)],
        "fit auto": [*fit, "--run_dir", str(run), "--ckpt_path", "auto"],
        "validate DIR": [*validate, "--run_dir", str(tmp_path / "val"), "--ckpt_path", str(folder)],
        "export DIR": ["checkpoint", "export", str(folder), str(tmp_path / "out.pt")],
    }  # fmt: skip
    expected = (
        f"bigtrain: error: checkpoint {folder} needs arbitrary code to load (GLOBAL builtins.exec); "
        "bigtrain refuses it — re-save it with plain tensors"
    )
    for what, argv in commands.items():
        out = run_bigtrain(*argv)
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        assert (out.returncode, lines) == (2, [expected]), (what, out.stderr[-3000:])
        assert not marker.exists(), what
    assert not (tmp_path / "out.pt").exists()


def test_the_export_api_refuses_it_too(real_sharded, tmp_path):
    from bigtrain.checkpoints.export import export

    folder, marker = _hostile_run(real_sharded, tmp_path / "run")
    for source in (folder, tmp_path / "run"):  # the folder, or the run directory that holds it
        with pytest.raises(UserError, match=r"needs arbitrary code to load \(GLOBAL builtins.exec\)"):
            export(source, tmp_path / "out.pt")
    assert not marker.exists()


def _global(module: str, name: str) -> bytes:
    m, n = module.encode(), name.encode()
    return b"\x80\x04\x8c" + bytes([len(m)]) + m + b"\x8c" + bytes([len(n)]) + n + b"\x93."


@pytest.mark.parametrize("case", ["clean", "metadata", "entry", "entry-lightning"])
def test_the_fsdp_strategy_resumes_only_through_the_safe_reader(tmp_path, case):
    """Time of check, time of use: when the fsdp strategy resumes (`fit --ckpt_path`), DCP would read the
    folder again with plain pickle. bigtrain's strategy reads `.metadata` through the one unpickler and the
    shards' non-tensor entries with weights_only, so a file put in place after it was vetted is refused;
    Lightning's own loader runs the same entry's payload (the control)."""
    probe = Path(__file__).with_name("sharded_resume_probe.py")
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, str(probe), str(tmp_path), case],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result, folder = out.stdout.strip().splitlines()[-1], tmp_path / "ckpt"
    refusal = "needs arbitrary code to load (GLOBAL builtins.exec); bigtrain refuses it — " + REFUSED
    expected = {
        "clean": "loaded 0.0 5",
        "metadata": f"refused checkpoint {folder} {refusal}",
        "entry": f"refused checkpoint {folder} (a shard's entry optimizer_0.param_groups.0.lr) {refusal}",
        "entry-lightning": "loaded 0.0 5",
    }[case]
    assert result == expected
    assert (tmp_path / "MARKER").exists() == (case == "entry-lightning")
