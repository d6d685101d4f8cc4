"""ImageDataModule: attributes, splits, normalisation, seeded augmentation across workers and ranks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bigtrain.data.images import ImageDataModule
from bigtrain.errors import UserError


def batches(loader, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first n batches of a loader."""
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == n:
            break
    return out


def rows(x: torch.Tensor, y: torch.Tensor) -> list[bytes]:
    """Each sample of a batch as bytes, sorted: a batch compared as a multiset of samples."""
    return sorted(x[i].numpy().tobytes() + y[i].numpy().tobytes() for i in range(len(y)))


class TwoRanks(ImageDataModule):
    """The module as rank `rank` of a fake 2-process world."""

    def __init__(self, rank: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.rank = rank

    def _ranks(self) -> tuple[int, int]:
        return 2, self.rank


# ------------------------------------------------------------------------------------------- glyphs


def test_glyphs_setup_attributes_and_batches():
    dm = ImageDataModule(num_samples=500, batch_size=32)
    dm.setup("fit")
    assert (dm.num_classes, dm.channels, dm.image_size) == (10, 1, 16)
    assert len(dm.train_set) == 400 and len(dm.val_set) == 100
    assert isinstance(dm.mean, tuple) and isinstance(dm.std, tuple) and len(dm.mean) == 1
    assert dm.classes == [str(d) for d in range(10)]
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 1, 16, 16) and x.dtype == torch.float32
    assert y.shape == (32,) and y.dtype == torch.long
    # The whole training split, un-augmented, is normalised to mean 0 and std 1.
    every = torch.stack([dm.train_set[i][0] for i in range(len(dm.train_set))])
    assert abs(every.mean().item()) < 1e-4 and abs(every.std().item() - 1) < 1e-2
    assert len(list(dm.val_dataloader())) == 4 and len(list(dm.test_dataloader())) == 4


def test_glyph_image_size_and_seeded_split():
    a = ImageDataModule(num_samples=100, image_size=24, seed=1)
    b = ImageDataModule(num_samples=100, image_size=24, seed=1)
    c = ImageDataModule(num_samples=100, image_size=24, seed=2)
    for dm in (a, b, c):
        dm.setup("fit")
    assert a.image_size == 24 and a.train_set.x.shape[1:] == (1, 24, 24)
    assert torch.equal(a.train_set.x, b.train_set.x) and torch.equal(a.val_set.y, b.val_set.y)
    assert not torch.equal(a.train_set.x, c.train_set.x)


def test_same_batches_for_any_num_workers():
    kwargs = dict(num_samples=160, batch_size=16, augment_crop=2, augment_flip=True, seed=3)
    got = []
    for workers in (0, 2):
        dm = ImageDataModule(num_workers=workers, **kwargs)
        dm.setup("fit")
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(1)
        got.append(batches(loader, 3))
    for (x0, y0), (x2, y2) in zip(got[0], got[1], strict=True):
        assert torch.equal(x0, x2) and torch.equal(y0, y2)


def test_two_ranks_together_see_the_single_process_batch():
    kwargs = dict(num_samples=200, batch_size=8, augment_crop=3, augment_flip=True, seed=5)
    single = ImageDataModule(**kwargs)
    ranks = [TwoRanks(r, **kwargs) for r in (0, 1)]
    loaders = []
    for dm in (single, *ranks):
        dm.setup("fit")
        loaders.append(dm.train_dataloader())
        loaders[-1].sampler.set_epoch(2)
    assert ranks[0].per_device_batch_size == 4
    steps = [batches(loader, 5) for loader in loaders]
    for step in range(5):
        (x, y), (x0, y0), (x1, y1) = (s[step] for s in steps)
        assert rows(x, y) == rows(torch.cat([x0, x1]), torch.cat([y0, y1]))


def test_augmentation_is_a_function_of_seed_epoch_and_index():
    dm = ImageDataModule(num_samples=50, augment_crop=4, augment_flip=True, normalize=False)
    dm.setup("fit")
    data, n = dm.train_set, len(dm.train_set)
    assert torch.equal(data[n + 7][0], data[n + 7][0])
    assert any(not torch.equal(data[i][0], data[n + i][0]) for i in range(10))
    plain = dm.val_set[3][0]
    assert torch.equal(plain, dm.val_set[3][0]) and torch.equal(plain, dm.val_set[2 * len(dm.val_set) + 3][0])
    # Cropping a zero-padded image keeps the pixel values; it only moves them.
    assert torch.isin(data[n + 1][0], torch.cat([data.x[1].flatten().float() / 255, torch.zeros(1)])).all()


def test_non_square_npz_resized_and_normalisation_stats(tmp_path):
    path = tmp_path / "d.npz"
    x = np.zeros((4, 3, 3, 5), np.uint8)  # (N, C, H, W): the last axis is not 1 or 3
    x[:2, 1], x[2:, 1] = 51, 153
    np.savez(path, x=x, y=np.array([0, 1, 0, 1]))
    with pytest.raises(UserError, match="3x5"):
        ImageDataModule(source="npz", path=str(path)).setup("fit")
    for_stats = tmp_path / "s.npz"
    x = np.stack([np.zeros((3, 4, 4)), np.ones((3, 4, 4))]).astype(np.float32)
    x[:, 1] = 0.25
    np.savez(for_stats, x=x, y=np.array([0, 1]), x_val=np.full_like(x, 0.9), y_val=np.array([0, 1]))
    dm = ImageDataModule(source="npz", path=str(for_stats), batch_size=2)
    dm.setup("fit")
    # Measured on the training split only; a constant channel keeps std 1 instead of dividing by zero.
    assert dm.mean == pytest.approx((0.5, 0.25, 0.5)) and dm.std == pytest.approx((0.5, 1.0, 0.5))
    batch, _ = next(iter(dm.train_dataloader()))
    assert batch[:, 0].unique().tolist() == [-1.0, 1.0] and batch[:, 1].unique().tolist() == [0.0]
    batch, _ = next(iter(dm.val_dataloader()))
    assert batch[:, 0].flatten().tolist() == pytest.approx([0.8] * 32)
    raw = ImageDataModule(source="npz", path=str(for_stats), batch_size=2, normalize=False)
    raw.setup("fit")
    assert raw.mean == (0.0, 0.0, 0.0) and raw.std == (1.0, 1.0, 1.0)
    resized = ImageDataModule(source="npz", path=str(path), image_size=4, batch_size=1)
    resized.setup("fit")
    assert resized.image_size == 4 and resized.train_set.x.shape[1:] == (3, 4, 4)


# ---------------------------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(source="pictures"), "unknown data.source 'pictures'"),
        (dict(val_fraction=0.0), "val_fraction"),
        (dict(val_fraction=1.0), "val_fraction"),
        (dict(source="folder"), "needs data.path"),
        (dict(source="digits", path="x", download=True), "give its files with data.path"),
        (dict(download=True), "needs no download"),
        (dict(image_size=1), "image_size"),
        (dict(augment_crop=-1), "augment_crop"),
        (dict(num_samples=1), "num_samples"),
        (dict(batch_size=0), "batch_size"),
    ],
)
def test_bad_arguments_fail_in_init(kwargs, message):
    with pytest.raises(UserError, match=message):
        ImageDataModule(**kwargs)


def test_nothing_is_read_in_init_and_batch_larger_than_data(tmp_path):
    dm = ImageDataModule(source="npz", path=str(tmp_path / "later.npz"), batch_size=64)
    assert dm.num_classes is None and dm.mean is None
    small = ImageDataModule(num_samples=20, batch_size=32)
    small.setup("fit")
    with pytest.raises(UserError, match="fewer than data.batch_size=32"):
        small.train_dataloader()


def test_fits_with_a_lightning_trainer():
    from lightning.pytorch import LightningModule, Trainer

    class Probe(LightningModule):
        def configure_model(self) -> None:
            dm = self.trainer.datamodule
            self.net = torch.nn.Linear(dm.channels * dm.image_size**2, dm.num_classes)

        def training_step(self, batch, _):
            x, y = batch
            return torch.nn.functional.cross_entropy(self.net(x.flatten(1)), y)

        def validation_step(self, batch, _):
            self.log("val/loss", self.training_step(batch, _))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = ImageDataModule(num_samples=200, batch_size=16, augment_crop=1)
    trainer = Trainer(accelerator="cpu", max_steps=4, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    model = Probe()
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 4
    (metrics,) = trainer.validate(model, datamodule=dm, verbose=False)
    assert np.isfinite(metrics["val/loss"])


def test_data_sizes_without_reading_the_data(tmp_path):
    """`data_sizes()` knows the fixed sources' sizes and counts a folder's classes: no file is read."""
    cifar = ImageDataModule(source="cifar10", path=str(tmp_path / "absent"))
    assert cifar.data_sizes() == {"channels": 3, "image_size": 32, "num_classes": 10}
    assert cifar.sample_shape() == (3, 32, 32) and cifar.train_set is None
    mnist = ImageDataModule(source="mnist", path=str(tmp_path / "absent"), image_size=32)
    assert mnist.data_sizes() == {"channels": 1, "image_size": 32, "num_classes": 10}
    for name in ("cat", "dog", "owl"):
        (tmp_path / "pets" / name).mkdir(parents=True)
    folder = ImageDataModule(source="folder", path=str(tmp_path / "pets"), image_size=64)
    assert folder.data_sizes() == {"channels": 3, "image_size": 64, "num_classes": 3}
    missing = ImageDataModule(source="folder", path=str(tmp_path / "none"), image_size=64)
    with pytest.raises(UserError, match="not a folder with one sub-folder per class"):
        missing.data_sizes()


def test_data_sizes_reads_the_data_when_it_must():
    glyphs = ImageDataModule(source="glyphs", num_samples=16)
    assert glyphs.sample_shape() is None
    sizes = glyphs.data_sizes()
    assert glyphs.train_set is not None
    assert glyphs.sample_shape() == (sizes["channels"], sizes["image_size"], sizes["image_size"])
