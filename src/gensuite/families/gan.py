"""Generative adversarial network (Goodfellow et al. 2014) over the parts zoo, with manual optimisation.

The generator *is* a decoder of the zoo (``model/decoder=``): latent ``z ~ N(0, I)`` -> raw images -> ``tanh``,
so it draws images in [-1, 1]; real images are mapped from [0, 1] to [-1, 1] before the discriminator sees
them, and `sample` maps back. The discriminator (``model/discriminator=``) is an encoder body plus a head; the
loss (``model/loss=``) is a small object from `gensuite.families.gan_losses`.

Step rule — one training step is one generator update:
    each batch gives the discriminator one update; every ``n_critic``-th batch of an epoch (and only then) the
    generator is updated too (Gulrajani et al. 2017, Alg. 1: every critic update sees fresh real data).
    ``trainer.global_step`` counts generator updates only, so ``trainer.max_steps``, checkpoints'
    ``every_n_train_steps`` and EMA updates (`gensuite.callbacks.ema.EMA`, once per global step) are all in
    generator updates. With ``n_critic=1`` that is also one step per batch. (Lightning counts every
    ``optimizer.step()`` of manual optimisation; the discriminator's steps are taken without that count.)
    TensorBoard's x-axis for scalars stays Lightning's batch counter.

DDP without ``find_unused_parameters``:
    DDP's reducer expects a gradient for every parameter in every backward pass. `toggle_optimizer` (which
    switches ``requires_grad`` off for the other network) breaks that, so it is not used. Instead both networks
    stay trainable: the generator update's backward reaches the discriminator's weights anyway (their gradient
    is thrown away by the discriminator's next ``zero_grad``), and the discriminator update, whose fakes are
    detached, adds ``0 * sum(generator weights)`` so the generator's weights get a (zero) gradient. Each
    optimiser zeroes its gradients right before its own backward and steps only its own network.

Noise under DDP: every rank has the same global RNG after ``seed_everything``, so each draws the noise of the
whole global batch and keeps its own slice (`rank_noise`); the global RNG (saved in checkpoints) stays in sync.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn

from gensuite import lightning_compat
from gensuite.contracts import attached_trainer, to_signed, to_unit
from gensuite.errors import ConfigError
from gensuite.families.base import GenerativeModule, NonFiniteLossError, Panel
from gensuite.families.gan_losses import AdversarialLoss
from gensuite.families.options import SamplingOptions, knob
from gensuite.nets.discriminators import uses_batch_statistics


@dataclasses.dataclass(frozen=True)
class GANOptions(SamplingOptions):
    """The GAN's sampling knob (``sampling.truncation=``)."""

    truncation: float | None = knob(
        None,
        "the truncation trick (Brock et al. 2019): latent entries beyond +-t are redrawn, trading diversity for "
        "fidelity (null: none)",
    )

    def check(self, model) -> None:
        if self.truncation is not None and self.truncation <= 0:
            raise ConfigError(
                f"truncation must be > 0 or null, got {self.truncation}",
                keys=("sampling.truncation",),
                fix="e.g. sampling.truncation=0.7 (smaller: less diverse, cleaner samples)",
            )


def grad_norm(module: nn.Module) -> torch.Tensor:
    """The 2-norm of all gradients of ``module`` together (0 when none)."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.detach()) for g in grads]))


class GAN(GenerativeModule):
    """Adversarial training of a decoder (generator) against a discriminator.

    Args:
        decoder: ``(B, latent_dim)`` [+ labels ``(B,)``] -> raw images ``(B, C, H, W)``; ``tanh`` maps them to [-1, 1].
        discriminator: images in [-1, 1] [+ labels] -> logits ``(B,)``.
        loss: an `AdversarialLoss` (non-saturating, hinge, WGAN-GP; R1 as an option).
        latent_dim: size of z.
        num_classes: 0 (unconditional) or the number of classes of a class-conditional GAN: the labels go into
            the decoder's class embedding and the projection discriminator; both must be built with it.
        n_critic: discriminator updates per generator update (one batch each).
        optimizer: partial of the generator's optimiser; ``optimizer_d``: of the discriminator's (separate
            learning rates: TTUR, Heusel et al. 2017). ``scheduler``: partial applied to each of them, stepped
            once per generator update.
        clip_grad_g, clip_grad_d: gradient-norm clipping per network (None: off), through Lightning's
            ``clip_gradients`` (``trainer.gradient_clip_val`` does not apply to manual optimisation).
    """

    family = "gan"
    Options = GANOptions

    def __init__(
        self,
        decoder: nn.Module,
        discriminator: nn.Module,
        loss: AdversarialLoss,
        latent_dim: int = 64,
        num_classes: int = 0,
        n_critic: int = 1,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        optimizer_d: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler=None,
        clip_grad_g: float | None = None,
        clip_grad_d: float | None = None,
    ):
        super().__init__(optimizer, scheduler, num_classes)
        self.automatic_optimization = False
        self._check_parts(decoder, discriminator, loss, latent_dim)
        if n_critic < 1:
            raise ConfigError(f"n_critic must be >= 1, got {n_critic}", keys=("n_critic",), fix="n_critic=1")
        for key, value in {"clip_grad_g": clip_grad_g, "clip_grad_d": clip_grad_d}.items():
            if value is not None and value <= 0:
                raise ConfigError(f"{key} must be > 0 or null, got {value}", keys=(key,), fix=f"{key}=null")
        self.decoder, self.discriminator, self.loss = decoder, discriminator, loss
        self.latent_dim, self.n_critic = latent_dim, n_critic
        self.optimizer_d_factory = optimizer_d
        self.clip_grad_g, self.clip_grad_d = clip_grad_g, clip_grad_d
        self.image_shape = (decoder.out_channels, decoder.image_size, decoder.image_size)

    def _check_parts(self, decoder, discriminator, loss, latent_dim: int) -> None:
        if latent_dim <= 0:
            raise ConfigError(f"latent_dim must be > 0, got {latent_dim}", keys=("latent_dim",))
        if decoder.latent_dim != latent_dim:
            raise ConfigError(
                f"decoder.latent_dim={decoder.latent_dim} but latent_dim={latent_dim}",
                keys=("decoder.latent_dim", "latent_dim"),
                fix="set only model.latent_dim (the decoder reads it through ${model.latent_dim})",
            )
        for gen_key, dis_key in (("out_channels", "in_channels"), ("image_size", "image_size")):
            a, b = getattr(decoder, gen_key), getattr(discriminator, dis_key)
            if a != b:
                raise ConfigError(
                    f"decoder.{gen_key}={a} but discriminator.{dis_key}={b}: the discriminator must read the "
                    "images the generator makes",
                    keys=(f"decoder.{gen_key}", f"discriminator.body.{dis_key}"),
                    fix="leave both to the data config (${data.channels}, ${data.image_size})",
                )
        self.check_part_classes(decoder, "decoder")
        self.check_part_classes(discriminator, "discriminator")
        if loss.has_gradient_penalty and uses_batch_statistics(discriminator):
            raise ConfigError(
                f"{type(loss).__name__} penalises the gradient of each example's logit, but the discriminator "
                "uses batch norm, which makes each logit depend on the whole batch (Gulrajani et al. 2017, sec. 4)",
                keys=("discriminator.body.norm", "loss"),
                fix="model.discriminator.body.norm=layer (or none), or a loss without a gradient penalty",
            )

    # -- generation ------------------------------------------------------------------------------------------
    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Latents ``(B, latent_dim)`` [+ labels ``(B,)``] -> images in [-1, 1], ``(B, C, H, W)``."""
        raw = self.decoder(z, labels) if self.conditional else self.decoder(z)
        return torch.tanh(raw)

    @torch.no_grad()
    def sample(self, n: int, generator=None, labels=None, options: GANOptions | None = None) -> torch.Tensor:
        """``n`` images in [0, 1], ``(n, C, H, W)``; a conditional GAN takes ``labels`` (default: balanced)."""
        z = self.latents(n, generator, self.options_or_default(options).truncation)
        return to_unit(self.generate(z, self.labels_for(n, labels)), clamp=False)

    def latents(
        self, n: int, generator: torch.Generator | None = None, truncation: float | None = None
    ) -> torch.Tensor:
        """``(n, latent_dim)`` draws of the prior N(0, I), truncated to [-t, t] when ``truncation`` is set."""
        z = torch.randn(n, self.latent_dim, generator=generator, device=self.device)
        if truncation is not None:  # a normal truncated to [-t, t] (the same draws as redrawing outliers)
            torch.nn.init.trunc_normal_(z, 0.0, 1.0, -truncation, truncation, generator=generator)
        return z

    @torch.no_grad()
    def panels(self, batch, generator=None, n: int = 64) -> dict[str, Panel]:
        """Fixed-noise samples (the Evaluation callback seeds ``generator`` alike every epoch) and, for a
        conditional GAN, one row per class with the same noise in every row."""
        out: dict[str, Panel] = {"samples": self.sample(n, generator)}
        if self.conditional:
            out["class_grid"] = self.class_grid(generator, same_noise=True)  # (rows, cols, C, H, W)
        return out

    # -- objectives ------------------------------------------------------------------------------------------
    def _inputs(self, batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        return to_signed(batch[0]), self.batch_labels(batch)  # the generator's range

    def losses(self, batch) -> dict[str, torch.Tensor]:
        """Both objectives on a batch, without penalties or updates (validation): held-out real images against
        fresh fakes. ``loss`` is the discriminator's loss: a held-out value far above the training one means the
        discriminator memorises the training images."""
        real, labels = self._inputs(batch)
        z = self.rank_noise(torch.randn, len(real), self.latent_dim)
        fake = self.generate(z, labels)
        real_logits = self.discriminator(real, labels)
        fake_logits = self.discriminator(fake, labels)
        loss_d = self.loss.discriminator_loss(real_logits, fake_logits)
        return {
            "loss": loss_d,
            "loss_d": loss_d,
            "loss_g": self.loss.generator_loss(fake_logits),
            "d_real": real_logits.mean(),
            "d_fake": fake_logits.mean(),
        }

    # -- optimisation ----------------------------------------------------------------------------------------
    def configure_optimizers(self):
        opt_g = self.build_optimizer(self.decoder.parameters())
        opt_d = self.build_optimizer(self.discriminator.parameters(), self.optimizer_d_factory)
        if self.scheduler_factory is None:
            return [opt_g, opt_d]
        return [opt_g, opt_d], [self.scheduler_factory(opt_g), self.scheduler_factory(opt_d)]

    def configure_callbacks(self):
        # the first hook Lightning calls with the trainer attached, before it checks the loop configuration
        # itself: the run's settings are checked here so that a user reads which setting to change
        trainer = attached_trainer(self)
        if trainer is not None:
            self._check_run(trainer)
        return []

    def _check_run(self, trainer) -> None:
        if trainer.gradient_clip_val:
            raise ConfigError(
                f"trainer.gradient_clip_val={trainer.gradient_clip_val}: Lightning's automatic clipping does not "
                "apply to the GAN's manual optimisation",
                fix="trainer.gradient_clip_val=null model.clip_grad_g=1.0 model.clip_grad_d=1.0",
            )
        # that a conditional GAN has labelled data is checked for every family in one place (gensuite.train)

    def check_finite(self, loss: torch.Tensor, name: str = "loss") -> None:
        try:
            super().check_finite(loss, name)
        except NonFiniteLossError as err:
            err.fix = (
                "lower the learning rates (model.optimizer.lr=..., model.optimizer_d.lr=...), clip gradients "
                "(model.clip_grad_g=1.0 model.clip_grad_d=1.0), try spectral norm "
                "(model.discriminator.spectral_norm=true), or resume from the last checkpoint (ckpt_path=last)"
            )
            raise

    def _update(self, opt, loss: torch.Tensor, network: nn.Module, clip: float | None, counted: bool) -> torch.Tensor:
        """zero_grad, backward, (clip), step of one network; returns its gradient norm before clipping."""
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        norm = grad_norm(network)
        if clip is not None:
            self.clip_gradients(opt, gradient_clip_val=clip, gradient_clip_algorithm="norm")
        if counted:
            opt.step()
        else:
            # the step rule: only generator updates advance trainer.global_step (Lightning has no public switch)
            lightning_compat.step_uncounted(opt)
        return norm

    def fakes(self, n: int, labels: torch.Tensor | None, grad: bool) -> torch.Tensor:
        """``n`` generated images in [-1, 1] from fresh noise (this rank's share), with or without a graph."""
        with torch.set_grad_enabled(grad):
            return self.generate(self.rank_noise(torch.randn, n, self.latent_dim), labels)

    def discriminator_step(
        self, opt, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        """One discriminator update on real images and (detached) fakes; returns detached diagnostics."""
        n = len(real)
        fake = fake.detach()
        if self.loss.needs_real_grad:
            real = real.detach().requires_grad_(True)  # R1 differentiates the real logits w.r.t. the images
        real_logits = self.discriminator(real, labels)
        fake_logits = self.discriminator(fake, labels)
        loss_d = self.loss.discriminator_loss(real_logits, fake_logits)
        eps = self.rank_noise(torch.rand, n, 1, 1, 1)
        penalties = self.loss.penalties(lambda v: self.discriminator(v, labels), real, real_logits, fake, eps=eps)
        total = loss_d + sum(penalties.values())
        self.check_finite(total, "loss_d")
        # zero-valued term that gives every generator weight a gradient, so DDP sees all parameters used
        keepalive = sum(p.sum() for p in self.decoder.parameters()) * 0.0
        norm = self._update(opt, total + keepalive, self.discriminator, self.clip_grad_d, counted=False)
        stats = {
            "loss_d": loss_d.detach(),
            "d_real": real_logits.detach().mean(),
            "d_fake": fake_logits.detach().mean(),
            "grad_norm_d": norm,
        }
        stats.update({k: v.detach() for k, v in penalties.items()})
        return stats

    def generator_step(self, opt, fake: torch.Tensor, labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """One generator update through the (just updated) discriminator; ``fake`` carries the generator's graph."""
        loss_g = self.loss.generator_loss(self.discriminator(fake, labels))
        self.check_finite(loss_g, "loss_g")
        norm = self._update(opt, loss_g, self.decoder, self.clip_grad_g, counted=True)
        return {"loss_g": loss_g.detach(), "grad_norm_g": norm}

    def training_step(self, batch, batch_idx):
        real, labels = self._inputs(batch)
        opt_g, opt_d = self.optimizers()
        update_g = (batch_idx + 1) % self.n_critic == 0
        # one batch of fakes serves both updates (as in the DCGAN reference loop): the discriminator sees it
        # detached, the generator's update back-propagates through it, which saves a generator forward pass
        fake = self.fakes(len(real), labels, grad=update_g)
        stats = self.discriminator_step(opt_d, real, fake, labels)
        if update_g:
            stats.update(self.generator_step(opt_g, fake, labels))
            schedulers = self.lr_schedulers() or []
            for sch in schedulers if isinstance(schedulers, list) else [schedulers]:
                sch.step()
        bar = {k: stats.pop(k) for k in ("loss_d", "loss_g") if k in stats}
        self.log_dict({f"train/{k}": v for k, v in bar.items()}, prog_bar=True)
        self.log_dict({f"train/{k}": v for k, v in stats.items()})
        return None

    def on_train_start(self) -> None:
        # n_critic larger than the batches of an epoch would never update the generator
        trainer = attached_trainer(self)
        if trainer is not None and self.n_critic > 1 and trainer.num_training_batches < self.n_critic:
            raise ConfigError(
                f"n_critic={self.n_critic} but an epoch has only {trainer.num_training_batches} batches, so the "
                "generator is never updated",
                keys=("n_critic",),
                fix="lower model.n_critic or raise the batches per epoch (trainer.limit_train_batches)",
            )
