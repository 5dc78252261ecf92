"""Conditional flow matching on the straight path (Lipman et al. 2023; Liu et al. 2023, "rectified flow").

Convention: **t = 0 is the noise, t = 1 the data.** With noise x_0 ~ N(0, I) and data x_1 (pixels in [-1, 1]),
the path ``x_t = (1 - t) x_0 + t x_1`` has the conditional velocity ``u_t = x_1 - x_0``; the network regresses
it, ``E_{t, x_0, x_1} ||v_θ(x_t, t) - (x_1 - x_0)||²`` (Lipman et al. 2023, eq. 23 with σ_min = 0), and its
minimiser is the marginal velocity whose ODE ``dx/dt = v(x, t)`` carries N(0, I) to the data. Sampling integrates
that ODE from 0 to 1 with a flow sampler (`gensuite.flow.samplers`: ``sampler=euler|heun|midpoint``); no noise
schedule is involved.

- **Time sampling** (``time_sampling``): ``uniform`` t ~ U(0, 1), or ``logit_normal``: t = sigmoid(m + s·n),
  n ~ N(0, 1), which spends more of the training on the middle of the path (Esser et al. 2024, "SD3", sec. 3.1;
  their t runs from data to noise, so their m is -m here; m = 0 is the same either way).
- **The network** is the shared denoiser of the parts zoo (``model/denoiser=unet``), ``(x_t, t, y)``; it embeds
  t sinusoidally like a diffusion step, so it is given ``t · time_scale`` (default 1000: the range of the
  diffusion family's integer steps 0..999, where the embedding's frequencies were chosen).
- **Classifier-free guidance** (Ho & Salimans 2022), shared with diffusion: label dropout in training and balanced
  labels (the base class), ``v = v(∅) + s (v(y) - v(∅))`` at sampling (`conditioning.guide`, the `Guidance`
  option), the class grid.
- **Likelihood**: ``nll`` is the instantaneous change of variables through the ODE with a Hutchinson trace
  estimate (`gensuite.flow.likelihood`) on uniformly dequantised 8-bit pixels: an *estimate* of an upper bound on
  the discrete negative log-likelihood, in nats per image (``val/nll_bpd``: bits/dim).
- **Dequantisation** (``dequantize``): 8-bit pixels k ∈ {0..255} become (k + u)/256, u ~ U(0, 1), in training as
  in the likelihood, so the density the model learns is the one its likelihood measures.

Images live in [-1, 1] inside the model; samples come back in [0, 1].
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gensuite.contracts import to_signed, to_unit
from gensuite.errors import ConfigError
from gensuite.families import conditioning
from gensuite.families.base import Panel
from gensuite.families.guided import NoiseToData
from gensuite.families.options import Guidance
from gensuite.flow.likelihood import PROBES, ode_log_likelihood
from gensuite.flow.samplers import Euler, FlowSampler, Heun

TIME_SAMPLING = ("uniform", "logit_normal")


class FlowMatching(NoiseToData):
    """Flow matching (velocity prediction, straight path) on images.

    Args:
        denoiser: ``(x_t, t, y) -> tensor like x_t`` (``model/denoiser=unet``): here the velocity field.
        sampler: a flow sampler (``sampler=euler|heun|midpoint sampler.steps=N``); default Euler, 16 steps.
        time_sampling: ``uniform`` or ``logit_normal`` (SD3); ``logit_mean``, ``logit_std``: its m and s.
        time_scale: the network is given ``t * time_scale`` (its sinusoidal embedding expects step-like numbers).
        num_classes: > 0 trains a class-conditional model with label dropout (must match the denoiser's).
        label_dropout: probability of dropping the label in training (classifier-free guidance).
        guidance_scale: s of classifier-free guidance when sampling a conditional model (the default of the
            `Guidance` option, ``sampling.guidance_scale=``).
        dequantize: uniform dequantisation of the 8-bit pixels in training.
        nll_steps: Heun steps of the likelihood's ODE solve (2 network calls + 2 gradients each); 0: no likelihood.
        nll_probe: Hutchinson probe, ``rademacher`` or ``gaussian``; ``nll_seed``: its seed (and the
            dequantisation noise's), so the estimate is the same for the same weights.
    """

    family = "flow_matching"
    likelihood_kind = "estimate"  # ODE solve with a Hutchinson trace: neither exact nor a bound
    process = "flow"

    def __init__(
        self,
        denoiser: nn.Module,
        sampler: FlowSampler | None = None,
        time_sampling: str = "logit_normal",
        logit_mean: float = 0.0,
        logit_std: float = 1.0,
        time_scale: float = 1000.0,
        num_classes: int = 0,
        label_dropout: float = 0.1,
        guidance_scale: float = 1.0,
        dequantize: bool = True,
        nll_steps: int = 8,
        nll_probe: str = "rademacher",
        nll_seed: int = 0,
        optimizer=None,
        scheduler=None,
    ):
        super().__init__(optimizer, scheduler, num_classes, label_dropout)
        if time_sampling not in TIME_SAMPLING:
            raise ConfigError(
                f"time_sampling must be one of {TIME_SAMPLING}, got {time_sampling!r}", keys=("time_sampling",)
            )
        if logit_std <= 0:
            raise ConfigError(f"logit_std must be > 0, got {logit_std}", keys=("logit_std",))
        self.check_part_classes(denoiser, "denoiser")
        if nll_steps < 0:
            raise ConfigError(f"nll_steps must be >= 0 (0: no likelihood), got {nll_steps}", keys=("nll_steps",))
        if nll_probe not in PROBES:
            raise ConfigError(f"nll_probe must be one of {PROBES}, got {nll_probe!r}", keys=("nll_probe",))
        self.denoiser = denoiser
        self.time_sampling, self.logit_mean, self.logit_std = time_sampling, logit_mean, logit_std
        self.time_scale = time_scale
        self.dequantize = dequantize
        self.nll_steps, self.nll_probe, self.nll_seed = nll_steps, nll_probe, nll_seed
        if nll_steps == 0:
            self.nll = None  # the protocol's "no likelihood": val/nll_bpd is absent, not zero
        self.init_sampling(denoiser, guidance_scale, sampler, Euler(16))

    # -- data <-> model space ----------------------------------------------------------------------------------
    def encode_data(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images in [0, 1] (8-bit values k/255) -> [-1, 1], uniformly dequantised to (k + u)/256 if ``dequantize``."""
        if self.dequantize:
            if generator is None:  # training: this rank's rows of the global batch's draws
                u = self.rank_noise(torch.rand, len(x), *x.shape[1:], device=x.device, dtype=x.dtype)
            else:
                u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = (torch.round(x * 255) + u) / 256
        return to_signed(x)

    def decode_data(self, x1: torch.Tensor) -> torch.Tensor:
        """The sampler's output -> images in [0, 1]."""
        return to_unit(x1)

    # -- sampler -----------------------------------------------------------------------------------------------
    def eval_info(self, options: Guidance | None = None) -> dict[str, str | float]:
        """How samples are made, for metrics.json."""
        info = super().eval_info(options)
        if self.nll is not None:
            info["eval/nll_estimator"] = (
                f"ODE change of variables, Heun {self.nll_steps} steps, Hutchinson ({self.nll_probe}), "
                "uniform dequantisation"
            )
        return info

    # -- training ----------------------------------------------------------------------------------------------
    def sample_times(self, n: int, device) -> torch.Tensor:
        """``(n,)`` training times in (0, 1): uniform, or logit-normal (Esser et al. 2024, eq. 19)."""
        if self.time_sampling == "uniform":
            return self.rank_noise(torch.rand, n, device=device)
        return torch.sigmoid(self.logit_mean + self.logit_std * self.rank_noise(torch.randn, n, device=device))

    def losses(self, batch) -> dict[str, torch.Tensor]:
        x1 = self.encode_data(batch[0])  # data, (B, C, H, W)
        x0 = self.rank_noise(torch.randn, len(x1), *x1.shape[1:], dtype=x1.dtype)  # noise, this rank's rows
        t = self.sample_times(len(x1), x1.device)
        tb = t.view(-1, *([1] * (x1.dim() - 1)))  # (B, 1, 1, 1)
        xt = (1 - tb) * x0 + tb * x1
        v = self.denoiser(xt, t * self.time_scale, self.training_labels(batch))
        mse = (v.float() - (x1 - x0)).pow(2).flatten(1).mean(1)  # (B,)
        return {"loss": mse.mean()}

    # -- the model as the samplers see it ----------------------------------------------------------------------
    def velocity(
        self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None, guidance_scale: float = 1.0
    ) -> torch.Tensor:
        """The velocity at (x_t, t), t in [0, 1] ``(B,)``, guided for a conditional model (`conditioning.guide`)."""
        return conditioning.guide(
            self.denoiser, x, t * self.time_scale, y if self.conditional else None, guidance_scale
        ).float()

    def velocity_fn(self, y: torch.Tensor | None = None, guidance_scale: float = 1.0):
        """``(x_t, t) -> v``: the closure every flow sampler calls."""
        return lambda x, t: self.velocity(x, t, y, guidance_scale)

    def run_sampler(self, noise, labels, guidance_scale, generator) -> torch.Tensor:
        return self.sampler(self.velocity_fn(labels, guidance_scale), noise)

    # -- likelihood --------------------------------------------------------------------------------------------
    def nll(self, batch) -> torch.Tensor:
        """Estimate of -log P(x) of the 8-bit images in nats per image, ``(B,)`` (unconditional velocity).

        ``-log p(y)`` of the dequantised image y in [-1, 1] by the ODE (`ode_log_likelihood`), plus D·log 128:
        D·log 256 for the 256 bins of width 1/256 in [0, 1], minus D·log 2 for the map [0, 1] -> [-1, 1].
        """
        x = batch[0]
        g = torch.Generator(device=x.device).manual_seed(self.nll_seed)
        u = torch.rand(x.shape, generator=g, device=x.device, dtype=x.dtype)
        y = 2 * (torch.round(x * 255) + u) / 256 - 1
        log_p = ode_log_likelihood(self.velocity_fn(None), y, Heun(self.nll_steps), self.nll_probe, g)
        return -log_p + x[0].numel() * math.log(128)

    # -- pictures ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def panels(self, batch, generator=None, n: int = 64) -> dict[str, Panel]:
        out: dict[str, Panel] = {"samples": self.sample(n, generator)}
        out["sampler"] = self.sampler_text()
        x1 = self.encode_data(batch[0][:8])
        # the path: each row one image, from its noise (t = 0) to the image (t = 1) at 8 times
        x0 = torch.randn(x1.shape, generator=generator, device=x1.device)
        ts = torch.linspace(0, 1, 8, device=x1.device)
        path = torch.stack([(1 - t) * x0 + t * x1 for t in ts], 1)  # (8 images, 8 times, C, H, W)
        out["path"] = self.decode_data(path)
        if self.conditional:
            out["class_grid"] = self.class_grid(generator)
        return out
