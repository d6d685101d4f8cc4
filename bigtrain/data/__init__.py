"""LightningDataModules: images and text, from built-in data that needs no download to the user's files."""

from bigtrain.data.images import ImageDataModule
from bigtrain.data.text import TextDataModule

__all__ = ["ImageDataModule", "TextDataModule"]
