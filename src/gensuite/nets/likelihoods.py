"""Observation models p(x | decoder output) for images in [0, 1]: negative log-likelihood in nats and the mean.

- `DiscretizedGaussian`: a Gaussian integrated over each of the 256 intensity bins of 8-bit data (as the
  decoders of PixelCNN++ and DDPM do), with a learned per-pixel log-scale. Its NLL is a proper likelihood of the
  8-bit image, so bits/dim compare with diffusion's bound and a pixel transformer's exact NLL.
- `Bernoulli`: intensities as Bernoulli means (binary cross-entropy), the classic MNIST VAE objective. Its NLL
  is not a likelihood of 8-bit data; ``eight_bit = False`` says so, and bits/dim from it are not comparable.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.special import log_ndtr, ndtr

from gensuite.errors import require_positive


class Bernoulli(nn.Module):
    """``out`` are logits; the mean image is ``sigmoid(out)``."""

    eight_bit = False

    def __init__(self, channels: int = 1, image_size: int = 28):
        super().__init__()

    def nll(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(out, x, reduction="none").flatten(1).sum(1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(out)


class DiscretizedGaussian(nn.Module):
    """``sigmoid(out)`` is the mean; a learned log-scale per channel, or per pixel (init ``init_scale``).

    One scale per channel weighs every pixel's error alike (as the σ-VAE of Rybkin et al. 2021); per-pixel
    scales give a better likelihood but let the decoder neglect uncertain strokes (dimmer samples).

    Bin k of 8-bit data covers [(k - 0.5)/255, (k + 0.5)/255]; the end bins reach to -inf and +inf.
    """

    eight_bit = True

    def __init__(
        self,
        channels: int,
        image_size: int,
        init_scale: float = 0.1,
        per_pixel_scale: bool = False,
        min_log_scale: float = -9.0,
    ):
        super().__init__()
        require_positive(channels=channels, image_size=image_size, init_scale=init_scale)
        shape = (channels, image_size, image_size) if per_pixel_scale else (channels, 1, 1)
        self.log_scale = nn.Parameter(torch.full(shape, math.log(init_scale)))
        self.min_log_scale = min_log_scale

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(out)

    def nll(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        mean = torch.sigmoid(out)
        log_scale = self.log_scale.clamp(min=self.min_log_scale)
        inv_s = torch.exp(-log_scale)
        half = 0.5 / 255
        upper = (x - mean + half) * inv_s  # standardised bin edges
        lower = (x - mean - half) * inv_s
        # P(bin) = Phi(upper) - Phi(lower); use the tail that avoids cancellation (both near 1 -> mirror).
        mirrored = lower > 0
        delta = torch.where(mirrored, ndtr(-lower) - ndtr(-upper), ndtr(upper) - ndtr(lower))
        # where the bin mass underflows, the density at the bin centre times its width is accurate
        centre = (x - mean) * inv_s
        log_mid = -0.5 * centre**2 - log_scale - 0.5 * math.log(2 * math.pi) - math.log(255)
        log_mass = torch.where(delta > 1e-6, torch.log(delta.clamp_min(1e-12)), log_mid)
        log_p = torch.where(x < half, log_ndtr(upper), torch.where(x > 1 - half, log_ndtr(-lower), log_mass))
        return -log_p.flatten(1).sum(1)
