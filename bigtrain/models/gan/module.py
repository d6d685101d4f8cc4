"""The DCGAN LightningModule: per batch a discriminator step, then a generator step, with manual optimization.

Pixel range. The generator ends in tanh and targets [-1, 1], i.e. 2 * pixel - 1 for pixels in [0, 1]. Real
images arrive normalised by the DataModule, x = (pixel - mean) / std; the module maps them into the same
[-1, 1] range with the DataModule's `mean` and `std` (read in `setup`). A DataModule without them is taken to
deliver images in [-1, 1] already. `sample()` and the logged grids return pixels in [0, 1].

Steps. Optimization is manual, so Lightning's `trainer.global_step` (and `trainer.max_steps`) counts the
optimizer steps of both nets: a batch advances it by 2 with `d_steps_per_g_step=1`. Each net's LR schedule
runs in its own optimizer steps. Lightning refuses `trainer.gradient_clip_val` under manual optimization;
use this module's `grad_clip` instead.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch.optim.lr_scheduler import LambdaLR

from bigtrain.errors import UserError
from bigtrain.lightning_compat import attached_trainer
from bigtrain.models.attached import attached_datamodule
from bigtrain.models.config import as_config, fill_from_data, resolve, to_dict
from bigtrain.models.gan.model import GAN, PRESETS, GANConfig, n_stages_for
from bigtrain.models.optim import OptimConfig, build_optimizer, lr_factor
from bigtrain.models.tensorboard import log_image
from bigtrain.models.train_metrics import log_train
from bigtrain.strategies import global_randn
from bigtrain.strategies.parallelize import parallelize


class DCGANModule(LightningModule):
    """DCGAN: a generator against a logit discriminator, non-saturating BCE-with-logits losses.

    Args:
        net: The generator and discriminator (a preset plus overrides).
        optim: The generator's optimizer and LR schedule (DCGAN's Adam: lr 2e-4, betas (0.5, 0.999)).
        d_optim: The discriminator's optimizer and LR schedule; None: the same as `optim`.
        d_steps_per_g_step: Discriminator steps (one per batch) for each generator step.
        grad_clip: Clip each net's gradient norm to this before its step; None: no clipping.
        num_samples: Images in the fixed-noise sample grid.
        noise_seed: Seed of the fixed sampling noise and of the validation noise.
        sample_every_n_epochs: Log the fixed-noise grid after every this many validation epochs.
    """

    # No single validation metric says which GAN checkpoint is best: `--checkpoint.best auto` keeps none.
    checkpoint_metric: tuple[str, str] | None = None

    def __init__(
        self,
        net: GANConfig = GANConfig(),  # noqa: B008 (never mutated: resolve() copies it)
        optim: OptimConfig = OptimConfig(lr=2e-4, betas=(0.5, 0.999)),  # noqa: B008
        d_optim: OptimConfig | None = None,
        d_steps_per_g_step: int = 1,
        grad_clip: float | None = None,
        num_samples: int = 64,
        noise_seed: int = 0,
        sample_every_n_epochs: int = 1,
    ) -> None:
        super().__init__()
        for name, value in [("d_steps_per_g_step", d_steps_per_g_step), ("num_samples", num_samples)]:
            if value < 1:
                raise UserError(f"model.{name} must be >= 1, got {value}")
        if sample_every_n_epochs < 1:
            raise UserError(f"model.sample_every_n_epochs must be >= 1, got {sample_every_n_epochs}")
        if grad_clip is not None and grad_clip <= 0:
            raise UserError(f"model.grad_clip must be > 0 or null, got {grad_clip}")
        self.automatic_optimization = False
        self.cfg = resolve(as_config(GANConfig, net), PRESETS)
        self.optim_cfg = as_config(OptimConfig, optim)
        self.d_optim_cfg = as_config(OptimConfig, d_optim) if d_optim is not None else self.optim_cfg
        self.d_steps_per_g_step = d_steps_per_g_step
        self.grad_clip = grad_clip
        self.noise_seed = noise_seed
        self.sample_every_n_epochs = sample_every_n_epochs
        # plain dicts so checkpoints never pickle classes
        self.save_hyperparameters(
            {
                "net": to_dict(self.cfg),
                "optim": to_dict(self.optim_cfg),
                "d_optim": to_dict(self.d_optim_cfg) if d_optim is not None else None,
                "d_steps_per_g_step": d_steps_per_g_step,
                "grad_clip": grad_clip,
                "num_samples": num_samples,
                "noise_seed": noise_seed,
                "sample_every_n_epochs": sample_every_n_epochs,
            }
        )
        # Its own generator, not the global RNG: every instance, rank and resumed run shows the same z.
        gen = torch.Generator().manual_seed(noise_seed)
        noise = torch.randn(num_samples, self.cfg.latent_dim, generator=gen)
        self.register_buffer("fixed_noise", noise, persistent=False)
        # The DataModule's (mean, std), which map real images into [-1, 1]; None: they are there already.
        self.data_norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None
        self.net: GAN | None = None

    def setup(self, stage: str) -> None:
        """Read the DataModule's normalisation (every fit/validate, also after load_from_checkpoint)."""
        data = attached_datamodule(self)
        mean, std = getattr(data, "mean", None), getattr(data, "std", None)
        self.data_norm = (tuple(mean), tuple(std)) if mean is not None and std is not None else None

    def configure_model(self) -> None:
        """Build the nets once, with channels and image size from the data."""
        if self.net is not None:
            return
        data = attached_datamodule(self)
        fill_from_data(self.cfg, data, {"channels": "channels", "image_size": "image_size"})
        self.cfg.n_stages = n_stages_for(self.cfg)
        self.hparams["net"] = to_dict(self.cfg)
        self.net = parallelize(self, lambda: GAN(self.cfg))  # the strategy's sharding plan

    # ---- losses -------------------------------------------------------------------------------------

    def to_tanh_range(self, x: torch.Tensor) -> torch.Tensor:
        """Real images as the DataModule normalised them -> the generator's range [-1, 1]."""
        if self.data_norm is None:
            return x
        mean = torch.tensor(self.data_norm[0], dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.data_norm[1], dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x * std + mean) * 2 - 1

    def _d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Discriminator loss (real -> 1, fake -> 0), mean sigmoid D(real) and mean sigmoid D(fake)."""
        d = self.net.discriminator
        real_logits, fake_logits = d(real), d(fake)  # (B,), (B,)
        bce = F.binary_cross_entropy_with_logits
        real_loss = bce(real_logits, torch.ones_like(real_logits))
        loss = real_loss + bce(fake_logits, torch.zeros_like(fake_logits))
        return loss, torch.sigmoid(real_logits).mean().detach(), torch.sigmoid(fake_logits).mean().detach()

    def _g_loss(self, fake: torch.Tensor) -> torch.Tensor:
        """Non-saturating generator loss: -log D(G(z))."""
        logits = self.net.discriminator(fake)  # (B,)
        return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))

    def _noise(self, n: int, device: torch.device, seed: int | None = None) -> torch.Tensor:
        """z ~ N(0, I), from the global RNG or, with a seed, from a generator of its own."""
        if seed is None:
            return torch.randn(n, self.cfg.latent_dim, device=device)
        gen = torch.Generator().manual_seed(seed)
        return torch.randn(n, self.cfg.latent_dim, generator=gen).to(device)

    def _train_noise(self, real: torch.Tensor) -> torch.Tensor:
        """z for this rank's share of the global batch: row for row what one process draws."""
        n, step = real.shape[0], self.global_step
        return global_randn(
            n, self.cfg.latent_dim, seed=self.noise_seed, step=step, trainer=attached_trainer(self)
        ).to(real.device)

    # ---- steps --------------------------------------------------------------------------------------

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        """One discriminator step and, every `d_steps_per_g_step` batches, one generator step."""
        real = self.to_tanh_range(batch[0])
        opt_g, opt_d = self.optimizers()
        sched_g, sched_d = self.lr_schedulers()
        # Counted by the D scheduler, whose state the checkpoint keeps, so a resumed run keeps the rhythm.
        g_turn = (sched_d.last_epoch + 1) % self.d_steps_per_g_step == 0
        with torch.set_grad_enabled(g_turn):
            # Made before any toggle so its graph reaches G's parameters for the G step.
            fake = self.net.generator(self._train_noise(real))

        self.toggle_optimizer(opt_d)
        d_loss, d_real, d_fake = self._d_loss(real, fake.detach())
        self._step(opt_d, sched_d, d_loss)
        self.untoggle_optimizer(opt_d)
        metrics = {"d_loss": d_loss, "d_real": d_real, "d_fake": d_fake}

        if g_turn:
            self.toggle_optimizer(opt_g)
            g_loss = self._g_loss(fake)  # through the just-updated D, as in PyTorch's DCGAN example
            self._step(opt_g, sched_g, g_loss)
            self.untoggle_optimizer(opt_g)
            metrics["g_loss"] = g_loss
        self._log("train", metrics, real.shape[0])

    def _step(self, opt, sched, loss: torch.Tensor) -> None:
        """Backward, optional clipping, optimizer and LR-schedule step for one net."""
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if self.grad_clip is not None:
            self.clip_gradients(opt, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")
        opt.step()
        sched.step()

    def _shared_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int, stage: str) -> None:
        """Both losses on held-out real images, with noise that is the same every epoch; no steps."""
        real = self.to_tanh_range(batch[0])
        seed = self.noise_seed + 1 + batch_idx * self.trainer.world_size + self.global_rank
        fake = self.net.generator(self._noise(real.shape[0], real.device, seed))
        d_loss, d_real, d_fake = self._d_loss(real, fake)
        metrics = {"d_loss": d_loss, "g_loss": self._g_loss(fake), "d_real": d_real, "d_fake": d_fake}
        self._log(stage, metrics, real.shape[0])

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        """Validation losses and discriminator outputs."""
        self._shared_step(batch, batch_idx, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        """Test losses and discriminator outputs."""
        self._shared_step(batch, batch_idx, "test")

    def _log(self, stage: str, metrics: dict[str, torch.Tensor], batch_size: int) -> None:
        # Training metrics per step (their own names, no _step/_epoch suffixes); held-out ones per epoch.
        losses = [name for name in metrics if name.endswith("loss")]
        if stage == "train":
            log_train(self, metrics, batch_size)
            return
        for name, value in metrics.items():
            self.log(
                f"{stage}/{name}",
                value.detach(),
                sync_dist=True,
                prog_bar=name in losses,
                batch_size=batch_size,
            )

    # ---- samples ------------------------------------------------------------------------------------

    @torch.no_grad()
    def render(self, z: torch.Tensor) -> torch.Tensor:
        """G(z) as pixels in [0, 1], with the generator in eval mode (BatchNorm's running statistics)."""
        g = self.net.generator
        was_training = g.training
        g.eval()
        try:
            return ((g(z.to(self.device)) + 1) / 2).clamp(0, 1)  # (N, C, H, W)
        finally:
            g.train(was_training)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n generated images (n, C, H, W) with pixels in [0, 1]; z from `generator` if given."""
        device = generator.device if generator is not None else self.device
        return self.render(torch.randn(n, self.cfg.latent_dim, generator=generator, device=device))

    def on_validation_epoch_end(self) -> None:
        """Log G(fixed_noise) as one image grid (all ranks render: G's forward is collective under FSDP2)."""
        if self.trainer.sanity_checking or (self.current_epoch + 1) % self.sample_every_n_epochs:
            return
        images = self.render(self.fixed_noise)
        log_image(self, "samples/fixed_noise", images, nrow=max(1, math.isqrt(images.shape[0])))

    # ---- optimizers ---------------------------------------------------------------------------------

    def configure_optimizers(self):
        """AdamW (or SGD) for G and for D, each with its warm-up + cosine schedule in its own steps."""
        d_steps = self._batches_in_run()
        g_steps = max(1, math.ceil(d_steps / self.d_steps_per_g_step))
        opts, scheds = [], []
        for net, cfg, total in [
            (self.net.generator, self.optim_cfg, g_steps),
            (self.net.discriminator, self.d_optim_cfg, d_steps),
        ]:
            opt = build_optimizer(list(net.parameters()), cfg)
            opts.append(opt)
            scheds.append(LambdaLR(opt, lambda step, cfg=cfg, total=total: lr_factor(step, cfg, total)))
        return opts, scheds

    def _batches_in_run(self) -> int:
        """Training batches the run will take (= D steps): the tighter of max_epochs and max_steps."""
        trainer = attached_trainer(self)
        if trainer is None:
            return 1
        trainer.estimated_stepping_batches  # noqa: B018 (sets up the train loader so its length is known)
        limits = []
        if trainer.max_steps != -1:
            k = self.d_steps_per_g_step  # a batch takes 1 D step and 1/k G steps of global_step
            limits.append(math.ceil(trainer.max_steps * k / (k + 1)))
        if trainer.max_epochs not in (None, -1) and math.isfinite(trainer.num_training_batches):
            limits.append(trainer.num_training_batches * max(trainer.max_epochs, 1))
        return max(1, int(min(limits))) if limits else 1
