"""Latent diffusion (Rombach et al. 2022): diffusion in the latent space of a frozen, already trained autoencoder.

``python train.py model=latent_diffusion autoencoder_ckpt=logs/runs/vae-mnist5k/<run>/checkpoints/last.ckpt``

The VAE checkpoint is loaded by the loader the config passes in (``load_autoencoder``: `gensuite.runs.checkpoint
.frozen_autoencoder`, which reads it with `gensuite.runs.checkpoint.load_model`: weights only, family checked); its own
encoder, decoder and likelihood are reused — not copied: data -> ``z ~ q(z|x)`` (its encoder) -> diffusion on
``z · latent_scale`` -> its decoder and likelihood mean -> images. ``latent_scale`` (1 / std of the latents, as
the LDM paper's scale factor) is measured on the training data when fitting starts and saved with the weights.

The autoencoder stays frozen and in eval mode (its BatchNorm statistics too); only the denoiser trains, and the
EMA preset averages the denoiser alone. Its weights travel inside this model's checkpoints; rebuilding the model
from one (sample.py, eval.py) reads the autoencoder's architecture from ``autoencoder_ckpt`` again, so that
file must still exist.

No ``val/nll_bpd``: a bound on the density of latents is not a likelihood of 8-bit pixels.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

from gensuite.diffusion.samplers import Sampler
from gensuite.diffusion.schedules import NoiseSchedule
from gensuite.errors import CheckpointError, ConfigError
from gensuite.families.base import Panel
from gensuite.families.diffusion import Diffusion


def check_autoencoder(vae: nn.Module, path: str | None) -> nn.Module:
    """The frozen VAE of ``autoencoder_ckpt`` if it has what latent diffusion reuses, else a clear error."""
    for attr in ("encode", "decoder", "likelihood", "latent_dim", "image_shape"):
        if not hasattr(vae, attr):
            raise CheckpointError(f"autoencoder_ckpt={path}: the model has no `{attr}`; it cannot be reused here")
    return vae


class LatentDiffusion(Diffusion):
    """Diffusion on the vector latents of a frozen VAE.

    Args:
        autoencoder_ckpt: path of a ``model=vae`` checkpoint.
        load_autoencoder: ``path -> the frozen model`` (the yaml's: `gensuite.runs.checkpoint.frozen_autoencoder`).
        channels, image_size: the data's (checked against the autoencoder's images).
        denoiser: a partial (``_partial_: true``) called with ``dim=<the VAE's latent_dim>``, e.g. `MLPDenoiser`.
        The other arguments are `Diffusion`'s; ``clip_denoised`` defaults to False (latents are unbounded).
    """

    family = "latent_diffusion"
    nll = None  # no likelihood of the pixels (see the module docstring)

    def __init__(
        self,
        autoencoder_ckpt: str | None,
        denoiser: Callable[..., nn.Module],
        schedule: NoiseSchedule,
        sampler: Sampler | None = None,
        channels: int | None = None,
        image_size: int | None = None,
        clip_denoised: bool = False,
        latent_scale_samples: int = 2000,
        load_autoencoder: Callable[[str | None], nn.Module] | None = None,
        **kwargs,
    ):
        if load_autoencoder is None:
            raise ConfigError(
                "model.load_autoencoder is not set: latent diffusion needs the loader of its frozen autoencoder",
                keys=("load_autoencoder",),
                fix="model.load_autoencoder={_target_: gensuite.runs.checkpoint.frozen_autoencoder, _partial_: true} "
                "(as conf/model/latent_diffusion.yaml has it)",
            )
        autoencoder = check_autoencoder(load_autoencoder(autoencoder_ckpt), autoencoder_ckpt)
        ae_shape = tuple(autoencoder.image_shape)
        if getattr(autoencoder, "num_classes", 0):
            raise ConfigError(
                "the autoencoder is a conditional VAE: its latents mean nothing without a label",
                keys=("autoencoder_ckpt",),
                fix="use an unconditional VAE (trained with model.num_classes=0)",
            )
        if channels is not None and image_size is not None and ae_shape != (channels, image_size, image_size):
            raise ConfigError(
                f"the autoencoder makes {ae_shape[0]}x{ae_shape[1]}x{ae_shape[2]} images but the data is "
                f"{channels}x{image_size}x{image_size}",
                keys=("autoencoder_ckpt", "channels", "image_size"),
                fix="use an autoencoder trained on this data (model=vae data=<the same data>)",
            )
        if isinstance(denoiser, functools.partial):
            denoiser = denoiser(dim=autoencoder.latent_dim)
        elif getattr(denoiser, "dim", None) != autoencoder.latent_dim:
            raise ConfigError(
                f"the denoiser works on {getattr(denoiser, 'dim', '?')}-d vectors but the autoencoder's latents "
                f"have {autoencoder.latent_dim} dimensions",
                keys=("denoiser",),
                fix="model/denoiser=mlp (its size is taken from the autoencoder)",
            )
        super().__init__(denoiser, schedule, sampler, clip_denoised=clip_denoised, **kwargs)
        self.autoencoder = autoencoder
        self.latent_scale_samples = latent_scale_samples
        self.register_buffer("latent_scale", torch.zeros(()))  # 0: not measured yet

    def train(self, mode: bool = True):
        super().train(mode)
        self.autoencoder.eval()  # frozen: BatchNorm / dropout of the autoencoder never switch to training
        return self

    @torch.no_grad()
    def encode_latents(self, x: torch.Tensor) -> torch.Tensor:
        """``z ~ q(z|x)`` of the autoencoder, unscaled, ``(B, latent_dim)``."""
        mu, logvar = self.autoencoder.encode(x)
        return mu + self.rank_noise(torch.randn, len(mu), mu.shape[1], dtype=mu.dtype) * torch.exp(0.5 * logvar)

    @torch.no_grad()
    def measure_latent_scale(self, x: torch.Tensor) -> None:
        self.latent_scale.fill_(1.0 / self.encode_latents(x).std().clamp_min(1e-6).item())

    def on_fit_start(self) -> None:
        if self.latent_scale.item() == 0:
            x, _ = self.trainer.datamodule.real_images("train", self.latent_scale_samples)
            self.measure_latent_scale(x.to(self.device))

    def encode_data(self, x: torch.Tensor) -> torch.Tensor:
        if self.latent_scale.item() == 0:  # used outside `fit`: measure on the first batch seen
            self.measure_latent_scale(x)
        return self.encode_latents(x) * self.latent_scale

    def decode_data(self, z: torch.Tensor) -> torch.Tensor:
        scale = self.latent_scale if self.latent_scale.item() > 0 else torch.ones_like(self.latent_scale)
        return self.autoencoder.likelihood.mean(self.autoencoder.decoder(z / scale)).clamp(0, 1)

    @torch.no_grad()
    def panels(self, batch, generator=None, n: int = 64) -> dict[str, Panel]:
        out: dict[str, Panel] = {"samples": self.sample(n, generator), "sampler": self.sampler.describe()}
        x = batch[0][:8]
        # what the frozen autoencoder can express at all: real images above their reconstructions
        rec = self.decode_data(self.encode_data(x))
        out["autoencoder"] = torch.stack([x, rec])  # (2, 8, C, H, W)
        if self.conditional:
            out["class_grid"] = self.class_grid(generator)
        return out
