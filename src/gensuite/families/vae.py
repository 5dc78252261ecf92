"""Variational autoencoder (Kingma & Welling 2014) with a Gaussian latent and a β weight (Higgins et al. 2017).

Loss per example: ``-log p(x|z) + β · KL(q(z|x) || N(0, I))`` with one reparameterised sample ``z``. With β = 1
this is the negative ELBO, an upper bound on ``-log p(x)``; ``val/nelbo_nats`` and ``val/nelbo_bpd`` always
report the β = 1 bound, so a β-VAE's numbers stay honest. With the discretized Gaussian (an 8-bit likelihood)
the bound is also the family's ``val/nll_bpd``, comparable with the other families; with the Bernoulli
observation model it is not a likelihood of 8-bit pixels, and ``val/nll_bpd`` is left out.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gensuite.errors import ConfigError
from gensuite.families.base import GenerativeModule, Panel


def check_parts_fit(encoder: nn.Module, decoder: nn.Module, latent_dim: int | None = None) -> None:
    """Encoder and decoder must agree on the image shape (and the decoder on the latent size)."""
    pairs = [("in_channels", "out_channels"), ("image_size", "image_size")]
    for enc_key, dec_key in pairs:
        a, b = getattr(encoder, enc_key), getattr(decoder, dec_key)
        if a != b:
            raise ConfigError(
                f"encoder.{enc_key}={a} but decoder.{dec_key}={b}: the decoder must produce the images the "
                "encoder reads",
                keys=(f"encoder.{enc_key}", f"decoder.{dec_key}"),
                fix="leave both to the data config (${data.channels}, ${data.image_size})",
            )
    if latent_dim is not None and decoder.latent_dim != latent_dim:
        raise ConfigError(
            f"decoder.latent_dim={decoder.latent_dim} but latent_dim={latent_dim}",
            keys=("decoder.latent_dim", "latent_dim"),
            fix="set only model.latent_dim (the decoder reads it through ${model.latent_dim})",
        )


class VAE(GenerativeModule):
    """Gaussian-latent VAE over any encoder / decoder of the parts zoo.

    Args:
        encoder: images -> features ``(B, encoder.out_dim)``; a linear head maps them to (mu, log-variance).
        decoder: ``(B, latent_dim)`` -> raw images, read by the likelihood.
        likelihood: `DiscretizedGaussian` or `Bernoulli` (``model/likelihood=``).
        latent_dim: size of z.
        beta: weight of the KL term in training (``nll`` reports β = 1).
        kl_warmup_steps: linear ramp of β from 0 over this many steps (0: none).
    """

    family = "vae"
    sampling_knobs = {"temperature": "scale of the prior's standard deviation, z ~ N(0, t^2 I) (< 1: cleaner, "
                      "less varied samples)"}  # fmt: skip
    temperature: float = 1.0

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        likelihood: nn.Module,
        latent_dim: int = 16,
        beta: float = 1.0,
        kl_warmup_steps: int = 0,
        optimizer=None,
        scheduler=None,
    ):
        super().__init__(optimizer, scheduler)
        if latent_dim <= 0:
            raise ConfigError(f"latent_dim must be > 0, got {latent_dim}", keys=("latent_dim",))
        if beta < 0:
            raise ConfigError(f"beta must be >= 0, got {beta}", keys=("beta",))
        check_parts_fit(encoder, decoder, latent_dim)
        self.encoder, self.decoder, self.likelihood = encoder, decoder, likelihood
        self.to_stats = nn.Linear(encoder.out_dim, 2 * latent_dim)  # features -> (mu, log sigma^2)
        self.latent_dim, self.beta, self.kl_warmup_steps = latent_dim, beta, kl_warmup_steps
        self.image_shape = (decoder.out_channels, decoder.image_size, decoder.image_size)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.to_stats(self.encoder(x)).chunk(2, dim=1)
        return mu, logvar.clamp(-30, 20)

    def _terms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example reconstruction NLL and KL, both in nats, ``(B,)``."""
        mu, logvar = self.encode(x)
        z = mu + self.rank_noise(torch.randn, len(mu), mu.shape[1], dtype=mu.dtype) * torch.exp(0.5 * logvar)
        rec = self.likelihood.nll(self.decoder(z), x)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)  # closed form against N(0, I)
        return rec, kl

    def current_beta(self) -> float:
        if self.kl_warmup_steps and self.training:
            return self.beta * min(1.0, (self.global_step + 1) / self.kl_warmup_steps)
        return self.beta

    def losses(self, batch) -> dict[str, torch.Tensor]:
        x = batch[0]
        rec, kl = self._terms(x)
        nelbo = (rec + kl).mean()
        return {
            "loss": (rec + self.current_beta() * kl).mean(),
            "recon_nats": rec.mean(),
            "kl_nats": kl.mean(),
            "nelbo_nats": nelbo,
            "nelbo_bpd": nelbo / (x[0].numel() * math.log(2)),
        }

    def nll(self, batch) -> torch.Tensor:
        rec, kl = self._terms(batch[0])
        return rec + kl

    def has_likelihood(self) -> bool:
        # a Bernoulli observation model is no likelihood of 8-bit pixels: its bound stays in val/nelbo_*
        return bool(getattr(self.likelihood, "eight_bit", False))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        z = self.temperature * torch.randn(n, self.latent_dim, generator=generator, device=self.device)
        return self.likelihood.mean(self.decoder(z))

    def check_sampling(self) -> None:
        if self.temperature <= 0:
            raise ConfigError(
                f"temperature must be > 0, got {self.temperature}", keys=("sampling.temperature",),
                fix="e.g. sampling.temperature=0.8",
            )  # fmt: skip

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.likelihood.mean(self.decoder(self.encode(x)[0]))

    @torch.no_grad()
    def panels(self, batch, generator=None, n: int = 64) -> dict[str, Panel]:
        x = batch[0][:8]
        rec = self.reconstruct(x)
        # rows: a real image then its reconstruction
        pairs = torch.stack([x, rec], 1).flatten(0, 1).view(-1, 4, *self.image_shape)
        mu = self.encode(batch[0][:16])[0]
        steps = torch.linspace(0, 1, 10, device=mu.device).view(1, -1, 1)
        a, b = mu[0::2, None], mu[1::2, None]  # (P, 1, d) pairs
        path = (1 - steps) * a + steps * b  # (P, 10, d): linear interpolation in latent space
        interp = self.likelihood.mean(self.decoder(path.flatten(0, 1))).view(len(a), 10, *self.image_shape)
        return {"samples": self.sample(n, generator), "reconstructions": pairs, "interpolation": interp}
