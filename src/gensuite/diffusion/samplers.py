"""Samplers: from pure noise to data with a trained denoiser, in a chosen number of network evaluations.

Every sampler has the same interface (as in k-diffusion, one short loop each):

    sampler(denoise, schedule, x, generator=None) -> x_0

- ``denoise(x_t, t) -> x̂_0``: the model's prediction of the clean sample at integer step ``t`` (a ``(B,)`` long
  tensor). The diffusion family builds it from the network (ε- or v-prediction, guidance, clipping), so every
  sampler works with every model; derived quantities (ε̂) come from `NoiseSchedule.eps_from_x0`.
- ``schedule``: the `NoiseSchedule` the model was trained with (ᾱ per step).
- ``x``: the starting noise ``x_T ~ N(0, I)``, any shape; ``generator`` drives the noise the sampler adds.

A sampler with ``steps = N`` calls the network N times, at ``N`` distinct steps from ``T-1`` (where the signal is
smallest, as Lin et al. 2024 recommend) down to 0, spread evenly in t or in log-SNR (``spacing``); after the
last one it returns the prediction at step 0. Samplers hold settings only, never state between calls.

==============  ==================================================================================
`DDPM`          ancestral sampling (Ho et al. 2020, alg. 2), on the respaced chain when N < T (Nichol &
                Dhariwal 2021, sec. 4): stochastic, needs many steps (usually N = T = 1000).
`DDIM`          Song et al. 2021, eq. 12; ``eta = 0`` is deterministic (an ODE solver), ``eta = 1`` is DDPM.
`DPMSolver`     DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", alg. 2): second-order multistep in
                log-SNR on the data prediction; good samples in 10-20 steps.
`DPMSolverSDE`  the same multistep solver on the reverse SDE instead of the ODE (Lu et al. 2022): fresh
                noise each step, so like DDPM it corrects the errors of an imperfect model, in 20-50
                steps instead of 1000 (the default of the diffusion family).
==============  ==================================================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch

from gensuite.diffusion.schedules import NoiseSchedule
from gensuite.errors import ConfigError

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


SPACINGS = ("time", "logsnr")


class Sampler:
    """Base class: the step count and the timesteps it visits. Subclasses implement ``__call__``.

    ``spacing``: ``time`` spreads the steps evenly in t (DDPM, DDIM); ``logsnr`` evenly in λ = log(α/σ), which
    puts more of them where the noise is low (what DPM-Solver needs: its multistep extrapolation assumes steps
    of similar size in λ; Lu et al. 2022, sec. 3.3).
    """

    name = "sampler"
    process = "diffusion"  # refused by flow models (gensuite.families.processes)

    def __init__(self, steps: int, spacing: str = "time"):
        if int(steps) < 1:
            raise ConfigError(f"steps must be >= 1, got {steps}", keys=("steps",), fix="e.g. sampler.steps=50")
        if spacing not in SPACINGS:
            raise ConfigError(f"spacing must be one of {SPACINGS}, got {spacing!r}", keys=("spacing",))
        self.steps, self.spacing = int(steps), spacing

    def __repr__(self) -> str:
        return f"{type(self).__name__}(steps={self.steps}, spacing={self.spacing!r})"

    def describe(self) -> str:
        """Name and step count, e.g. ``ddim-50-eta0`` (goes into metrics so numbers say how they were made)."""
        return f"{self.name}-{self.steps}"

    def check(self, schedule: NoiseSchedule) -> None:
        """A clear error when the sampler cannot run on this schedule (more steps than the model has)."""
        if self.steps > schedule.num_timesteps:
            raise ConfigError(
                f"sampler.steps={self.steps} but the model was trained with {schedule.num_timesteps} timesteps",
                keys=("steps",),
                fix=f"sampler.steps <= {schedule.num_timesteps}",
            )

    def timesteps(self, schedule: NoiseSchedule) -> list[int]:
        """The ``steps`` distinct integer steps visited, descending from T-1 to 0, evenly spaced (``spacing``)."""
        self.check(schedule)
        last = schedule.num_timesteps - 1
        if self.steps == 1:
            return [last]
        if self.spacing == "time":
            ts = torch.linspace(last, 0, self.steps, dtype=torch.float64).round().long().tolist()
        else:
            ab = schedule.alpha_bar
            lam = 0.5 * torch.log(ab / (1 - ab))  # decreasing in t
            grid = torch.linspace(float(lam[-1]), float(lam[0]), self.steps, dtype=torch.float64)
            ts = [int((lam - v).abs().argmin()) for v in grid]
        # rounding can repeat a step where t is coarse: push repeats apart, keeping T-1 >= ts[0] > ... > ts[-1] = 0
        for i in range(len(ts) - 2, -1, -1):
            ts[i] = max(ts[i], ts[i + 1] + 1)
        return [min(t, last - i) for i, t in enumerate(ts)]

    def pairs(self, schedule: NoiseSchedule) -> Iterator[tuple[int, float, float]]:
        """``(t, ᾱ_t, ᾱ_s)`` for each step t -> s; the last step goes to the clean data (ᾱ_s = 1)."""
        ts = self.timesteps(schedule)
        ab = schedule.alpha_bar
        for i, t in enumerate(ts):
            yield t, float(ab[t]), (float(ab[ts[i + 1]]) if i + 1 < len(ts) else 1.0)

    def __call__(
        self, denoise: Denoise, schedule: NoiseSchedule, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        raise NotImplementedError


def _full(x: torch.Tensor, t: int) -> torch.Tensor:
    return torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)


def _noise(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


class DDPM(Sampler):
    """Ancestral sampling with the posterior variance β̃ (Ho et al. 2020, alg. 2; ``sampler=ddpm``).

    With fewer steps than the model's T, the chain is respaced (Nichol & Dhariwal 2021): between visited steps
    t > s, β' = 1 - ᾱ_t/ᾱ_s plays the role of β_t in the posterior q(x_s | x_t, x̂_0) (eq. 7).
    """

    name = "ddpm"

    def __init__(self, steps: int = 1000, spacing: str = "time"):
        super().__init__(steps, spacing)

    @torch.no_grad()
    def __call__(self, denoise, schedule, x, generator=None):
        for t, ab_t, ab_s in self.pairs(schedule):
            x0 = denoise(x, _full(x, t))
            beta = 1 - ab_t / ab_s
            # posterior mean (eq. 7): weights of x̂_0 and x_t
            mean = (math.sqrt(ab_s) * beta * x0 + math.sqrt(1 - beta) * (1 - ab_s) * x) / (1 - ab_t)
            var = beta * (1 - ab_s) / (1 - ab_t)  # β̃; 0 at the last step (ᾱ_s = 1)
            x = mean + math.sqrt(var) * _noise(x, generator) if var > 0 else mean
        return x


class DDIM(Sampler):
    """Denoising diffusion implicit models (Song et al. 2021, eq. 12; ``sampler=ddim sampler.eta=0``).

    x_s = sqrt(ᾱ_s) x̂_0 + sqrt(1 - ᾱ_s - σ²) ε̂ + σ z, with σ = eta · sqrt((1-ᾱ_s)/(1-ᾱ_t)) · sqrt(1 - ᾱ_t/ᾱ_s).
    """

    name = "ddim"

    def __init__(self, steps: int = 50, eta: float = 0.0, spacing: str = "time"):
        super().__init__(steps, spacing)
        if eta < 0:
            raise ConfigError(f"eta must be >= 0, got {eta}", keys=("eta",), fix="sampler.eta=0 (deterministic)")
        self.eta = float(eta)

    def describe(self) -> str:
        return f"{self.name}-{self.steps}-eta{self.eta:g}"

    @torch.no_grad()
    def __call__(self, denoise, schedule, x, generator=None):
        for t, ab_t, ab_s in self.pairs(schedule):
            tt = _full(x, t)
            x0 = denoise(x, tt)
            eps = schedule.eps_from_x0(x0, x, tt)
            sigma = self.eta * math.sqrt((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s))
            x = math.sqrt(ab_s) * x0 + math.sqrt(max(1 - ab_s - sigma**2, 0.0)) * eps
            if sigma > 0:
                x = x + sigma * _noise(x, generator)
        return x


class DPMSolver(Sampler):
    """DPM-Solver++(2M): multistep, second order, on the data prediction (Lu et al. 2022; ``sampler=dpm_solver``).

    With α = sqrt(ᾱ), σ = sqrt(1 - ᾱ), λ = log(α/σ) and h = λ_s - λ_t, one step t -> s is
    ``x_s = (σ_s/σ_t) x_t - α_s (e^{-h} - 1) D`` where D is x̂_0 at t (first order, = DDIM) or, once a previous
    prediction exists, ``D = (1 + 1/(2r)) x̂_0(t) - 1/(2r) x̂_0(t_prev)`` with r = h_prev / h (alg. 2). The last
    step, to σ = 0, is first order (λ_s = ∞) and returns x̂_0 at step 0.
    """

    name = "dpm_solver"

    def __init__(self, steps: int = 20, spacing: str = "logsnr"):
        super().__init__(steps, spacing)

    @staticmethod
    def _lam(ab: float) -> float:
        return 0.5 * math.log(ab / (1 - ab))

    @torch.no_grad()
    def __call__(self, denoise, schedule, x, generator=None):
        prev_x0, prev_h = None, None
        for t, ab_t, ab_s in self.pairs(schedule):
            x0 = denoise(x, _full(x, t))
            if ab_s >= 1.0:  # last step: to the clean data
                return x0
            h = self._lam(ab_s) - self._lam(ab_t)
            # D = x̂_0 extrapolated linearly in λ to the middle of the step (= (1 + 1/2r) x̂_0 - 1/2r x̂_0_prev)
            d = x0 if prev_x0 is None else x0 + (x0 - prev_x0) * (h / prev_h) / 2
            x = self.step(x, d, ab_t, ab_s, h, generator)
            prev_x0, prev_h = x0, h
        return x

    @staticmethod
    def step(x, d, ab_t: float, ab_s: float, h: float, generator) -> torch.Tensor:
        """One step t -> s of the probability-flow ODE with the data prediction ``d``."""
        return math.sqrt((1 - ab_s) / (1 - ab_t)) * x - math.sqrt(ab_s) * math.expm1(-h) * d


class DPMSolverSDE(DPMSolver):
    """SDE-DPM-Solver++(2M): DPM-Solver++ on the reverse SDE (``sampler=dpm_solver_sde``).

    With h = λ_s - λ_t and the data predictions D0 = x̂_0(t), D1 = (x̂_0(t) - x̂_0(t_prev)) / r (r = h_prev / h;
    D1 = 0 at the first step), one step t -> s is

        x_s = (σ_s/σ_t) e^{-h} x_t + α_s (1 - e^{-2h}) (D0 + D1 / 2) + σ_s sqrt(1 - e^{-2h}) z,

    the exact solution of the linear part of the reverse SDE with x̂_0 extrapolated linearly in λ. It spends the
    same network calls as `DPMSolver` but, like ancestral sampling, injects noise: on a briefly trained model its
    samples are closer to DDPM-1000's than the ODE solvers' (see the README's sampler table).
    """

    name = "dpm_solver_sde"

    @staticmethod
    def step(x, d, ab_t: float, ab_s: float, h: float, generator) -> torch.Tensor:
        """One step t -> s of the reverse SDE with the data prediction ``d``."""
        decay = -math.expm1(-2 * h)  # 1 - e^{-2h}
        return (
            math.sqrt((1 - ab_s) / (1 - ab_t)) * math.exp(-h) * x
            + math.sqrt(ab_s) * decay * d
            + math.sqrt((1 - ab_s) * decay) * _noise(x, generator)
        )
