"""ImageDataModule: image classification data, from the built-in glyphs to MNIST, CIFAR-10 and user files.

Data sets are small enough to hold in memory: setup() reads them once as uint8 (or float) tensors, and the
Dataset scales, augments and normalises a whole batch at once. Augmentation randomness comes only from
`sample_generator(seed, epoch, index)`, so batches are the same for any number of workers or ranks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from bigtrain.data import image_formats as fmt
from bigtrain.data.base import BatchDataset, BigtrainDataModule, sample_generator, split_index
from bigtrain.data.glyphs import CLASSES as GLYPH_CLASSES
from bigtrain.data.glyphs import DEFAULT_SIZE as GLYPH_SIZE
from bigtrain.data.glyphs import make_glyphs
from bigtrain.data.image_downloads import DOWNLOADS, default_cache, fetch
from bigtrain.errors import UserError, unknown

Source = Literal["glyphs", "digits", "mnist", "fashion-mnist", "cifar10", "folder", "npz"]
SOURCES = ("glyphs", "digits", "mnist", "fashion-mnist", "cifar10", "folder", "npz")
NEEDS_PATH = ("digits", "folder", "npz")
KNOWN_SIZES = {"mnist": (1, 28, 10), "fashion-mnist": (1, 28, 10), "cifar10": (3, 32, 10)}
"""source -> (channels, side, classes): fixed facts, so sizes are known without a download."""


class ImageTensorDataset(BatchDataset):
    """In-memory images (N, C, H, W) with seeded per-sample augmentation and normalisation, a batch at a time.

    Indices are `EpochSampler` values (`epoch * N + index`), so the augmentation of a sample depends only on
    (seed, epoch, index), never on which worker or rank draws it. Only the augmentation's random draws are
    made per sample; scaling, flips, crops and normalisation run on the whole batch.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        seed: int = 0,
        crop: int = 0,
        flip: bool = False,
    ) -> None:
        self.x, self.y = x, y
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.seed, self.crop, self.flip = seed, crop, flip

    def __len__(self) -> int:
        return len(self.y)

    def get_batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(images (B, C, H, W) float, labels (B,)) of these sampler values."""
        values = torch.as_tensor(indices, dtype=torch.int64)
        index = values % len(self.y)
        # index_select, not x[index]: the advanced-indexing kernel costs ms per call on a busy CPU.
        images = self.x.index_select(0, index).to(torch.float32)  # a new tensor
        if self.x.dtype == torch.uint8:
            images /= 255.0
        if self.crop or self.flip:
            images = self._augment(images, values)
        return (images - self.mean) / self.std, self.y.index_select(0, index)

    def _draws(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per sample: flip or not (B,), crop offsets (B, 2), from its (seed, epoch, index) generator."""
        generator, flips, offsets = torch.Generator(), [], []
        for value in values.tolist():
            gen = sample_generator(self.seed, *split_index(value, len(self.y)), generator)
            # Both draws happen whether or not each augmentation is on, so turning one off leaves the
            # other's randomness unchanged.
            flips.append(torch.rand((), generator=gen) < 0.5)
            offsets.append(torch.randint(0, 2 * self.crop + 1, (2,), generator=gen))
        return torch.stack(flips), torch.stack(offsets)

    def _augment(self, images: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Random horizontal flips, then random crops of the zero-padded images back to their size."""
        flips, offsets = self._draws(values)
        if self.flip:
            images = torch.where(flips.view(-1, 1, 1, 1), images.flip(-1), images)
        if self.crop:
            b, c, h, w = images.shape
            padded = F.pad(images, (self.crop,) * 4).flatten(2)  # (B, C, (H + 2c) * (W + 2c))
            rows = (offsets[:, 0:1] + torch.arange(h)).view(b, h, 1)
            cols = (offsets[:, 1:2] + torch.arange(w)).view(b, 1, w)
            where = (rows * (w + 2 * self.crop) + cols).view(b, 1, h * w).expand(b, c, h * w)
            images = padded.gather(2, where).view(b, c, h, w)
        return images


def _resize(x: torch.Tensor, size: int, chunk: int = 2048) -> torch.Tensor:
    """Images resized to size x size (antialiased bilinear), in chunks, keeping the dtype."""
    if x.shape[-2:] == (size, size):
        return x
    parts = []
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk].float()
        part = F.interpolate(part, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        parts.append(part.round().clamp(0, 255).to(torch.uint8) if x.dtype == torch.uint8 else part)
    return torch.cat(parts)


def _channel_stats(x: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of images scaled to [0, 1] (uint8 divided by 255), in float64."""
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk].to(torch.float64)
        if x.dtype == torch.uint8:
            part /= 255.0
        total += part.sum(dim=(0, 2, 3))
        squares += part.square().sum(dim=(0, 2, 3))
    count = x.numel() // x.shape[1]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt()
    # A constant channel would divide by zero; leave it unscaled instead.
    std = torch.where(std < 1e-6, torch.ones_like(std), std)
    return tuple(mean.tolist()), tuple(std.tolist())


def _as_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor owning a writable, contiguous copy when the array is read-only (e.g. from a buffer)."""
    return torch.from_numpy(np.require(array, requirements=["C", "W"]))


class ImageDataModule(BigtrainDataModule):
    """Image classification data: batches `(x, y)`, x float (B, C, H, W) normalised, y long (B,).

    After `setup()` the module has `num_classes`, `channels`, `image_size` (side of the square images
    the model sees), `mean` and `std` (per-channel tuples of the normalisation applied; zeros and ones when
    `normalize` is off) and `classes` (class names).

    Args:
        source: Where the images come from. `glyphs`: built-in procedural digits, no files needed.
            `digits`: the UCI optical digits CSV (8x8, gzip). `mnist`, `fashion-mnist`: the IDX files.
            `cifar10`: the binary batches. `folder`: one sub-folder of images per class. `npz`: arrays `x`,
            `y` and optionally `x_val`, `y_val`.
        path: The file (digits, npz) or folder (the others) to read. For mnist, fashion-mnist and cifar10
            it defaults to the download cache `~/.cache/bigtrain/<source>`.
        download: Download mnist, fashion-mnist or cifar10 into `path` (or the cache), checking SHA-256.
        image_size: Resize every image to this square size; null keeps the native size (glyphs: 16).
        val_fraction: Share of the data held out for validation, for sources without an official split
            (mnist, fashion-mnist and cifar10 validate on their test split; npz on `x_val` when given).
        num_samples: Number of glyph images generated (glyphs only).
        normalize: Subtract the per-channel mean and divide by the std, both measured on the training split.
        augment_crop: Random-crop augmentation: pad by this many pixels, crop back (0 turns it off).
        augment_flip: Random horizontal flips in training (leave off for digits and letters, whose mirror
            images are other shapes).
        batch_size: Global batch size, split across data-parallel ranks.
        micro_batch_size: Per-device micro-batch; gradients accumulate over micro-batches up to the per-device
            share of the global batch (null: no accumulation).
        num_workers: DataLoader worker processes per rank.
        seed: Seed of the split, the sampling order, the augmentation and the glyphs.
    """

    def __init__(
        self,
        *,
        source: Source = "glyphs",
        path: str | None = None,
        download: bool = False,
        image_size: int | None = None,
        val_fraction: float = 0.2,
        num_samples: int = 6000,
        normalize: bool = True,
        augment_crop: int = 0,
        augment_flip: bool = False,
        batch_size: int = 64,
        micro_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(
            batch_size=batch_size, micro_batch_size=micro_batch_size, num_workers=num_workers, seed=seed
        )
        _check_args(source, path, download, image_size, val_fraction, num_samples, augment_crop)
        self.source = source
        self.path = path
        self.download = download
        self.requested_size = image_size
        self.val_fraction = val_fraction
        self.num_samples = num_samples
        self.normalize = normalize
        self.augment_crop = augment_crop
        self.augment_flip = augment_flip
        self.num_classes: int | None = None
        self.channels: int | None = None
        self.image_size: int | None = None
        self.mean: tuple[float, ...] | None = None
        self.std: tuple[float, ...] | None = None
        self.classes: list[str] | None = None
        self.train_set: ImageTensorDataset | None = None
        self.val_set: ImageTensorDataset | None = None

    def root(self) -> Path:
        """The file or folder read for this source (the download cache when `path` is unset)."""
        return Path(self.path).expanduser() if self.path is not None else default_cache(self.source)

    def prepare_data(self) -> None:
        """Download the source's files when asked (Lightning runs this once per node)."""
        if self.download:
            fetch(self.source, self.root())

    def _read(self) -> fmt.ImageSet:
        """The source's images as an ImageSet, at the requested size where the reader resizes itself."""
        root = self.root()
        if self.source == "glyphs":
            x, y = make_glyphs(self.num_samples, size=self.requested_size or GLYPH_SIZE, seed=self.seed)
            return fmt.ImageSet(x=x[:, None], y=y, classes=list(GLYPH_CLASSES))
        if self.source == "digits":
            return fmt.read_digits(root)
        if self.source == "mnist":
            return fmt.read_mnist(root, fmt.DIGIT_CLASSES)
        if self.source == "fashion-mnist":
            return fmt.read_mnist(root, fmt.FASHION_CLASSES)
        if self.source == "cifar10":
            return fmt.read_cifar10(root)
        if self.source == "folder":
            return fmt.read_folder(root, self.requested_size)
        return fmt.read_npz(root)

    def _split(self, data: fmt.ImageSet) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Train and validation tensors: the official split, or a seeded permutation by `val_fraction`."""
        x, y = _as_tensor(data.x), _as_tensor(data.y)
        if data.x_val is not None and data.y_val is not None:
            return x, y, _as_tensor(data.x_val), _as_tensor(data.y_val)
        n = len(y)
        if n < 2:
            raise UserError(
                f"data.source={self.source} has {n} image(s); need at least 2 to split off validation"
            )
        n_val = min(max(1, round(n * self.val_fraction)), n - 1)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        val, train = order[:n_val], order[n_val:]
        return x[train], y[train], x[val], y[val]

    def setup(self, stage: str | None = None) -> None:
        """Read, split, resize and measure the data once; later calls (other stages) reuse it."""
        if self.train_set is not None:
            return
        data = self._read()
        x, y, x_val, y_val = self._split(data)
        if self.requested_size is not None:
            x, x_val = _resize(x, self.requested_size), _resize(x_val, self.requested_size)
        height, width = x.shape[-2:]
        if height != width:
            raise UserError(
                f"data.source={self.source} has {height}x{width} images; "
                "set data.image_size to make them square"
            )
        self.num_classes = max(len(data.classes or []), int(max(y.max(), y_val.max())) + 1)
        self.classes = data.classes or [str(k) for k in range(self.num_classes)]
        self.channels, self.image_size = int(x.shape[1]), int(height)
        if self.normalize:
            self.mean, self.std = _channel_stats(x)
        else:
            self.mean, self.std = (0.0,) * self.channels, (1.0,) * self.channels
        common = {"mean": self.mean, "std": self.std, "seed": self.seed}
        self.train_set = ImageTensorDataset(x, y, crop=self.augment_crop, flip=self.augment_flip, **common)
        self.val_set = ImageTensorDataset(x_val, y_val, **common)

    def data_sizes(self) -> dict[str, Any]:
        """channels, image_size and num_classes (set as attributes too), reading as little as possible."""
        if self.source in KNOWN_SIZES:
            self.channels, side, self.num_classes = KNOWN_SIZES[self.source]
            self.image_size = self.requested_size or side
        elif self.source == "folder" and self.requested_size:
            # Reading every image of a large folder only to know its sizes takes hours: count, assume RGB.
            root = self.root()
            if not root.is_dir():
                raise UserError(f"data.path {root} is not a folder with one sub-folder per class")
            self.num_classes = sum(1 for p in root.iterdir() if p.is_dir())
            self.channels, self.image_size = 3, self.requested_size
        else:
            self.setup("fit")
        return {"channels": self.channels, "image_size": self.image_size, "num_classes": self.num_classes}

    def sample_shape(self) -> tuple[int, ...] | None:
        """(C, H, W) of one image once the sizes are known (`data_sizes` or `setup`), else None."""
        if self.channels is None or self.image_size is None:
            return None
        return (self.channels, self.image_size, self.image_size)

    def _ready(self) -> tuple[ImageTensorDataset, ImageTensorDataset]:
        if self.train_set is None or self.val_set is None:
            raise RuntimeError("ImageDataModule.setup() must run before its dataloaders are requested")
        return self.train_set, self.val_set

    def train_dataloader(self) -> DataLoader:
        """Shuffled, augmented training batches (the last partial batch dropped)."""
        train, _ = self._ready()
        if len(train) < self.batch_size:
            raise UserError(
                f"the training split has {len(train)} images, fewer than data.batch_size={self.batch_size}; "
                "lower the batch size or use more data"
            )
        return self.loader(train, train=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in a fixed order, without augmentation."""
        return self.loader(self._ready()[1], train=False)

    def test_dataloader(self) -> DataLoader:
        """The validation split (these sets have no separate test split)."""
        return self.val_dataloader()


def _check_args(
    source: str,
    path: str | None,
    download: bool,
    image_size: int | None,
    val_fraction: float,
    num_samples: int,
    augment_crop: int,
) -> None:
    """Validate ImageDataModule's argument values (no file is touched here)."""
    if source not in SOURCES:
        raise unknown("data.source", source, SOURCES)
    if download and source not in DOWNLOADS:
        hint = "; give its files with data.path instead" if source in NEEDS_PATH else "; it needs no download"
        raise UserError(
            f"data.download is not available for data.source={source}{hint} "
            f"(downloadable: {', '.join(DOWNLOADS)})"
        )
    if source in NEEDS_PATH and path is None:
        what = "folder with one sub-folder per class" if source == "folder" else "file"
        raise UserError(f"data.source={source} needs data.path (the {what} to read)")
    if path is not None and source not in NEEDS_PATH and source not in DOWNLOADS:
        raise UserError(
            f"data.path is not used with data.source={source} (built in); remove it or pick 'folder'"
        )
    if image_size is not None and image_size < 2:
        raise UserError(f"data.image_size must be >= 2 or null (native size), got {image_size}")
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"data.val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    if num_samples < 2:
        raise UserError(f"data.num_samples must be >= 2, got {num_samples}")
    if augment_crop < 0:
        raise UserError(f"data.augment_crop must be >= 0 pixels (0 = off), got {augment_crop}")
