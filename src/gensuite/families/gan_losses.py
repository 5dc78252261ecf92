"""Adversarial losses: small objects that turn discriminator logits into the two players' objectives.

Each loss gives

- ``discriminator_loss(real_logits, fake_logits)`` -> scalar, minimised by the discriminator (critic);
- ``generator_loss(fake_logits)`` -> scalar, minimised by the generator;
- ``penalties(critic, real, real_logits, fake)`` -> ``{name: scalar}``, regularisers added to the discriminator
  loss (already weighted): R1 on every loss as an option, the gradient penalty of WGAN-GP.

Logits are raw discriminator outputs, float ``(B,)``. Images handed to ``penalties`` are what the discriminator
saw (``(B, C, H, W)``, in [-1, 1]), and ``critic`` maps images to logits (with the labels bound in, for a
conditional GAN); ``real`` must have ``requires_grad`` set *before* ``real_logits`` were
computed when R1 is on (`needs_real_grad` says so), so that R1 reuses that forward pass instead of a new one.

The loss is chosen by config (``model/loss=ns | hinge | wgan_gp``); the family never branches on its type.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from gensuite.errors import ConfigError

Critic = Callable[[torch.Tensor], torch.Tensor]  # images (B, C, H, W) -> logits (B,)


def input_gradient(logits: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """``d sum(logits) / d inputs`` with a graph (so a penalty on it trains the critic): ``(B, C, H, W)``.

    Summing over the batch gives each example's own gradient because example i's logit depends only on input i
    (true for discriminators without batch statistics, which is why the penalties refuse batch norm).
    """
    (grad,) = torch.autograd.grad(logits.sum(), inputs, create_graph=True)
    return grad


class AdversarialLoss:
    """Base class: the R1 option (Mescheder et al. 2018, eq. 9) shared by every loss.

    R1 = ``r1_weight / 2 * E_real ||d D(x) / d x||^2``: a zero-centred gradient penalty on real data that keeps
    the discriminator flat on the data manifold, which makes GAN training locally convergent.

    Args:
        r1_weight: gamma of R1 (0: off). 10 is common for 28x28-64x64 images.
    """

    name = "base"

    def __init__(self, r1_weight: float = 0.0):
        if r1_weight < 0:
            raise ConfigError(f"r1_weight must be >= 0, got {r1_weight}", keys=("r1_weight",), fix="r1_weight=10.0")
        self.r1_weight = float(r1_weight)

    @property
    def needs_real_grad(self) -> bool:
        """Whether ``penalties`` differentiates the real logits with respect to the real images."""
        return self.r1_weight > 0

    @property
    def has_gradient_penalty(self) -> bool:
        """Whether any penalty differentiates the critic with respect to its input (needs per-example logits)."""
        return self.needs_real_grad

    def discriminator_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def generator_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def penalties(
        self,
        critic: Critic,
        real: torch.Tensor,
        real_logits: torch.Tensor,
        fake: torch.Tensor,
        eps: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Weighted penalties ``{name: scalar}``. ``eps`` ``(B, 1, 1, 1)`` in [0, 1]: interpolation weights for
        penalties on points between real and fake images (drawn with ``torch.rand`` when None)."""
        if not self.r1_weight:
            return {}
        grad = input_gradient(real_logits, real)  # (B, C, H, W)
        return {"r1": 0.5 * self.r1_weight * grad.pow(2).flatten(1).sum(1).mean()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class NonSaturating(AdversarialLoss):
    """The original GAN loss with the non-saturating generator objective (Goodfellow et al. 2014, sec. 3).

    D: ``-log sigmoid(r) - log(1 - sigmoid(f)) = softplus(-r) + softplus(f)``;
    G: ``-log sigmoid(f) = softplus(-f)`` (instead of the saturating ``log(1 - sigmoid(f))``).
    """

    name = "ns"

    def discriminator_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()

    def generator_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return F.softplus(-fake_logits).mean()


class Hinge(AdversarialLoss):
    """Hinge loss (Lim & Ye 2017; Miyato et al. 2018, eq. 16-17), the SNGAN / BigGAN choice.

    D: ``relu(1 - r) + relu(1 + f)``; G: ``-f``.
    """

    name = "hinge"

    def discriminator_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()

    def generator_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return -fake_logits.mean()


class WassersteinGP(AdversarialLoss):
    """Wasserstein loss with gradient penalty (Gulrajani et al. 2017, Algorithm 1).

    Critic: ``f - r + gp_weight * (||d D(x_hat) / d x_hat||_2 - 1)^2`` with ``x_hat = eps * x + (1 - eps) * x_fake``,
    ``eps ~ U[0, 1]`` per example; generator: ``-f``. ``-discriminator_loss`` (without the penalty) estimates the
    Wasserstein-1 distance up to the Lipschitz constant, so it is a useful training curve.

    Args:
        gp_weight: lambda of the gradient penalty (10 in the paper).
        r1_weight: optional R1 on top (usually 0 with WGAN-GP).
    """

    name = "wgan_gp"

    def __init__(self, gp_weight: float = 10.0, r1_weight: float = 0.0):
        super().__init__(r1_weight)
        if gp_weight < 0:
            raise ConfigError(f"gp_weight must be >= 0, got {gp_weight}", keys=("gp_weight",), fix="gp_weight=10.0")
        self.gp_weight = float(gp_weight)

    @property
    def has_gradient_penalty(self) -> bool:
        return self.gp_weight > 0 or self.needs_real_grad

    def discriminator_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return fake_logits.mean() - real_logits.mean()

    def generator_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return -fake_logits.mean()

    def penalties(
        self,
        critic: Critic,
        real: torch.Tensor,
        real_logits: torch.Tensor,
        fake: torch.Tensor,
        eps: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        out = super().penalties(critic, real, real_logits, fake)
        if self.gp_weight:
            if eps is None:
                eps = torch.rand(len(real), 1, 1, 1, device=real.device, dtype=real.dtype)
            x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)  # (B, C, H, W)
            grad = input_gradient(critic(x_hat), x_hat)
            norm = grad.flatten(1).norm(2, dim=1)  # (B,)
            out["gp"] = self.gp_weight * (norm - 1).pow(2).mean()
        return out
