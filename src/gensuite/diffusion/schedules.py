"""Discrete-time noise schedules (variance preserving): plain objects, no Lightning, no network.

Notation (Ho et al. 2020), with step index ``i = 0 .. T-1`` standing for the paper's ``t = 1 .. T``:

==================  ============================================================================
``betas[i]``        β_t, the variance added at step t
``alpha_bar[i]``    ᾱ_t = Π_{s<=t} (1 - β_s); ``x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε``  (eq. 4)
``snr(i)``          ᾱ_t / (1 - ᾱ_t), the signal-to-noise ratio (Kingma et al. 2021)
==================  ============================================================================

- `LinearSchedule`: β linear from 1e-4 to 0.02 over T = 1000 steps (Ho et al. 2020, section 4).
- `CosineSchedule`: ᾱ_t = f(t)/f(0) with f(t) = cos²(((t/T + s)/(1 + s)) · π/2), β clipped at 0.999 (Nichol &
  Dhariwal 2021, eq. 17): less signal destroyed early, better for small images.

A schedule also converts a network output into the prediction of x_0 and ε, for ε-prediction and for
v-prediction (v = sqrt(ᾱ) ε - sqrt(1 - ᾱ) x_0; Salimans & Ho 2022, appendix D).
"""

from __future__ import annotations

import math

import torch

from gensuite.errors import ConfigError

PREDICTIONS = ("eps", "v")


def linear_betas(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """β_t linear in t, float64 ``(T,)``. The endpoints are given for T = 1000 and rescaled for other T
    (as Improved DDPM does), so the total noise added stays the same."""
    scale = 1000 / num_timesteps
    return torch.linspace(scale * beta_start, scale * beta_end, num_timesteps, dtype=torch.float64)


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """β_t of the cosine schedule (Nichol & Dhariwal 2021, eq. 17), float64 ``(T,)``."""
    steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)


class NoiseSchedule:
    """A discrete variance-preserving schedule given by its ``betas`` (float64 ``(T,)``, each in (0, 1)).

    ``t`` arguments are integer step indices ``(B,)`` in ``[0, T)``; coefficient methods return float32 tensors
    shaped ``(B, 1, ..., 1)`` to broadcast against ``x`` (``ndim`` dimensions in all).
    """

    name = "custom"

    def __init__(self, betas: torch.Tensor):
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.dim() != 1 or not ((betas > 0) & (betas < 1)).all():
            raise ConfigError("betas must be a 1-d tensor of values in (0, 1)", keys=("betas",))
        self.betas = betas
        self.alpha_bar = torch.cumprod(1 - betas, dim=0)
        self._on_device: dict[torch.device, torch.Tensor] = {}

    @property
    def num_timesteps(self) -> int:
        return len(self.betas)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_timesteps={self.num_timesteps})"

    # -- per-example coefficients ----------------------------------------------------------------------------
    def alpha_bar_at(self, t: torch.Tensor, ndim: int = 1) -> torch.Tensor:
        """ᾱ_t for integer steps ``t`` ``(B,)`` as float32 ``(B, 1, ..., 1)`` on ``t``'s device."""
        table = self._on_device.get(t.device)
        if table is None:
            table = self._on_device[t.device] = self.alpha_bar.to(t.device)
        return table[t].float().view(-1, *([1] * (ndim - 1)))

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """ᾱ_t / (1 - ᾱ_t), float32 ``(B,)``."""
        ab = self.alpha_bar_at(t)
        return ab / (1 - ab)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Draw x_t ~ q(x_t | x_0): ``sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) noise`` (eq. 4)."""
        ab = self.alpha_bar_at(t, x0.dim())
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, prediction: str) -> torch.Tensor:
        """What a network trained for ``prediction`` (``eps`` or ``v``) should output at (x_t, t)."""
        if prediction == "eps":
            return noise
        ab = self.alpha_bar_at(t, x0.dim())
        return ab.sqrt() * noise - (1 - ab).sqrt() * x0  # v (Salimans & Ho 2022)

    def predict_x0(self, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, prediction: str) -> torch.Tensor:
        """The network output turned into a prediction of x_0 (eq. 15 of Ho et al. for ε)."""
        ab = self.alpha_bar_at(t, x_t.dim())
        if prediction == "eps":
            return (x_t - (1 - ab).sqrt() * out) / ab.sqrt()
        return ab.sqrt() * x_t - (1 - ab).sqrt() * out  # from v: x0 = sqrt(ᾱ) x_t - sqrt(1-ᾱ) v

    def eps_from_x0(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The noise implied by a prediction of x_0 (inverse of eq. 4)."""
        ab = self.alpha_bar_at(t, x_t.dim())
        return (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()

    def q_posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of q(x_{t-1} | x_t, x_0) for steps ``t >= 1`` (Ho et al. eq. 6-7)."""
        ab = self.alpha_bar_at(t, x_t.dim())
        ab_prev = self.alpha_bar_at(t - 1, x_t.dim())
        beta = 1 - ab / ab_prev
        mean = (ab_prev.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - ab_prev) * x_t) / (1 - ab)
        var = beta * (1 - ab_prev) / (1 - ab)
        return mean, var


def check_prediction(prediction: str) -> None:
    if prediction not in PREDICTIONS:
        raise ConfigError(
            f"prediction must be one of {PREDICTIONS}, got {prediction!r}",
            keys=("prediction",),
            fix="model.prediction=eps (Ho et al. 2020) or model.prediction=v (Salimans & Ho 2022)",
        )


class LinearSchedule(NoiseSchedule):
    """DDPM's linear β schedule (``model/schedule=linear``).

    >>> LinearSchedule(1000).alpha_bar[-1].item() < 1e-4
    True
    """

    name = "linear"

    def __init__(self, num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        if num_timesteps < 2:
            raise ConfigError(f"num_timesteps must be >= 2, got {num_timesteps}", keys=("num_timesteps",))
        if not 0 < beta_start < beta_end < 1:
            raise ConfigError(
                f"need 0 < beta_start < beta_end < 1, got {beta_start}, {beta_end}", keys=("beta_start", "beta_end")
            )
        super().__init__(linear_betas(num_timesteps, beta_start, beta_end))


class CosineSchedule(NoiseSchedule):
    """Improved DDPM's cosine schedule (``model/schedule=cosine``)."""

    name = "cosine"

    def __init__(self, num_timesteps: int = 1000, s: float = 0.008, max_beta: float = 0.999):
        if num_timesteps < 2:
            raise ConfigError(f"num_timesteps must be >= 2, got {num_timesteps}", keys=("num_timesteps",))
        super().__init__(cosine_betas(num_timesteps, s, max_beta))
