"""VQ-VAE (van den Oord et al. 2017): the VAE family's discrete variant, and the ``vq`` tokenizer's source.

An encoder maps images to a latent grid, every grid position is snapped to its nearest codebook vector, and a
decoder reads the quantised grid. Loss per pixel: ``-log p(x | z_q) / (C*H*W) + beta * ||z_e - sg(e)||^2`` (the
codebook learns by EMA or by its own loss: `gensuite.nets.quantizers.VectorQuantizer`). The observation model is
the VAE's (``model/likelihood=bernoulli|gaussian``), so ``val/recon_nats`` reads like the VAE's.

A VQ-VAE alone has no prior over codes: the paper fits an autoregressive one afterwards (stage 2:
``python train.py model=transformer model/tokenizer=vq model.tokenizer.path=<this run's last.ckpt>``). Until then
`sample` draws every code independently from its training frequency — a baseline that shows what the learned
prior adds — and the family reports no likelihood (``val/nll_bpd`` is absent). Codebook health is logged:
``train/code_perplexity`` and ``train/code_usage`` per batch, ``val/codebook_perplexity`` and
``val/codebook_usage`` over the whole validation set, ``train/restarts_total`` (dead codes restarted so far).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gensuite.errors import ConfigError
from gensuite.families.base import GenerativeModule, Panel


def check_grid_parts(encoder: nn.Module, decoder: nn.Module, quantizer: nn.Module) -> None:
    """Encoder, quantizer and decoder must agree on the image shape, the code size and the grid."""
    pairs = [
        ("grid_encoder.in_channels", encoder.in_channels, "grid_decoder.out_channels", decoder.out_channels),
        ("grid_encoder.image_size", encoder.image_size, "grid_decoder.image_size", decoder.image_size),
        ("grid_encoder.code_dim", encoder.code_dim, "quantizer.code_dim", quantizer.code_dim),
        ("grid_decoder.code_dim", decoder.code_dim, "quantizer.code_dim", quantizer.code_dim),
        ("grid_encoder.downsample", encoder.grid_size, "grid_decoder.upsample", decoder.grid_size),
    ]
    for key_a, a, key_b, b in pairs:
        if a != b:
            raise ConfigError(
                f"{key_a} and {key_b} do not fit ({a} vs {b}): the VQ-VAE's parts must agree",
                keys=(key_a, key_b),
                fix="leave sizes to the model config (code_dim: ${model.code_dim}; image sizes from ${data.*}), "
                "and give the decoder as many upsamplings as the encoder has downsamplings",
            )


class VQVAE(GenerativeModule):
    """Vector-quantised autoencoder over a spatial latent grid.

    Args:
        grid_encoder: images -> ``(B, code_dim, h, w)`` (`gensuite.nets.grids.GridEncoder`).
        grid_decoder: ``(B, code_dim, h, w)`` -> raw images, read by the likelihood.
        quantizer: `gensuite.nets.quantizers.VectorQuantizer`.
        likelihood: `Bernoulli` or `DiscretizedGaussian` (``model/likelihood=``).
        num_codes, code_dim: the codebook's size (the parts read them through ``${model.num_codes}`` etc.; given
            here too so that a part set apart from them fails at construction).
    """

    family = "vqvae"

    def __init__(
        self,
        grid_encoder: nn.Module,
        grid_decoder: nn.Module,
        quantizer: nn.Module,
        likelihood: nn.Module,
        num_codes: int | None = None,
        code_dim: int | None = None,
        optimizer=None,
        scheduler=None,
    ):
        super().__init__(optimizer, scheduler)
        for key, value, part in (
            ("num_codes", num_codes, quantizer.num_codes),
            ("code_dim", code_dim, quantizer.code_dim),
        ):
            if value is not None and value != part:
                raise ConfigError(
                    f"{key}={value} but quantizer.{key}={part}",
                    keys=(key, f"quantizer.{key}"),
                    fix=f"set only model.{key} (the parts read it through ${{model.{key}}})",
                )
        check_grid_parts(grid_encoder, grid_decoder, quantizer)
        self.grid_encoder, self.grid_decoder = grid_encoder, grid_decoder
        self.quantizer, self.likelihood = quantizer, likelihood
        self.num_codes = quantizer.num_codes
        self.grid_size = grid_encoder.grid_size
        self.image_shape = (grid_decoder.out_channels, grid_decoder.image_size, grid_decoder.image_size)
        self._val_counts: torch.Tensor | None = None

    # -- the tokenizer's interface -----------------------------------------------------------------------------
    @torch.no_grad()
    def encode_codes(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` in [0, 1] -> codes ``(B, h, w)`` int64."""
        return self.quantizer(self.grid_encoder(x))[1]

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``(B, h, w)`` -> images ``(B, C, H, W)`` in [0, 1] (the likelihood's mean)."""
        return self.likelihood.mean(self.grid_decoder(self.quantizer.lookup(codes)))

    # -- protocol ----------------------------------------------------------------------------------------------
    def losses(self, batch) -> dict[str, torch.Tensor]:
        x = batch[0]
        z_q, _, stats = self.quantizer(self.grid_encoder(x))
        rec = self.likelihood.nll(self.grid_decoder(z_q), x)  # (B,) nats
        if not self.training and self._val_counts is not None:
            self._val_counts += stats["counts"]
        out = {
            # per pixel, so that beta keeps its paper meaning whatever the image size
            "loss": rec.mean() / x[0].numel() + stats["vq_loss"],
            "recon_nats": rec.mean(),
            "commitment": stats["commitment"],
        }
        if self.training:  # per batch; validation reports the whole set (val/codebook_*)
            out["code_perplexity"] = stats["perplexity"]
            out["code_usage"] = stats["usage"]
            out["restarts_total"] = self.quantizer.restarts_total.float()
        return out

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode_codes(self.encode_codes(x))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, labels=None, options=None) -> torch.Tensor:
        """Codes drawn independently from their training frequencies (no learned prior), decoded (unconditional,
        no knobs: ``labels`` and ``options`` are the protocol's and change nothing)."""
        p = self.quantizer.code_distribution()
        if generator is not None:
            p = p.to(generator.device)
        codes = torch.multinomial(p, n * self.grid_size**2, replacement=True, generator=generator)
        return self.decode_codes(codes.to(self.device).view(n, self.grid_size, self.grid_size))

    @torch.no_grad()
    def panels(self, batch, generator=None, n: int = 64) -> dict[str, Panel]:
        x = batch[0][:16]
        per_row = min(4, len(x))  # (image, reconstruction) pairs per row; a batch of fewer than 4 fills one row
        x = x[: len(x) - len(x) % per_row]
        pairs = torch.stack([x, self.reconstruct(x)], 1).flatten(0, 1).view(-1, 2 * per_row, *self.image_shape)
        return {"samples": self.sample(n, generator), "reconstructions": pairs}

    # -- codebook usage over the whole validation set ----------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_counts = torch.zeros(self.num_codes, device=self.device)

    def on_validation_epoch_end(self) -> None:
        counts = self._val_counts
        self._val_counts = None
        if counts is None or counts.sum() == 0:
            return
        counts = self.all_gather(counts).reshape(-1, self.num_codes).sum(0)
        p = counts / counts.sum()
        entropy = -(p * torch.log(p.clamp_min(1e-10))).sum()
        self.log_dict(
            {
                "val/codebook_perplexity": torch.exp(entropy),
                "val/codebook_usage": (counts > 0).float().mean(),
                "val/code_bits_unigram": entropy / math.log(2),
            },
            # the counts were gathered, so every rank logs the same values: the mean over ranks leaves them as they
            # are (sync_dist=False would make Lightning warn under DDP that epoch-level values are not reduced)
            sync_dist=True,
        )
