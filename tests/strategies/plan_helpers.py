"""The sharding plan tests' fixture (a fake world), networks, and what they ask of a prepared network.

Not a conftest.py: the cluster tests import theirs as `conftest`, which a second one would shadow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.distributed as dist
from lightning.pytorch import LightningModule, Trainer
from torch import nn
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor
from torch.testing._internal.distributed.fake_pg import FakeStore

from bigtrain.models.config import resolve
from bigtrain.models.gan import GAN, GANConfig
from bigtrain.models.gan import PRESETS as GAN_PRESETS
from bigtrain.models.transformer import GPT, GPTConfig
from bigtrain.models.transformer import PRESETS as GPT_PRESETS
from bigtrain.strategies.fsdp import FSDP

Attach = Callable[..., LightningModule]


def fake_world() -> Iterator[Attach]:
    """Yields attach(strategy, world): a module on a Trainer whose strategy is set up as rank 0 of `world`;
    destroys the process group after (each test module's `attach` fixture yields from this)."""

    def make(strategy: object, world: int) -> LightningModule:
        dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=world)
        trainer = Trainer(
            strategy=strategy, accelerator="cpu", devices=world, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False,
        )  # fmt: skip
        module = LightningModule()
        module.trainer = trainer
        if isinstance(strategy, FSDP):
            strategy.connect(module)
            strategy.setup_environment()  # the device mesh, over the fake group initialised above
        return module

    yield make
    if dist.is_initialized():
        dist.destroy_process_group()


def gpt() -> GPT:
    """The tiny GPT: 2 blocks, 2 heads, width 64, 11 tokens, 16 positions."""
    return GPT(resolve(GPTConfig(preset="tiny", block_size=16, vocab_size=11), GPT_PRESETS))


def gan() -> GAN:
    """The tiny DCGAN on 16x16 one-channel images: generator and discriminator with blocks of their own."""
    return GAN(resolve(GANConfig(image_size=16, channels=1), GAN_PRESETS))


class Stack(nn.Module):
    """A network with blocks but no `init_weights()`: two Linear + BatchNorm blocks."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        pairs = (nn.Sequential(nn.Linear(width, width), nn.BatchNorm1d(width)) for _ in "ab")
        self.layers = nn.ModuleList(pairs)

    def blocks(self) -> list[nn.Module]:
        """Each Linear + BatchNorm pair."""
        return list(self.layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, width) -> (B, width)."""
        for layer in self.layers:
            x = layer(x)
        return x


def units(net: nn.Module) -> set[str]:
    """Names of the modules that became FSDP units ('' is the root)."""
    return {name for name, m in net.named_modules() if isinstance(m, FSDPModule)}


def local_shapes(net: nn.Module) -> dict[str, tuple[int, ...]]:
    """Each parameter's shape on this rank."""
    params = net.named_parameters()
    return {n: tuple(p.to_local().shape if isinstance(p, DTensor) else p.shape) for n, p in params}


def is_compiled(module: nn.Module) -> bool:
    """Whether `module.compile()` compiled this module in place (torch has no public way to ask)."""
    return getattr(module, "_compiled_call_impl", None) is not None


def recording(factory: Callable[[], nn.Module], devices: list[str]) -> Callable[[], nn.Module]:
    """The factory, noting the default device of each call (meta when built for sharded initialisation)."""

    def build() -> nn.Module:
        devices.append(torch.empty(()).device.type)
        return factory()

    return build


def resnet() -> nn.Module:
    """The tiny ResNet on one-channel images (BatchNorm in its stem, blocks and shortcuts)."""
    from bigtrain.models.cnn import PRESETS, ResNet, ResNetConfig

    return ResNet(resolve(ResNetConfig(in_channels=1, num_classes=10), PRESETS))


def norms(net: nn.Module) -> dict[str, nn.Module]:
    """The BatchNorm layers by name."""
    return {n: m for n, m in net.named_modules() if isinstance(m, nn.BatchNorm2d)}


def dtypes_in_forward(module: nn.Module) -> dict[str, torch.dtype]:
    """Filled by the module's next forward: the dtype of each of its parameters while it computes."""
    seen: dict[str, torch.dtype] = {}
    module.register_forward_pre_hook(lambda m, _: seen.update({n: p.dtype for n, p in m.named_parameters()}))
    return seen
