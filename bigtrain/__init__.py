"""bigtrain: distributed training on PyTorch Lightning."""

__version__ = "0.1.0"
