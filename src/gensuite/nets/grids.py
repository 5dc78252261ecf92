"""Spatial encoder / decoder: images <-> a latent *grid* ``(B, code_dim, h, w)``, for the VQ-VAE.

The encoders and decoders of `gensuite.nets.encoders` / `decoders` map to and from *vectors*; a VQ-VAE quantises
each position of a spatial grid instead, so that a code stands for a patch and a prior over codes can read them in
raster order. The layout follows the VQ-VAE paper (van den Oord et al. 2017, sec. 4.1): stride-2 4x4 convolutions
down to the grid, residual blocks, a 1x1 projection to the code dimension; the decoder mirrors it with transposed
convolutions. 28x28 with ``downsample=2`` gives a 7x7 grid.
"""

from __future__ import annotations

import torch
from torch import nn

from gensuite.errors import ConfigError, require_positive
from gensuite.nets.common import ResBlock, check_image_input, make_act, make_norm


def grid_size_of(image_size: int, downsample: int) -> int:
    """Side of the latent grid: ``image_size / 2**downsample``, or a ConfigError when it does not divide."""
    if downsample < 1:
        raise ConfigError(f"downsample must be >= 1, got {downsample}", keys=("downsample",))
    if image_size % 2**downsample != 0:
        raise ConfigError(
            f"downsample={downsample} halvings need an image_size divisible by {2**downsample}, got {image_size}",
            keys=("downsample", "image_size"),
            fix="use fewer halvings (28x28 images: downsample <= 2)",
        )
    return image_size // 2**downsample


class GridEncoder(nn.Module):
    """Images ``(B, C, H, W)`` -> latent grid ``(B, code_dim, H / 2**downsample, W / 2**downsample)``.

    >>> GridEncoder(in_channels=1, image_size=28, code_dim=16, width=32)(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 16, 7, 7])
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        code_dim: int,
        width: int = 64,
        downsample: int = 2,
        blocks: int = 2,
        norm: str = "none",
        act: str = "relu",
    ):
        super().__init__()
        require_positive(in_channels=in_channels, image_size=image_size, code_dim=code_dim, width=width)
        self.in_channels, self.image_size, self.code_dim = in_channels, image_size, code_dim
        self.grid_size = grid_size_of(image_size, downsample)
        layers: list[nn.Module] = []
        prev = in_channels
        for i in range(downsample):
            # (B, c, s, s) -> (B, w, s/2, s/2); the first level at half width (cheap at full resolution)
            w = width // 2 if i == 0 and downsample > 1 else width
            layers += [nn.Conv2d(prev, w, 4, 2, 1), make_act(act)]
            prev = w
        layers.append(nn.Conv2d(prev, width, 3, padding=1))
        layers += [ResBlock(width, width, norm, act) for _ in range(blocks)]
        layers += [make_norm(norm, width), make_act(act), nn.Conv2d(width, code_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_input(x, self.in_channels, self.image_size, "GridEncoder")
        return self.net(x)


class GridDecoder(nn.Module):
    """Latent grid ``(B, code_dim, h, w)`` -> raw images ``(B, C, h * 2**upsample, ...)`` (unbounded; a likelihood
    of `gensuite.nets.likelihoods` reads them).

    >>> GridDecoder(code_dim=16, out_channels=1, image_size=28, width=32)(torch.zeros(2, 16, 7, 7)).shape
    torch.Size([2, 1, 28, 28])
    """

    def __init__(
        self,
        code_dim: int,
        out_channels: int,
        image_size: int,
        width: int = 64,
        upsample: int = 2,
        blocks: int = 2,
        norm: str = "none",
        act: str = "relu",
    ):
        super().__init__()
        require_positive(code_dim=code_dim, out_channels=out_channels, image_size=image_size, width=width)
        self.code_dim, self.out_channels, self.image_size = code_dim, out_channels, image_size
        try:
            self.grid_size = grid_size_of(image_size, upsample)
        except ConfigError as err:  # same rule, this part's own argument name
            raise ConfigError(
                err.message.replace("downsample", "upsample"), keys=("upsample", "image_size"), fix=err.fix
            ) from None
        layers: list[nn.Module] = [nn.Conv2d(code_dim, width, 3, padding=1)]
        layers += [ResBlock(width, width, norm, act) for _ in range(blocks)]
        layers += [make_norm(norm, width), make_act(act)]
        prev = width
        for i in range(upsample):
            # (B, w, s, s) -> (B, w', 2s, 2s); the last level emits the image channels
            last = i == upsample - 1
            w = out_channels if last else (width // 2 if i == upsample - 2 else width)
            layers.append(nn.ConvTranspose2d(prev, w, 4, 2, 1))
            if not last:
                layers.append(make_act(act))
            prev = w
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 4 or z.shape[1] != self.code_dim or z.shape[-1] != self.grid_size:
            raise ValueError(
                f"GridDecoder was built for grids (B, {self.code_dim}, {self.grid_size}, {self.grid_size}) "
                f"but got {tuple(z.shape)}"
            )
        return self.net(z)
