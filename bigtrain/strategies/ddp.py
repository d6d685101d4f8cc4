"""Data parallel (DDP) and single-device strategies with bigtrain's options and defaults."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import torch
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

from bigtrain.errors import UserError
from bigtrain.lightning_compat import set_ddp_option
from bigtrain.strategies.fsdp import DEFAULT_TIMEOUT_S


class DDP(DDPStrategy):
    """Distributed data parallel: a full replica per rank, gradients averaged after each backward.

    Args:
        compile: `torch.compile` each block of the family's sharding plan.
        sync_batchnorm: Normalise over the whole global batch in BatchNorm layers (so N ranks train exactly as
            one process would); False: each rank normalises over its own share.
        find_unused_parameters: Let DDP tolerate parameters that get no gradient in a backward (slower); None:
            only for modules with manual optimization (the GAN steps each network on its own).
        timeout_s: Seconds a collective may wait for the other ranks before the job fails.
    """

    def __init__(
        self,
        compile: bool = False,
        sync_batchnorm: bool = True,
        find_unused_parameters: bool | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if timeout_s <= 0:
            raise UserError(f"trainer.strategy.timeout_s must be > 0, got {timeout_s}")
        unused = bool(find_unused_parameters)
        super().__init__(timeout=timedelta(seconds=timeout_s), find_unused_parameters=unused)
        self.compile = compile
        self.sync_batchnorm = sync_batchnorm
        self.find_unused_parameters = find_unused_parameters
        self.timeout_s = timeout_s

    def setup(self, trainer: Any) -> None:  # noqa: D102
        if self.find_unused_parameters is None:
            module = trainer.lightning_module
            set_ddp_option(self, "find_unused_parameters", not module.automatic_optimization)
        super().setup(trainer)

    def load_model_state_dict(self, checkpoint: Any, strict: bool = True) -> None:  # noqa: D102
        from bigtrain.checkpoints.fits import check_fits, shapes

        check_fits(shapes(checkpoint["state_dict"]), self.lightning_module, strict=strict)
        super().load_model_state_dict(checkpoint, strict=strict)

    def __repr__(self) -> str:
        return f"DDP(compile={self.compile}, sync_batchnorm={self.sync_batchnorm})"


class Single(SingleDeviceStrategy):
    """One process on one device: the trainer's accelerator's first device unless `device` names another.

    Args:
        device: A device such as `cuda:1`; None: the first device `trainer.accelerator` gives.
        compile: `torch.compile` each block of the family's sharding plan.
    """

    def __init__(self, device: str | None = None, compile: bool = False) -> None:
        super().__init__(device=device or "cpu")
        self.device = device
        self.compile = compile
        self._parallel_devices: list[torch.device] | None = None

    # Lightning's accelerator connector fills `parallel_devices` of any strategy that has the attribute: that
    # is how this strategy learns the trainer's device without the user naming it twice.
    @property
    def parallel_devices(self) -> list[torch.device] | None:
        """The devices the trainer's accelerator and `devices` flag chose."""
        return self._parallel_devices

    @parallel_devices.setter
    def parallel_devices(self, devices: list[torch.device] | None) -> None:
        if devices is not None and len(devices) > 1:
            raise UserError(
                f"trainer.strategy single runs one process on one device but trainer.devices gives "
                f"{len(devices)}; use --trainer.devices 1, or the strategy ddp or fsdp"
            )
        self._parallel_devices = devices

    @property
    def root_device(self) -> torch.device:  # noqa: D102
        if self.device is None and self._parallel_devices:
            return self._parallel_devices[0]
        return super().root_device

    def load_model_state_dict(self, checkpoint: Any, strict: bool = True) -> None:  # noqa: D102
        from bigtrain.checkpoints.fits import check_fits, shapes

        check_fits(shapes(checkpoint["state_dict"]), self.lightning_module, strict=strict)
        super().load_model_state_dict(checkpoint, strict=strict)

    def __repr__(self) -> str:
        return f"Single(device={self.root_device})"
