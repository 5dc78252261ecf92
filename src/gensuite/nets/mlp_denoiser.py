"""A denoiser for vectors: ``(x_t (B, dim), t (B,), y (B,) or None) -> (B, dim)``.

The autoencoders of the parts zoo have vector latents ``(B, latent_dim)``, so latent diffusion denoises vectors:
a residual MLP whose blocks are modulated by the same time / class embedding the `UNet` uses (scale and shift
after a LayerNorm). Like the UNet it never sees the noise schedule and starts by predicting 0.
"""

from __future__ import annotations

import torch
from torch import nn

from gensuite.errors import ConfigError, require_positive
from gensuite.nets.unet import ConditionEmbedding, zero_init


class _MLPBlock(nn.Module):
    def __init__(self, width: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * width))
        self.body = nn.Sequential(
            nn.Linear(width, 2 * width), nn.SiLU(), nn.Dropout(dropout), zero_init(nn.Linear(2 * width, width))
        )

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.emb(emb).chunk(2, dim=1)  # 2 x (B, width)
        return h + self.body(self.norm(h) * (1 + scale) + shift)


class MLPDenoiser(nn.Module):
    """Residual MLP denoiser for vectors of size ``dim``.

    Args:
        dim: size of the vectors (latent diffusion passes the autoencoder's ``latent_dim``).
        width: hidden width; depth: residual blocks; dropout: inside the blocks.
        num_classes: > 0 adds class conditioning with a "no label" class (``y=-1`` or ``None``).

    >>> MLPDenoiser(dim=16, width=32)(torch.zeros(2, 16), torch.tensor([0, 999])).shape
    torch.Size([2, 16])
    """

    def __init__(self, dim: int, width: int = 256, depth: int = 4, dropout: float = 0.0, num_classes: int = 0):
        super().__init__()
        require_positive(dim=dim, width=width, depth=depth)
        if not 0 <= dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}", keys=("dropout",))
        self.dim, self.num_classes = dim, num_classes
        self.embed = ConditionEmbedding(width, width, num_classes)
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(_MLPBlock(width, width, dropout) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(width), zero_init(nn.Linear(width, dim)))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"MLPDenoiser was built for vectors (B, {self.dim}) but got {tuple(x.shape)}")
        emb = self.embed(t, y)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h)
