"""The variational bound of a discrete-time diffusion model on 8-bit images (Ho et al. 2020, eq. 5).

With step indices i = 0 .. T-1 (the paper's t = 1 .. T), for data x_0 scaled to [-1, 1]:

    -log p(x_0) <= L_T + Σ_{i=1}^{T-1} L_i + L_0                                         (nats per image)

- ``L_T = KL(q(x_T | x_0) || N(0, I))``: the prior term, closed form, no network call;
- ``L_i = KL(q(x_{i-1} | x_i, x_0) || p(x_{i-1} | x_i))``: the reverse step with the model's mean and the fixed
  variance β̃_i; both Gaussians share the variance, so ``L_i = ||μ̃ - μ_θ||² / (2 β̃_i)``;
- ``L_0 = -log p(x_0 | x_1)``: the discretized Gaussian decoder (eq. 13) over the 256 bins of each pixel,
  centred at the model's x̂_0 with standard deviation sqrt(β_1).

The sum over T-1 steps is estimated without bias from ``k`` steps per image, one drawn uniformly inside each
of ``k`` strata of [1, T-1] and weighted by its stratum's size (stratified sampling). The strata grow
geometrically (1, 2, 4, ... steps): the terms are largest and change fastest at the first steps (Nichol &
Dhariwal 2021, fig. 2), and equal strata would miss them most of the time and hit them rarely with a large
weight (an unbiased but heavy-tailed estimate). ``k >= T-1`` computes every term: the exact bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.special import log_ndtr

from gensuite.diffusion.schedules import NoiseSchedule


def normal_kl(mean1: torch.Tensor, var1: torch.Tensor, mean2: torch.Tensor, var2: torch.Tensor) -> torch.Tensor:
    """Elementwise KL(N(mean1, var1) || N(mean2, var2)) in nats."""
    return 0.5 * (torch.log(var2) - torch.log(var1) + (var1 + (mean1 - mean2) ** 2) / var2 - 1)


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, std: float) -> torch.Tensor:
    """Elementwise log P(bin of x) under N(mean, std²) integrated over the bin, for 8-bit data in [-1, 1].

    Bin k (k = 0..255) is centred at ``2k/255 - 1`` and is ``2/255`` wide; the two end bins extend to ±infinity.
    """
    half = 1 / 255
    upper = (x - mean + half) / std
    lower = (x - mean - half) / std
    # log(Φ(u) - Φ(l)) without cancellation: take the tail on the side away from the mean
    log_cdf_upper, log_sf_lower = log_ndtr(upper), log_ndtr(-lower)
    mirrored = lower > 0
    a = torch.where(mirrored, log_sf_lower, log_cdf_upper)  # the larger of the two tail masses
    b = torch.where(mirrored, log_ndtr(-upper), log_ndtr(lower))
    log_mid = a + torch.log1p(-torch.exp((b - a).clamp(max=-1e-12)))
    return torch.where(x < -1 + half, log_cdf_upper, torch.where(x > 1 - half, log_sf_lower, log_mid))


def stratified_steps(
    num_timesteps: int, k: int, batch: int, device, generator: torch.Generator | None
) -> list[tuple[torch.Tensor, int]]:
    """``k`` draws ``(steps (B,), stratum size)`` covering the steps 1 .. T-1; all of them when ``k >= T-1``."""
    if k >= num_timesteps - 1:
        return [(torch.full((batch,), i, dtype=torch.long, device=device), 1) for i in range(1, num_timesteps)]
    # geometric strata (1, 2, 4, ... steps wide): the terms are largest and change fastest at the first steps,
    # so those get strata of their own and the estimate's variance stays low
    edges = torch.logspace(0, math.log10(num_timesteps), k + 1, dtype=torch.float64).round().long().tolist()
    for i in range(1, len(edges)):  # strictly increasing edges from 1 to T
        edges[i] = max(edges[i], edges[i - 1] + 1)
    edges = [min(e, num_timesteps - (len(edges) - 1 - i)) for i, e in enumerate(edges)]
    draws = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        u = torch.rand(batch, generator=generator, device=device)
        draws.append(((lo + (u * (hi - lo)).long()).clamp(max=hi - 1), hi - lo))
    return draws


def variational_bound(
    predict_x0: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    k: int = 10,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Upper bound on ``-log p(x_0)`` in nats per example, ``(B,)``.

    Args:
        predict_x0: ``(x_t, t) -> x̂_0``, the model's unclipped prediction of the data.
        schedule: the model's noise schedule.
        x0: data in [-1, 1] on the 8-bit grid ``(B, ...)``.
        k: network calls for the sum over steps (plus one for L_0); ``k >= T-1`` is exact.
        generator: for the steps and noises drawn (a fixed seed gives a fixed estimate).
    """
    dims = tuple(range(1, x0.dim()))
    b, device = x0.shape[0], x0.device

    def noise() -> torch.Tensor:
        return torch.randn(x0.shape, generator=generator, device=device, dtype=x0.dtype)

    last = torch.full((b,), schedule.num_timesteps - 1, dtype=torch.long, device=device)
    ab_last = schedule.alpha_bar_at(last, x0.dim())
    prior = normal_kl(ab_last.sqrt() * x0, 1 - ab_last, torch.zeros_like(x0), torch.ones_like(x0)).sum(dims)

    zero = torch.zeros(b, dtype=torch.long, device=device)
    x1 = schedule.q_sample(x0, zero, noise())
    std0 = math.sqrt(float(schedule.betas[0]))
    decoder = -discretized_gaussian_log_likelihood(x0, predict_x0(x1, zero), std0).sum(dims)

    steps = torch.zeros(b, dtype=x0.dtype, device=device)
    for t, weight in stratified_steps(schedule.num_timesteps, k, b, device, generator):
        xt = schedule.q_sample(x0, t, noise())
        mean_true, var = schedule.q_posterior(x0, xt, t)
        mean_model, _ = schedule.q_posterior(predict_x0(xt, t), xt, t)
        steps = steps + weight * ((mean_true - mean_model) ** 2 / (2 * var)).sum(dims)
    return prior + steps + decoder
