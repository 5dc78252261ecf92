"""The likelihood of a flow model through its ODE: the instantaneous change of variables, with a trace estimate.

For ``dx/dt = v(x, t)`` carrying the noise density p_0 = N(0, I) at t = 0 to the model density p_1 at t = 1, the
log-density along a trajectory obeys ``d log p_t(x_t) / dt = -div v(x_t, t)`` (Chen et al. 2018, "Neural ODEs",
thm. 1), so

    log p_1(x_1) = log N(x_0; 0, I) - ∫_0^1 div v(x_t, t) dt,

with x_0 found by integrating the ODE backwards from the data x_1. The divergence (the trace of the Jacobian,
D network gradients) is replaced by Hutchinson's estimator ``div v ≈ εᵀ (∂v/∂x) ε`` with ``E[εεᵀ] = I``, one
vector-Jacobian product per call, the probe ε held fixed along the whole trajectory (Grathwohl et al. 2019,
"FFJORD", sec. 3.1). The result is therefore an **estimate**: unbiased in the divergence, but carrying the
solver's discretisation error (a fixed-step solver, `gensuite.flow.samplers`) and the probe's variance. A
Rademacher probe (±1, the default) is exact when the Jacobian is diagonal; ``probe="gaussian"`` is N(0, I).

Both integrals are solved together by any flow sampler on the augmented state ``[x, ∫ div]`` (``(B, D + 1)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from gensuite.errors import ConfigError
from gensuite.flow.samplers import FlowSampler, Heun

PROBES = ("rademacher", "gaussian")


def hutchinson_probe(like: torch.Tensor, kind: str, generator: torch.Generator | None) -> torch.Tensor:
    """A probe ε shaped like ``like`` with E[εεᵀ] = I: ±1 (``rademacher``) or N(0, 1) (``gaussian``)."""
    if kind not in PROBES:
        raise ConfigError(f"probe must be one of {PROBES}, got {kind!r}", keys=("probe",))
    if kind == "gaussian":
        return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)
    bits = torch.randint(0, 2, like.shape, generator=generator, device=like.device)
    return (2 * bits - 1).to(like.dtype)


def standard_normal_log_prob(x: torch.Tensor) -> torch.Tensor:
    """``log N(x; 0, I)`` summed over all but the first dimension, ``(B,)``."""
    d = x[0].numel()
    return -0.5 * x.flatten(1).pow(2).sum(1) - 0.5 * d * math.log(2 * math.pi)


def ode_log_likelihood(
    velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x1: torch.Tensor,
    solver: FlowSampler | None = None,
    probe: str = "rademacher",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Estimate of ``log p_1(x1)`` in nats per example, ``(B,)``, under the flow of ``velocity``.

    Args:
        velocity: ``(x_t, t (B,)) -> dx/dt`` with t = 0 at the noise N(0, I) and t = 1 at the data.
        x1: points where the density is wanted (the model's data space), ``(B, ...)``.
        solver: a fixed-step flow sampler integrating the augmented ODE from t = 1 back to 0 (default Heun, 10).
        probe: Hutchinson probe, ``rademacher`` or ``gaussian``; drawn once from ``generator``.
    """
    solver = solver or Heun(10)
    # the divergence needs gradients, also under Lightning's validation (inference mode): leave inference mode
    # and copy x1 (an inference tensor cannot enter autograd)
    with torch.inference_mode(False), torch.enable_grad():
        return _log_likelihood(velocity, x1.clone(), solver, probe, generator)


def _log_likelihood(velocity, x1: torch.Tensor, solver: FlowSampler, probe: str, generator) -> torch.Tensor:
    shape, d = x1.shape, x1[0].numel()
    eps = hutchinson_probe(x1, probe, generator)

    def augmented(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # z: (B, D + 1) = [x flattened, ∫ div so far] -> its time derivative [v, div v]
        x = z[:, :d].reshape(shape).detach().requires_grad_(True)
        v = velocity(x, t)
        (eps_j,) = torch.autograd.grad(v, x, eps)  # εᵀ ∂v/∂x (a vector-Jacobian product)
        div = (eps_j * eps).flatten(1).sum(1)  # (B,)
        return torch.cat([v.detach().flatten(1), div[:, None]], 1)

    z1 = torch.cat([x1.flatten(1), torch.zeros(len(x1), 1, device=x1.device, dtype=x1.dtype)], 1)
    backwards = solver.times(x1.device).flip(0)  # 1 -> 0
    z0 = solver(augmented, z1, backwards)
    # the last coordinate is ∫_1^0 div v dt = -∫_0^1 div v dt, so log p_1(x_1) = log p_0(x_0) + z0[:, -1]
    return (standard_normal_log_prob(z0[:, :d].reshape(shape)) + z0[:, -1]).detach()
