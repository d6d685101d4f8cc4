"""Readers for the image file formats ImageDataModule accepts; none of them unpickles anything.

Every reader returns an `ImageSet` of numpy arrays laid out (N, C, H, W): uint8 for 0..255 pixels, float32
for values already scaled (0..1 expected). A user's mistake (missing or corrupt file, wrong layout) raises
UserError naming the file and what would be valid.
"""

from __future__ import annotations

import gzip
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bigtrain.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
DIGIT_CLASSES = [str(d) for d in range(10)]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"]
FASHION_CLASSES += ["Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR10_FOLDER = "cifar-10-batches-bin"
CIFAR10_TRAIN = [f"data_batch_{k}.bin" for k in range(1, 6)]
CIFAR10_TEST = "test_batch.bin"


@dataclass
class ImageSet:
    """Images (N, C, H, W) and labels (N,) int64, with the official validation split when there is one."""

    x: np.ndarray
    y: np.ndarray
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    classes: list[str] | None = None


def _open_maybe_gzip(path: Path) -> bytes:
    """The bytes of `path`, gunzipped when its name ends in .gz."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError) as err:
        raise UserError(f"cannot read {path} ({err}); the file is damaged or not what its name says") from err


# ----------------------------------------------------------------------------------------- UCI digits


def read_digits(path: Path) -> ImageSet:
    """UCI optical digits: lines of 64 pixel values 0..16 then the label, comma separated (.csv[.gz])."""
    if path.is_dir():
        found = [path / n for n in ("digits.csv.gz", "digits.csv") if (path / n).is_file()]
        if not found:
            raise UserError(
                f"no digits.csv.gz or digits.csv in {path}; set data.path to the file or its folder"
            )
        path = found[0]
    elif not path.is_file():
        raise UserError(f"data.path {path} does not exist; expected the UCI digits.csv.gz file or its folder")
    text = _open_maybe_gzip(path).decode("ascii", errors="replace")
    try:
        table = np.loadtxt(text.splitlines(), delimiter=",", dtype=np.int64, ndmin=2)
    except ValueError as err:
        raise UserError(f"{path} is not a table of comma-separated integers ({err})") from err
    if table.shape[0] == 0 or table.shape[1] != 65:
        raise UserError(
            f"{path} has rows of {table.shape[1]} values; expected 65 (64 pixels, then the label)"
        )
    pixels, labels = table[:, :64], table[:, 64]
    if pixels.min() < 0 or pixels.max() > 16 or labels.min() < 0 or labels.max() > 9:
        raise UserError(f"{path} has values outside 0..16 (pixels) or 0..9 (labels); not UCI digits")
    x = (pixels.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    return ImageSet(x=x, y=labels, classes=list(DIGIT_CLASSES))


# ------------------------------------------------------------------------------------------------ IDX


def _find(folder: Path, names: list[str]) -> Path | None:
    """The first of `names` (each also tried with .gz) that is a file in `folder`."""
    for name in names:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def read_idx(path: Path, dims: int) -> np.ndarray:
    """One IDX file of unsigned bytes with `dims` dimensions (MNIST's format), as a uint8 array."""
    data = _open_maybe_gzip(path)
    if len(data) < 4 + 4 * dims:
        raise UserError(f"{path} is too short to be an IDX file")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08 or ndim != dims:
        raise UserError(f"{path} is not an IDX file of unsigned bytes with {dims} dimension(s)")
    shape = struct.unpack(f">{dims}I", data[4 : 4 + 4 * dims])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise UserError(f"{path} holds {body.size} bytes of data but its header says shape {shape}")
    return body.reshape(shape)


def _read_idx_split(folder: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 1, H, W) and labels for the IDX split `prefix` ('train' or 't10k')."""
    names = {kind: [f"{prefix}-{kind}-idx{d}-ubyte", f"{prefix}-{kind}.idx{d}-ubyte"]
             for kind, d in (("images", 3), ("labels", 1))}  # fmt: skip
    images, labels = _find(folder, names["images"]), _find(folder, names["labels"])
    if images is None or labels is None:
        missing = names["images"][0] if images is None else names["labels"][0]
        raise UserError(
            f"no {missing}[.gz] in {folder}; put the four IDX files there, point data.path at them, "
            "or set data.download=true"
        )
    x, y = read_idx(images, 3), read_idx(labels, 1)
    if len(x) != len(y):
        raise UserError(f"{images} has {len(x)} images but {labels} has {len(y)} labels")
    return x[:, None], y.astype(np.int64)


def read_mnist(folder: Path, classes: list[str]) -> ImageSet:
    """MNIST-style IDX files: the train split, and t10k as the official validation split."""
    if not folder.is_dir():
        raise UserError(f"data.path {folder} is not a folder; expected the folder holding the IDX files")
    x, y = _read_idx_split(folder, "train")
    x_val, y_val = _read_idx_split(folder, "t10k")
    return ImageSet(x=x, y=y, x_val=x_val, y_val=y_val, classes=list(classes))


# -------------------------------------------------------------------------------------------- CIFAR-10


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 binary batch: records of 1 label byte then 3x32x32 pixel bytes (R, G, B planes)."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise UserError(f"cannot read {path} ({err})") from err
    record = 1 + 3 * 32 * 32
    if data.size == 0 or data.size % record:
        raise UserError(f"{path} is {data.size} bytes, not a whole number of {record}-byte CIFAR-10 records")
    table = data.reshape(-1, record)
    labels = table[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise UserError(f"{path} has label {labels.max()}; CIFAR-10 labels are 0..9 (is it CIFAR-100?)")
    return table[:, 1:].reshape(-1, 3, 32, 32), labels


def read_cifar10(folder: Path) -> ImageSet:
    """CIFAR-10's binary version from `folder` or its cifar-10-batches-bin sub-folder."""
    if not folder.is_dir():
        raise UserError(f"data.path {folder} is not a folder; expected the CIFAR-10 binary batches' folder")
    if (folder / CIFAR10_FOLDER).is_dir():
        folder = folder / CIFAR10_FOLDER
    for name in [*CIFAR10_TRAIN, CIFAR10_TEST]:
        if not (folder / name).is_file():
            raise UserError(
                f"no {name} in {folder}; expected the binary version's batches "
                f"({', '.join(CIFAR10_TRAIN)}, {CIFAR10_TEST}); point data.path at them "
                "or set data.download=true"
            )
    parts = [_read_cifar_batch(folder / name) for name in CIFAR10_TRAIN]
    x_val, y_val = _read_cifar_batch(folder / CIFAR10_TEST)
    x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    return ImageSet(x=x, y=y, x_val=x_val, y_val=y_val, classes=list(CIFAR10_CLASSES))


# ------------------------------------------------------------------------------------- class folders


def _load_image(path: Path) -> Image.Image:
    """An image fully decoded by Pillow (so a truncated file fails here, naming itself)."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise UserError(f"cannot read image {path} ({err}); remove or replace it") from err


def _is_colour(img: Image.Image) -> bool:
    """Whether an image holds colour; palette images count as colour only if their pixels are not grey."""
    if img.mode in ("1", "L", "LA", "I", "I;16", "F"):
        return False
    if img.mode in ("P", "PA"):
        rgb = np.asarray(img.convert("RGB"))
        return bool((rgb[..., 0] != rgb[..., 1]).any() or (rgb[..., 1] != rgb[..., 2]).any())
    return True


def _class_files(folder: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Sorted class names (sub-folders) and (file, class index) pairs for every image below them."""
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise UserError(f"no class sub-folders in {folder}; expected one sub-folder of images per class")
    files = []
    for label, name in enumerate(classes):
        found = sorted(
            p
            for p in (folder / name).rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
        )
        if not found:
            raise UserError(
                f"class folder {folder / name} has no images ({', '.join(IMAGE_SUFFIXES)}); "
                "add some or remove the folder"
            )
        files += [(p, label) for p in found]
    return classes, files


def read_folder(folder: Path, image_size: int | None) -> ImageSet:
    """One sub-folder per class; all images become L, or RGB when any is colour; optional resize."""
    if not folder.is_dir():
        raise UserError(
            f"data.path {folder} is not a folder; expected a folder with one sub-folder per class"
        )
    classes, files = _class_files(folder)
    images = [_load_image(path) for path, _ in files]
    mode = "RGB" if any(_is_colour(img) for img in images) else "L"
    arrays, first = [], files[0][0]
    for img, (path, _) in zip(images, files, strict=True):
        if image_size is not None:
            img = img.convert(mode).resize((image_size, image_size), Image.Resampling.BILINEAR)
        elif img.size != images[0].size:
            raise UserError(
                f"{path} is {img.size[0]}x{img.size[1]} but {first} is {images[0].size[0]}x"
                f"{images[0].size[1]}; set data.image_size to resize every image to one size"
            )
        arrays.append(np.asarray(img.convert(mode), dtype=np.uint8))
    x = np.stack(arrays)
    x = x[:, None] if mode == "L" else x.transpose(0, 3, 1, 2)
    y = np.array([label for _, label in files], dtype=np.int64)
    return ImageSet(x=np.ascontiguousarray(x), y=y, classes=classes)


# ------------------------------------------------------------------------------------------------ npz


def _npz_images(x: np.ndarray, key: str, path: Path) -> np.ndarray:
    """`x` as (N, C, H, W) uint8 or float32; channels-last is assumed when the last axis is 1 or 3."""
    if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
        raise UserError(f"'{key}' in {path} has dtype {x.dtype}; expected uint8 (0..255) or float (0..1)")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[3] in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    elif x.ndim != 4 or x.shape[1] not in (1, 3):
        raise UserError(
            f"'{key}' in {path} has shape {x.shape}; expected (N,H,W), (N,H,W,C) or (N,C,H,W) with C 1 or 3"
        )
    if x.dtype != np.uint8:
        x = x.astype(np.float32)
        if not np.isfinite(x).all():
            raise UserError(f"'{key}' in {path} holds NaN or infinite values")
    return np.ascontiguousarray(x)


def _npz_labels(y: np.ndarray, key: str, n: int, path: Path) -> np.ndarray:
    """`y` checked to be n non-negative integers."""
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise UserError(
            f"'{key}' in {path} has shape {y.shape} and dtype {y.dtype}; expected ({n},) integers"
        )
    if len(y) != n:
        raise UserError(f"'{key}' in {path} has {len(y)} labels for {n} images")
    if len(y) and y.min() < 0:
        raise UserError(f"'{key}' in {path} has negative labels; expected class indices 0..K-1")
    return y.astype(np.int64)


def read_npz(path: Path) -> ImageSet:
    """A .npz with arrays x, y and optionally x_val, y_val; pickled (object) arrays are refused."""
    if not path.is_file():
        raise UserError(f"data.path {path} is not a file; expected a .npz with arrays 'x' and 'y'")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise UserError(f"{path} holds one array, not a .npz archive with 'x' and 'y'")
        with archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise UserError(f"cannot read {path} as a .npz of numeric arrays ({err})") from err
    missing = [k for k in ("x", "y") if k not in arrays]
    if ("x_val" in arrays) != ("y_val" in arrays):
        missing.append("y_val" if "x_val" in arrays else "x_val")
    if missing:
        raise UserError(
            f"{path} lacks array(s) {', '.join(missing)} (has: {', '.join(sorted(arrays)) or 'none'}); "
            "expected 'x' and 'y', optionally 'x_val' and 'y_val'"
        )
    x = _npz_images(arrays["x"], "x", path)
    result = ImageSet(x=x, y=_npz_labels(arrays["y"], "y", len(x), path))
    if "x_val" in arrays:
        result.x_val = _npz_images(arrays["x_val"], "x_val", path)
        result.y_val = _npz_labels(arrays["y_val"], "y_val", len(result.x_val), path)
        if result.x_val.shape[1:] != x.shape[1:]:
            raise UserError(
                f"'x_val' in {path} has images of shape {result.x_val.shape[1:]}, 'x' {x.shape[1:]}"
            )
    if len(x) == 0:
        raise UserError(f"'x' in {path} holds no images")
    return result
