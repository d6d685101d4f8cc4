"""The image readers through ImageDataModule, on small files written here; downloads from a local mirror."""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bigtrain.data import images as images_mod
from bigtrain.data.images import ImageDataModule
from bigtrain.errors import UserError

REPO = Path(__file__).resolve().parents[2]
TEST_DATA = Path(os.environ.get("BIGTRAIN_TEST_DATA", REPO.parent / "shared" / "data"))


# ----------------------------------------------------------------------------------------- UCI digits


@pytest.mark.skipif(
    not (TEST_DATA / "digits" / "digits.csv.gz").is_file(),
    reason=f"UCI digits not found under {TEST_DATA} (set BIGTRAIN_TEST_DATA)",
)
def test_shared_uci_digits():
    dm = ImageDataModule(source="digits", path=str(TEST_DATA / "digits"), batch_size=10)
    dm.setup("fit")
    assert (dm.num_classes, dm.channels, dm.image_size) == (10, 1, 8)
    assert len(dm.train_set) + len(dm.val_set) == 1797 and len(dm.val_set) == 359
    everything = torch.cat([dm.train_set.x, dm.val_set.x])
    assert everything.dtype == torch.float32 and everything.min() == 0 and everything.max() == 1
    assert set(torch.cat([dm.train_set.y, dm.val_set.y]).tolist()) == set(range(10))
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (10, 1, 8, 8)
    # The README names the file's source by its SHA-256: this is the file it means.
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    documented = re.search(r"digits\.csv\.gz` \(SHA-256\s+`([0-9a-f]{64})`", readme)
    digest = hashlib.sha256((TEST_DATA / "digits" / "digits.csv.gz").read_bytes()).hexdigest()
    assert documented and documented.group(1) == digest


def test_digits_file_written_here_and_bad_rows(tmp_path):
    table = np.concatenate(
        [np.random.default_rng(0).integers(0, 17, (20, 64)), np.arange(20)[:, None] % 10], 1
    )
    good = tmp_path / "digits.csv.gz"
    with gzip.open(good, "wt") as f:
        np.savetxt(f, table, fmt="%d", delimiter=",")
    dm = ImageDataModule(source="digits", path=str(tmp_path), image_size=16, batch_size=4)
    dm.setup("fit")
    assert dm.image_size == 16 and len(dm.train_set) == 16 and dm.train_set.x.max() <= 1
    bad = tmp_path / "bad.csv"
    np.savetxt(bad, table[:, :60], fmt="%d", delimiter=",")
    with pytest.raises(UserError, match="expected 65"):
        ImageDataModule(source="digits", path=str(bad)).setup("fit")
    with pytest.raises(UserError, match="digits.csv"):
        ImageDataModule(source="digits", path=str(tmp_path / "empty")).setup("fit")


# ---------------------------------------------------------------------------------------------- IDX


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file of unsigned bytes (gzip when the name ends in .gz)."""
    data = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data += array.astype(np.uint8).tobytes()
    (gzip.open if path.suffix == ".gz" else open)(path, "wb").write(data)


def write_mnist(folder: Path, n_train: int = 12, n_test: int = 5, gz: bool = True) -> None:
    """A tiny MNIST-layout folder: pixel value = image index, label = index % 10."""
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(
            folder / f"{prefix}-images-idx3-ubyte{ext}", np.arange(n)[:, None, None] * np.ones((1, 28, 28))
        )
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", np.arange(n) % 10)


@pytest.mark.parametrize("source", ["mnist", "fashion-mnist"])
def test_idx_folder_uses_official_test_split(tmp_path, source):
    write_mnist(tmp_path, gz=source == "mnist")
    dm = ImageDataModule(source=source, path=str(tmp_path), batch_size=4, normalize=False)
    dm.setup("fit")
    assert (dm.num_classes, dm.channels, dm.image_size) == (10, 1, 28)
    assert len(dm.train_set) == 12 and len(dm.val_set) == 5 and dm.train_set.x.dtype == torch.uint8
    assert torch.equal(dm.val_set.y, torch.arange(5)) and dm.val_set[4][0].max().item() == pytest.approx(
        4 / 255
    )
    assert (dm.classes[0] == "T-shirt/top") == (source == "fashion-mnist")


def test_idx_errors(tmp_path):
    with pytest.raises(UserError, match="train-images-idx3-ubyte"):
        ImageDataModule(source="mnist", path=str(tmp_path)).setup("fit")
    write_mnist(tmp_path, gz=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(4))
    with pytest.raises(UserError, match="5 images but .* 4 labels"):
        ImageDataModule(source="mnist", path=str(tmp_path)).setup("fit")
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x09abc")
    with pytest.raises(UserError, match="header says"):
        ImageDataModule(source="mnist", path=str(tmp_path)).setup("fit")
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"not an idx file at all")
    with pytest.raises(UserError, match="not an IDX file"):
        ImageDataModule(source="mnist", path=str(tmp_path)).setup("fit")


# -------------------------------------------------------------------------------------------- CIFAR


def cifar_records(labels: list[int]) -> bytes:
    """CIFAR-10 binary records; image k has R, G, B planes filled with k, 100 + k and 200 + k."""
    out = b""
    for k, label in enumerate(labels):
        out += bytes([label]) + bytes([k]) * 1024 + bytes([100 + k]) * 1024 + bytes([200 + k]) * 1024
    return out


def write_cifar(root: Path) -> Path:
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for b in range(1, 6):
        (folder / f"data_batch_{b}.bin").write_bytes(cifar_records([b, (b + 1) % 10]))
    (folder / "test_batch.bin").write_bytes(cifar_records([9, 0, 3]))
    return folder


def test_cifar10_binary_records(tmp_path):
    write_cifar(tmp_path)
    dm = ImageDataModule(source="cifar10", path=str(tmp_path), batch_size=2)
    dm.setup("fit")
    assert (dm.num_classes, dm.channels, dm.image_size) == (10, 3, 32)
    assert len(dm.train_set) == 10 and torch.equal(dm.val_set.y, torch.tensor([9, 0, 3]))
    assert dm.train_set.x[1, :, 5, 7].tolist() == [1, 101, 201]
    assert dm.classes[0] == "airplane" and len(dm.mean) == 3
    assert dm.mean[0] == pytest.approx(0.5 / 255) and dm.mean[2] == pytest.approx(200.5 / 255)
    small = ImageDataModule(source="cifar10", path=str(tmp_path / "cifar-10-batches-bin"), image_size=16)
    small.setup("fit")
    assert small.train_set.x.shape == (10, 3, 16, 16) and small.train_set.x.dtype == torch.uint8
    assert small.train_set.x[1, :, 3, 3].tolist() == [1, 101, 201]


def test_cifar10_errors(tmp_path):
    with pytest.raises(UserError, match="data_batch_1.bin"):
        ImageDataModule(source="cifar10", path=str(tmp_path)).setup("fit")
    folder = write_cifar(tmp_path)
    (folder / "data_batch_3.bin").write_bytes(b"\x01" * 3000)
    with pytest.raises(UserError, match="data_batch_3.bin is 3000 bytes"):
        ImageDataModule(source="cifar10", path=str(tmp_path)).setup("fit")
    (folder / "data_batch_3.bin").write_bytes(cifar_records([42]))
    with pytest.raises(UserError, match="label 42"):
        ImageDataModule(source="cifar10", path=str(tmp_path)).setup("fit")


# ------------------------------------------------------------------------------------------- folder


def write_png(path: Path, value, size=(6, 6), mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)


def test_folder_classes_sorted_and_colour_wins(tmp_path):
    for k in range(3):
        write_png(tmp_path / "zebra" / f"{k}.png", 10 * k)
        write_png(tmp_path / "ant" / "nested" / f"{k}.PNG", 100)
    write_png(tmp_path / "ant" / "red.jpg", (255, 0, 0), mode="RGB")
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    dm = ImageDataModule(source="folder", path=str(tmp_path), batch_size=2, val_fraction=0.3)
    dm.setup("fit")
    assert dm.classes == ["ant", "zebra"] and dm.num_classes == 2
    assert (dm.channels, dm.image_size) == (3, 6) and len(dm.train_set) + len(dm.val_set) == 7
    everything = torch.cat([dm.train_set.x, dm.val_set.x])
    labels = torch.cat([dm.train_set.y, dm.val_set.y])
    assert labels.bincount().tolist() == [4, 3]
    # Grey images became RGB with equal channels; the red one kept its colour.
    assert sum(bool((img[0] > 200).all() and (img[1] < 50).all()) for img in everything) == 1
    assert sum(bool(torch.equal(img[0], img[1])) for img in everything) == 6


def test_folder_grey_stays_one_channel_and_resize(tmp_path):
    write_png(tmp_path / "a" / "0.png", 0, size=(8, 5))
    write_png(tmp_path / "b" / "0.bmp", 255, size=(3, 9))
    with pytest.raises(UserError, match=r"b/0\.bmp is 3x9 .* set data.image_size"):
        ImageDataModule(source="folder", path=str(tmp_path)).setup("fit")
    dm = ImageDataModule(source="folder", path=str(tmp_path), image_size=7, batch_size=1)
    dm.setup("fit")
    assert (dm.channels, dm.image_size) == (1, 7) and dm.train_set.x.shape[1:] == (1, 7, 7)


def test_folder_errors(tmp_path):
    with pytest.raises(UserError, match="not a folder"):
        ImageDataModule(source="folder", path=str(tmp_path / "missing")).setup("fit")
    with pytest.raises(UserError, match="no class sub-folders"):
        ImageDataModule(source="folder", path=str(tmp_path)).setup("fit")
    (tmp_path / "cat").mkdir()
    with pytest.raises(UserError, match="cat has no images"):
        ImageDataModule(source="folder", path=str(tmp_path)).setup("fit")
    write_png(tmp_path / "cat" / "ok.png", 3)
    (tmp_path / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(UserError, match=r"cannot read image .*broken\.png"):
        ImageDataModule(source="folder", path=str(tmp_path)).setup("fit")


# ---------------------------------------------------------------------------------------------- npz


def test_npz_layouts_and_official_validation(tmp_path):
    rng = np.random.default_rng(0)
    nhwc = tmp_path / "nhwc.npz"
    np.savez(nhwc, x=rng.integers(0, 256, (10, 5, 5, 3), dtype=np.uint8), y=np.arange(10) % 4)
    dm = ImageDataModule(source="npz", path=str(nhwc), batch_size=2)
    dm.setup("fit")
    assert (dm.num_classes, dm.channels, dm.image_size) == (4, 3, 5) and len(dm.val_set) == 2
    nchw = tmp_path / "nchw.npz"
    x = rng.random((6, 1, 4, 4), dtype=np.float32)
    np.savez(nchw, x=x, y=np.array([0, 1, 2, 0, 1, 2]), x_val=x[:2, 0], y_val=np.array([7, 0]))
    dm = ImageDataModule(source="npz", path=str(nchw), batch_size=2)
    dm.setup("fit")
    assert dm.num_classes == 8 and len(dm.train_set) == 6 and len(dm.val_set) == 2
    assert torch.equal(dm.val_set.x, torch.from_numpy(x[:2])) and dm.train_set.x.dtype == torch.float32


def test_npz_errors(tmp_path):
    path = tmp_path / "d.npz"
    cases = [
        (dict(images=np.zeros((4, 3, 3), np.uint8), y=np.zeros(4, int)), "lacks array.*x .*has: images, y"),
        (dict(x=np.zeros((4, 3, 3), np.uint8), y=np.zeros(4, int), x_val=np.zeros((1, 3, 3))), "y_val"),
        (dict(x=np.zeros((4, 3, 3), np.int32), y=np.zeros(4, int)), "dtype int32"),
        (dict(x=np.zeros((4, 3, 3), np.uint8), y=np.zeros(3, int)), "3 labels for 4 images"),
        (dict(x=np.zeros((4, 3, 3), np.uint8), y=np.zeros(4)), "integers"),
        (dict(x=np.zeros((4, 3, 3), np.uint8), y=-np.ones(4, int)), "negative"),
        (dict(x=np.zeros((4, 5, 6, 7), np.uint8), y=np.zeros(4, int)), "C 1 or 3"),
        (dict(x=np.full((4, 3, 3), np.nan), y=np.zeros(4, int)), "NaN"),
        (dict(x=np.zeros((4, 3, 5), np.uint8), y=np.zeros(4, int)), "3x5 images; set data.image_size"),
        (dict(x=np.array([None] * 4, dtype=object), y=np.zeros(4, int)), "cannot read"),
    ]
    for arrays, message in cases:
        np.savez(path, **arrays)
        with pytest.raises(UserError, match=message):
            ImageDataModule(source="npz", path=str(path), batch_size=1).setup("fit")
    np.save(tmp_path / "one.npy", np.zeros(3))
    path.write_bytes((tmp_path / "one.npy").read_bytes())
    with pytest.raises(UserError, match="one array"):
        ImageDataModule(source="npz", path=str(path)).setup("fit")
    path.write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(UserError, match="cannot read"):
        ImageDataModule(source="npz", path=str(path)).setup("fit")
    with pytest.raises(UserError, match="not a file"):
        ImageDataModule(source="npz", path=str(tmp_path / "none.npz")).setup("fit")


# --------------------------------------------------------------------------------------------- downloads


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_mnist_download_tries_mirrors_and_checks_sums(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    write_mnist(mirror)
    sums = {p.name: sha(p) for p in mirror.iterdir()}
    bases = [(tmp_path / "offline").as_uri() + "/", mirror.as_uri() + "/"]
    monkeypatch.setitem(images_mod.DOWNLOADS, "mnist", (bases, sums))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    dm = ImageDataModule(source="mnist", download=True, batch_size=4)
    dm.prepare_data()
    dm.prepare_data()  # a second node or run finds the files and fetches nothing
    dm.setup("fit")
    assert dm.root() == tmp_path / "cache" / "bigtrain" / "mnist" and len(dm.train_set) == 12
    bad = {name: "0" * 64 for name in sums}
    monkeypatch.setitem(images_mod.DOWNLOADS, "mnist", (bases, bad))
    with pytest.raises(UserError, match="SHA-256"):
        ImageDataModule(source="mnist", path=str(tmp_path / "other"), download=True).prepare_data()


def test_cifar10_download_extracts_archive(tmp_path, monkeypatch):
    write_cifar(tmp_path / "src")
    archive = tmp_path / "mirror" / "cifar-10-binary.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-bin", arcname="cifar-10-batches-bin")
    sums = {archive.name: sha(archive)}
    monkeypatch.setitem(images_mod.DOWNLOADS, "cifar10", ([archive.parent.as_uri() + "/"], sums))
    dm = ImageDataModule(source="cifar10", path=str(tmp_path / "data"), download=True, batch_size=2)
    dm.prepare_data()
    dm.setup("fit")
    assert (
        len(dm.train_set) == 10 and (tmp_path / "data" / "cifar-10-batches-bin" / "test_batch.bin").is_file()
    )
    assert [p.name for p in (tmp_path / "data").iterdir() if p.name.startswith(".")] == []
