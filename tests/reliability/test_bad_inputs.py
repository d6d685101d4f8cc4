"""Bad input through the real `bigtrain` command: exit status 2 and one stderr line naming the culprit.

Every case is a separate `bigtrain` process. They start together (as many at a time as there are CPU cores)
when the first case's test asks for its outcome, so the table costs about its total CPU time divided by the
cores; every case fails early, before any training.
"""

from __future__ import annotations

import gzip
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import run_bigtrain

ROOT = Path(__file__).resolve().parents[2]
GLYPHS = ("fit", "--recipe", "cnn/glyphs")
DIGITS = ("fit", "--recipe", "cnn/digits")
TEXT = ("fit", "--recipe", "transformer/builtin-char")
# Placed before a case's own arguments: if a case were accepted, it would stop after two steps.
SAFETY = (
    "--trainer.max_steps",
    "2",
    "--trainer.limit_val_batches",
    "1",
    "--trainer.enable_progress_bar",
    "false",
)


@dataclass(frozen=True)
class Case:
    """`bigtrain <base> <SAFETY> <args>` fails in one line containing `named`; `{d}`: the data folder."""

    id: str
    base: tuple[str, ...]
    args: tuple[str, ...]
    named: str
    run_dir: str = ""
    """The case's own --run_dir (`{d}` allowed); empty: a fresh one per case."""

    def argv(self, data: Path, run_dir: Path) -> list[str]:  # noqa: D102
        base = [a.format(d=data) for a in self.base]
        safety = list(SAFETY) if base and base[0] == "fit" else []
        own = ["--run_dir", self.run_dir.format(d=data) if self.run_dir else str(run_dir)]
        own = own if base[0] in ("fit", "validate") else []
        return [*base, *safety, *(a.format(d=data) for a in self.args), *own]


def _yaml(name: str) -> tuple[str, ...]:
    return ("fit", "--config", f"{{d}}/{name}.yaml")


CASES = [
    # recipe keys: typos at several depths, on the command line and in a recipe file
    Case("cli-trainer-key", GLYPHS, ("--trainer.max_stepz", "3"), "'trainer.max_steps'"),
    Case("cli-net-key", GLYPHS, ("--model.net.widht", "3"), "'model.net.width'"),
    Case("yaml-top-key", _yaml("top-typo"), (), "trainr"),
    Case("yaml-trainer-key", _yaml("trainer-typo"), (), "'trainer.max_epochs'"),
    Case("yaml-net-key", _yaml("net-typo"), (), "'model.net.widht'"),
    Case("yaml-syntax", _yaml("broken"), (), "broken.yaml is not valid YAML"),
    # wrong types
    Case("type-batch", GLYPHS, ("--data.batch_size", "many"), "'data.batch_size'"),
    Case("yaml-type-epochs", _yaml("epochs-type"), (), "'trainer.max_epochs'"),
    # bad values
    Case("negative-lr", GLYPHS, ("--model.optim.lr", "-0.1"), "model.optim.lr"),
    Case("batch-zero", GLYPHS, ("--data.batch_size", "0"), "data.batch_size"),
    Case("val-fraction", GLYPHS, ("--data.val_fraction", "1.5"), "data.val_fraction"),
    Case("unknown-preset", GLYPHS, ("--model.net.preset", "hugenet"), "hugenet"),
    Case("unknown-source", GLYPHS, ("--data.source", "nosuch"), "'data.source'"),
    Case("unknown-tokenizer", TEXT, ("--data.tokenizer", "wordpiece"), "'data.tokenizer'"),
    Case("negative-epochs", GLYPHS, ("--trainer.max_epochs", "-5"), "max_epochs"),
    Case("nonfinite-mode", GLYPHS, ("--nonfinite.mode", "sometimes"), "'nonfinite.mode'"),
    # paths
    Case("unknown-recipe", ("fit", "--recipe", "cnn/glyphz"), (), "cnn/glyphs"),
    Case("missing-config", ("fit", "--config", "no/such/recipe.yaml"), (), "no/such/recipe.yaml"),
    Case("missing-data-path", DIGITS, ("--data.path", "no/such/digits.csv.gz"), "no/such/digits.csv.gz"),
    Case("data-path-is-folder", DIGITS, ("--data.path", "{d}/folder"), "folder"),
    Case("unsafe-weights-only", GLYPHS, ("--weights_only", "false"), "--weights_only false"),
    # data files
    Case("empty-text", TEXT, ("--data.source", "text", "--data.path", "{d}/empty.txt"), "empty.txt"),
    Case("not-utf8", TEXT, ("--data.source", "text", "--data.path", "{d}/latin1.txt"), "not UTF-8"),
    Case(
        "empty-image-folder", GLYPHS, ("--data.source", "folder", "--data.path", "{d}/no-images"), "no images"
    ),
    Case(
        "mixed-image-sizes",
        GLYPHS,
        ("--data.source", "folder", "--data.path", "{d}/mixed"),
        "data.image_size",
    ),
    Case(
        "corrupt-image",
        GLYPHS,
        ("--data.source", "folder", "--data.path", "{d}/corrupt", "--data.image_size", "8"),
        "bad.png",
    ),
    Case("npz-without-y", GLYPHS, ("--data.source", "npz", "--data.path", "{d}/no-y.npz"), "no-y.npz lacks"),
    Case("digits-columns", DIGITS, ("--data.path", "{d}/columns.csv.gz"), "expected 65"),
    # strategy and hardware
    Case("gpu-on-cpu-machine", GLYPHS, ("--trainer.accelerator", "gpu"), "gpu"),
    Case("four-gpus", GLYPHS, ("--trainer.accelerator", "gpu", "--trainer.devices", "4"), "[0, 1, 2, 3]"),
    Case("unknown-strategy", GLYPHS, ("--trainer.strategy", "nosuch"), "nosuch"),
    Case(
        "tensor-parallel-cnn",
        GLYPHS,
        ("--trainer.strategy", "fsdp", "--trainer.strategy.tensor_parallel_size", "2")
        + ("--trainer.accelerator", "cpu", "--trainer.devices", "2"),
        "tensor_parallel_size",
    ),
    Case(
        "batch-across-ranks",
        GLYPHS,
        ("--trainer.accelerator", "cpu", "--trainer.devices", "3", "--data.batch_size", "64"),
        "data.batch_size 64 (the global batch) does not divide across 3 data-parallel ranks (1 node(s) x 3",
    ),
    Case("zero-devices", GLYPHS, ("--trainer.devices", "0"), "devices"),
    Case(
        "more-cpu-ranks-than-cores",
        GLYPHS,
        ("--trainer.accelerator", "cpu", "--trainer.devices", "1024", "--data.batch_size", "1024"),
        "asks for 1024 CPU processes",
    ),
    Case(
        "text-batch-beyond-memory", TEXT, ("--data.batch_size", "10000000"), "one training step needs about"
    ),
    # model and optimizer numbers
    Case("heads-do-not-divide", TEXT, ("--model.net.n_embd", "30", "--model.net.n_head", "4"), "n_head 4"),
    Case("yaml-nan-lr", GLYPHS, ("--config", "{d}/nan-lr.yaml"), "model.optim.lr must be a finite number"),
    Case("yaml-inf-momentum", GLYPHS, ("--config", "{d}/inf-momentum.yaml"), "model.optim.momentum must be"),
    # checkpoints
    Case("fit-other-family", TEXT, ("--ckpt_path", "{d}/cnn.ckpt"), "does not fit this GPTModule"),
    Case(
        "validate-other-family",
        ("validate", "--recipe", "transformer/builtin-char"),
        ("--ckpt_path", "{d}/cnn.ckpt", "--trainer.limit_val_batches", "1"),
        "does not fit this GPTModule",
    ),
    Case("fit-missing-shard", GLYPHS, ("--ckpt_path", "{d}/no-shard"), "missing 1 of its 1 shard file(s)"),
    Case(
        "export-missing-shard",
        ("checkpoint", "export", "{d}/no-shard", "{d}/out.pt"),
        (),
        "missing 1 of its 1 shard file(s)",
    ),
    # run directories
    Case("run-dir-under-proc", GLYPHS, (), "cannot be created", run_dir="/proc/bigtrain-run"),
    Case("run-dir-name-too-long", GLYPHS, (), "File name too long", run_dir="{d}/" + "a" * 300),
    Case("metrics-not-json", GLYPHS, (), "not a JSON object of metrics", run_dir="{d}/reused"),
    Case("default-root-dir", GLYPHS, ("--trainer.default_root_dir", "{d}/root"), "--run_dir"),
    Case(
        "data-path-builtin-images",
        GLYPHS,
        ("--data.path", "{d}/no-y.npz"),
        "not used with data.source=glyphs",
    ),
    # recipe files
    Case("yaml-alias-bomb", _yaml("bomb"), (), "expands to more than"),
    Case("yaml-too-large", _yaml("huge"), (), "a recipe is at most"),
]


def _write_recipes(folder: Path) -> None:
    glyphs = yaml.safe_load((ROOT / "recipes" / "cnn" / "glyphs.yaml").read_text())

    def variant(name: str, section: str, *path_and_value) -> None:
        config = yaml.safe_load(yaml.safe_dump(glyphs))
        node = config[section]
        *path, key, value = path_and_value
        for part in path:
            node = node[part]
        node[key] = value
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(config))

    config = dict(glyphs)
    config["trainr"] = config.pop("trainer")
    (folder / "top-typo.yaml").write_text(yaml.safe_dump(config))
    variant("trainer-typo", "trainer", "max_epoch", 3)
    variant("net-typo", "model", "init_args", "net", "widht", 3)
    variant("epochs-type", "trainer", "max_epochs", "three")
    (folder / "broken.yaml").write_text("trainer:\n  max_epochs: 3\n model: [\n")
    (folder / "nan-lr.yaml").write_text("model:\n  init_args:\n    optim:\n      lr: .nan\n")
    (folder / "inf-momentum.yaml").write_text("model:\n  init_args:\n    optim:\n      momentum: .inf\n")
    # Ten levels of ten aliases each: 10**10 values once expanded, from a file of 500 bytes.
    bomb = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    bomb += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    (folder / "bomb.yaml").write_text("\n".join([*bomb, "trainer:", "  max_steps: *a9", ""]))
    (folder / "huge.yaml").write_text(yaml.safe_dump(glyphs) + "#" * (2 << 20) + "\n")


def _write_data(folder: Path) -> None:
    from PIL import Image

    (folder / "folder").mkdir()
    (folder / "empty.txt").write_text("")
    (folder / "latin1.txt").write_bytes("café naïve ".encode("latin-1") * 200)
    (folder / "no-images" / "a").mkdir(parents=True)
    for cls in "ab":
        for sub, sizes in (("mixed", (8, 12)), ("corrupt", (8, 8))):
            (folder / sub / cls).mkdir(parents=True, exist_ok=True)
            for i, size in enumerate(sizes):
                Image.fromarray(np.zeros((size, size), np.uint8)).save(folder / sub / cls / f"{i}.png")
    (folder / "corrupt" / "a" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    np.savez(folder / "no-y.npz", x=np.zeros((10, 8, 8), np.uint8))
    with gzip.open(folder / "columns.csv.gz", "wt") as f:
        f.writelines(",".join(["1"] * 30) + "\n" for _ in range(20))
    (folder / "reused").mkdir()
    (folder / "reused" / "metrics.json").write_text("not json {")
    _write_checkpoints(folder)


def _write_checkpoints(folder: Path) -> None:
    """A CNN checkpoint (for a transformer recipe), and a sharded one whose only shard is gone."""
    import lightning
    import torch
    import torch.distributed.checkpoint as dcp

    from bigtrain.models.cnn.module import ResNetClassifier

    module = ResNetClassifier(net={"preset": "tiny", "in_channels": 1, "num_classes": 10})
    module.configure_model()
    state = module.state_dict()
    meta = {"pytorch-lightning_version": lightning.__version__, "epoch": 0, "global_step": 0}
    torch.save({**meta, "state_dict": state}, folder / "cnn.ckpt")
    dcp.save({"state_dict": {"w": torch.zeros(3)}}, checkpoint_id=str(folder / "no-shard"))
    for shard in (folder / "no-shard").glob("*.distcp"):
        shard.unlink()


class Outcomes:
    """Runs the cases: all selected ones at once on the first request, as many at a time as there are cores
    (under pytest-xdist, whose workers share the cores already, each case on its own request)."""

    def __init__(self, work: Path, selected: list[Case]) -> None:
        self.work, self.data = work, work / "data"
        self.data.mkdir()
        _write_recipes(self.data)
        _write_data(self.data)
        self.selected = selected
        self.done: dict[str, subprocess.CompletedProcess] = {}

    def _run(self, case: Case) -> subprocess.CompletedProcess:
        return run_bigtrain(*case.argv(self.data, self.work / "runs" / case.id), cwd=self.work, timeout=300)

    def __getitem__(self, case: Case) -> subprocess.CompletedProcess:
        if case.id not in self.done:
            batch = [case] if os.environ.get("PYTEST_XDIST_WORKER") else self.selected
            batch = [c for c in batch if c.id not in self.done] or [case]
            with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
                self.done.update(zip((c.id for c in batch), pool.map(self._run, batch), strict=True))
        return self.done[case.id]


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory) -> Outcomes:
    """The cases' outcomes, run on demand; the selected cases are this module's `test_bad_input` items."""
    selected = [
        item.callspec.params["case"]
        for item in request.session.items
        if item.originalname == "test_bad_input" and hasattr(item, "callspec")
    ]
    return Outcomes(tmp_path_factory.mktemp("bad-inputs"), selected)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(outcomes, case):
    out = outcomes[case]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2, f"exit {out.returncode}:\n{out.stderr[-3000:]}"
    assert len(lines) == 1, out.stderr[-3000:]
    assert lines[0].startswith("bigtrain: error: "), lines[0]
    assert case.named in lines[0], lines[0]
    # A run refused before it starts leaves no run directory behind (nor one holding only a config.yaml).
    run_dir = outcomes.work / "runs" / case.id
    assert case.run_dir or not run_dir.exists(), sorted(p.name for p in run_dir.iterdir())


def test_table_is_large_and_distinct():
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)
    assert len({(c.base, c.args, c.run_dir) for c in CASES}) == len(CASES)
