"""Denoising diffusion (Ho et al. 2020) over any denoiser of the parts zoo, with the schedule and sampler as objects.

Training: draw a step t uniformly, noise the data to x_t (`NoiseSchedule.q_sample`), regress the network output
on ε (``prediction=eps``, Ho et al. eq. 14) or on v (``prediction=v``, Salimans & Ho 2022), optionally weighted
by min-SNR-γ (Hang et al. 2023): ``min(SNR, γ) / SNR`` for ε and ``min(SNR, γ) / (SNR + 1)`` for v, which
stops the low-noise steps from dominating the gradient.

Classifier-free guidance (Ho & Salimans 2022): with ``num_classes > 0`` the label is replaced by "no label"
(``-1``) with probability ``label_dropout`` during training, so one network learns p(x|y) and p(x). At sampling
the two outputs are mixed: ``out = out(∅) + s · (out(y) - out(∅))``; ``s = 0`` is unconditional, ``s = 1``
conditional, ``s > 1`` trades diversity for fidelity. Labels to sample are balanced. All of it is shared: the
base class's conditioning, `gensuite.families.conditioning.guide` and the `Guidance` option.

Sampling uses the model's current sampler (`set_sampler`; ``sampler=`` on the command line), also inside the
shared evaluation: ``eval_info()`` puts its name and step count into metrics.json. ``nll`` is the variational
bound in nats (see `gensuite.diffusion.likelihood`), so ``val/nll_bpd`` is a bits/dim upper bound.

Images live in [-1, 1] inside the model (``x_model = 2x - 1``); samples come back in [0, 1].
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from gensuite.contracts import to_signed, to_unit
from gensuite.diffusion.likelihood import variational_bound
from gensuite.diffusion.samplers import DPMSolverSDE, Sampler
from gensuite.diffusion.schedules import NoiseSchedule, check_prediction
from gensuite.errors import ConfigError
from gensuite.families import conditioning
from gensuite.families.base import Panel
from gensuite.families.guided import NoiseToData


class Diffusion(NoiseToData):
    """DDPM-style diffusion model on images.

    Args:
        denoiser: ``(x_t, t, y) -> tensor like x_t`` (``model/denoiser=unet``), never told the schedule.
        schedule: `NoiseSchedule` (``model/schedule=linear|cosine``).
        sampler: `Sampler` used by `sample` (``sampler=ddpm|ddim|dpm_solver|dpm_solver_sde``); default
            SDE-DPM-Solver++ 20 steps.
        prediction: ``eps`` or ``v``: what the network is trained to output.
        min_snr_gamma: γ of min-SNR-γ loss weighting; null for the plain (unweighted) loss.
        num_classes: > 0 trains a class-conditional model with label dropout (must match the denoiser's).
        label_dropout: probability of dropping the label in training (classifier-free guidance).
        guidance_scale: s of classifier-free guidance when sampling a conditional model (the default of the
            `Guidance` option, ``sampling.guidance_scale=``).
        clip_denoised: clip x̂_0 to [-1, 1] while sampling (pixel space; not used by the likelihood).
        nll_timesteps: network calls of the likelihood estimate (stratified over steps; >= T-1: exact bound).
        nll_seed: seed of the likelihood estimate's noise, so the number is the same for the same weights.
    """

    family = "diffusion"
    process = "diffusion"

    def __init__(
        self,
        denoiser: nn.Module,
        schedule: NoiseSchedule,
        sampler: Sampler | None = None,
        prediction: str = "eps",
        min_snr_gamma: float | None = None,
        num_classes: int = 0,
        label_dropout: float = 0.1,
        guidance_scale: float = 1.0,
        clip_denoised: bool = True,
        nll_timesteps: int = 10,
        nll_seed: int = 0,
        optimizer=None,
        scheduler=None,
    ):
        super().__init__(optimizer, scheduler, num_classes, label_dropout)
        check_prediction(prediction)
        if isinstance(denoiser, functools.partial):
            raise ConfigError(
                "this denoiser takes its size from an autoencoder (it is for model=latent_diffusion)",
                keys=("denoiser",),
                fix="model/denoiser=unet (or unet_small) for diffusion on pixels",
            )
        self.check_part_classes(denoiser, "denoiser")
        if min_snr_gamma is not None and min_snr_gamma <= 0:
            raise ConfigError(f"min_snr_gamma must be > 0 or null, got {min_snr_gamma}", keys=("min_snr_gamma",))
        if nll_timesteps < 1:
            raise ConfigError(f"nll_timesteps must be >= 1, got {nll_timesteps}", keys=("nll_timesteps",))
        self.denoiser, self.schedule = denoiser, schedule
        self.prediction, self.min_snr_gamma = prediction, min_snr_gamma
        self.clip_denoised = clip_denoised
        self.nll_timesteps, self.nll_seed = nll_timesteps, nll_seed
        try:
            self.init_sampling(denoiser, guidance_scale, sampler, DPMSolverSDE(20))
        except ConfigError as err:  # name the keys as this family's config sees them
            keys = err.keys if err.keys == ("sampler",) else ("sampler.steps", "schedule.num_timesteps")
            raise ConfigError(err.message, keys=keys, fix=err.fix) from None

    # -- data <-> model space ----------------------------------------------------------------------------------
    def encode_data(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> what the diffusion runs on (here: pixels in [-1, 1])."""
        return to_signed(x)

    def decode_data(self, x0: torch.Tensor) -> torch.Tensor:
        """The sampler's output -> images in [0, 1]."""
        return to_unit(x0)

    # -- sampler -----------------------------------------------------------------------------------------------
    def check_sampler(self, sampler: Sampler) -> None:
        sampler.check(self.schedule)

    # -- training ----------------------------------------------------------------------------------------------
    def loss_weight(self, t: torch.Tensor) -> torch.Tensor | None:
        """min-SNR-γ weights per example (Hang et al. 2023, eq. 8 and its v-prediction form), or None."""
        if self.min_snr_gamma is None:
            return None
        snr = self.schedule.snr(t)
        clipped = snr.clamp(max=self.min_snr_gamma)
        return clipped / snr if self.prediction == "eps" else clipped / (snr + 1)

    def losses(self, batch) -> dict[str, torch.Tensor]:
        x0 = self.encode_data(batch[0])
        b = x0.shape[0]
        t = self.rank_noise(lambda *s, **kw: torch.randint(0, self.schedule.num_timesteps, s, **kw), b)
        noise = self.rank_noise(torch.randn, b, *x0.shape[1:], dtype=x0.dtype)
        x_t = self.schedule.q_sample(x0, t, noise)
        out = self.denoiser(x_t, t, self.training_labels(batch))
        target = self.schedule.target(x0, noise, t, self.prediction)
        mse = (out.float() - target).pow(2).flatten(1).mean(1)  # (B,)
        weight = self.loss_weight(t)
        loss = mse.mean() if weight is None else (weight * mse).mean()
        return {"loss": loss, "mse": mse.mean()}

    # -- the model as the samplers see it ----------------------------------------------------------------------
    def model_output(
        self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None, guidance_scale: float = 1.0
    ) -> torch.Tensor:
        """The network output at (x_t, t), guided: ``out(∅) + s (out(y) - out(∅))`` for a conditional model.

        ``y=None`` (or a model without classes) is the unconditional output (`conditioning.guide`).
        """
        return conditioning.guide(self.denoiser, x, t, y if self.conditional else None, guidance_scale)

    def denoiser_fn(self, y: torch.Tensor | None = None, guidance_scale: float = 1.0, clip: bool | None = None):
        """``(x_t, t) -> x̂_0``: what every sampler calls (ε or v converted, guided, optionally clipped)."""
        clip = self.clip_denoised if clip is None else clip

        def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            out = self.model_output(x, t, y, guidance_scale).float()
            x0 = self.schedule.predict_x0(out, x, t, self.prediction)
            return x0.clamp(-1, 1) if clip else x0

        return denoise

    def run_sampler(self, noise, labels, guidance_scale, generator) -> torch.Tensor:
        return self.sampler(self.denoiser_fn(labels, guidance_scale), self.schedule, noise, generator)

    # -- likelihood --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def nll(self, batch) -> torch.Tensor:
        """Variational bound on -log p(x) in nats per image, ``(B,)`` (unconditional network for a conditional model:
        the bound is on p(x), not p(x|y)); estimated from ``nll_timesteps`` network calls plus one (exact when
        ``nll_timesteps >= T-1``), with a fixed seed."""
        x0 = self.encode_data(batch[0])
        g = torch.Generator(device=x0.device).manual_seed(self.nll_seed)
        return variational_bound(self.denoiser_fn(None, clip=False), self.schedule, x0, self.nll_timesteps, g)

    # -- pictures ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def panels(self, batch, generator=None, n: int = 64) -> dict[str, Panel]:
        out: dict[str, Panel] = {"samples": self.sample(n, generator)}
        out["sampler"] = self.sampler_text()
        x = batch[0][:8]
        # the forward process: each row one image, noised at 8 steps from 0 to T-1
        steps = torch.linspace(0, self.schedule.num_timesteps - 1, 8, device=x.device).round().long()
        x0 = self.encode_data(x)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device)
        noised = [self.schedule.q_sample(x0, s.expand(len(x0)), noise) for s in steps]
        out["noising"] = self.decode_data(torch.stack(noised, 1).flatten(0, 1)).view(len(x), 8, *x.shape[1:])
        if self.conditional:
            out["class_grid"] = self.class_grid(generator)
        return out
