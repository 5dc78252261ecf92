"""ODE samplers of flow models: integrate ``dx/dt = v(x, t)`` along a time grid, with no noise schedule.

Every sampler has the same interface (one short step each, as k-diffusion's samplers):

    sampler(velocity, x, times=None) -> x at times[-1]

- ``velocity(x, t) -> dx/dt``: the model's velocity field at time ``t`` (a ``(B,)`` float tensor); the flow
  matching family builds it from the network (time scaling, guidance), so every sampler works with every model;
- ``x``: the state at ``times[0]`` (the noise x_0 ~ N(0, I) when sampling), any shape ``(B, ...)``;
- ``times``: the grid, ascending or descending (the likelihood integrates from the data back to the noise);
  default: ``steps + 1`` evenly spaced times from 0 (noise) to 1 (data).

A sampler with ``steps = N`` takes N steps and calls the velocity ``N * nfe_per_step`` times. Samplers hold
settings only, never state between calls, and know no Lightning.

============  =================================================================================
`Euler`       x_s = x_t + h v(x_t, t): first order, 1 call per step (``sampler=euler``).
`Heun`        Heun's method (explicit trapezoid, Süli & Mayers 2003, sec. 12.5; the 2nd-order solver of
              Karras et al. 2022): an Euler predictor, then the mean of both slopes; 2 calls per step.
`Midpoint`    the explicit midpoint method (Runge 1895): the slope at the half step; 2 calls per step.
============  =================================================================================

``process = "flow"`` marks them as samplers of a flow model: a diffusion model refuses them and a flow model
refuses the samplers of `gensuite.diffusion.samplers` (`gensuite.families.processes`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from gensuite.errors import ConfigError

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class FlowSampler:
    """Base class: the step count and the time grid. Subclasses implement `step` (one step t -> s)."""

    name = "flow"
    process = "flow"
    nfe_per_step = 1

    def __init__(self, steps: int = 8):
        if int(steps) < 1:
            raise ConfigError(f"steps must be >= 1, got {steps}", keys=("steps",), fix="e.g. sampler.steps=8")
        self.steps = int(steps)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(steps={self.steps})"

    @property
    def nfe(self) -> int:
        """Velocity evaluations (network calls, before guidance) of one sampling run."""
        return self.steps * self.nfe_per_step

    def describe(self) -> str:
        """Name, steps and network calls, e.g. ``heun-8-nfe16`` (goes into metrics.json)."""
        return f"{self.name}-{self.steps}-nfe{self.nfe}"

    def times(self, device: torch.device | str | None = None) -> torch.Tensor:
        """``(steps + 1,)`` float64: evenly spaced from 0 (noise) to 1 (data)."""
        return torch.linspace(0.0, 1.0, self.steps + 1, dtype=torch.float64, device=device)

    def step(self, velocity: Velocity, x: torch.Tensor, t: float, s: float) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, velocity: Velocity, x: torch.Tensor, times: torch.Tensor | None = None) -> torch.Tensor:
        grid = (self.times() if times is None else times).tolist()
        for t, s in zip(grid[:-1], grid[1:], strict=True):
            x = self.step(velocity, x, t, s)
        return x


def _at(x: torch.Tensor, t: float) -> torch.Tensor:
    return torch.full((x.shape[0],), t, dtype=torch.float32, device=x.device)


class Euler(FlowSampler):
    """Euler's method: ``x_s = x_t + (s - t) v(x_t, t)`` (``sampler=euler``)."""

    name = "euler"

    def __init__(self, steps: int = 16):  # the flow-matching default's evaluation sampler (README: the NFE table)
        super().__init__(steps)

    def step(self, velocity, x, t, s):
        return x + (s - t) * velocity(x, _at(x, t))


class Heun(FlowSampler):
    """Heun's method (explicit trapezoid rule): Euler predictor x̃ = x_t + h v(x_t, t), then
    ``x_s = x_t + h/2 (v(x_t, t) + v(x̃, s))``; second order, 2 calls per step (``sampler=heun``)."""

    name = "heun"
    nfe_per_step = 2

    def step(self, velocity, x, t, s):
        h = s - t
        d1 = velocity(x, _at(x, t))
        d2 = velocity(x + h * d1, _at(x, s))
        return x + h / 2 * (d1 + d2)


class Midpoint(FlowSampler):
    """The explicit midpoint method: ``x_s = x_t + h v(x_t + h/2 v(x_t, t), t + h/2)``; second order, 2 calls per
    step (``sampler=midpoint``)."""

    name = "midpoint"
    nfe_per_step = 2

    def step(self, velocity, x, t, s):
        h = s - t
        half = x + h / 2 * velocity(x, _at(x, t))
        return x + h * velocity(half, _at(x, t + h / 2))
