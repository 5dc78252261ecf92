"""Encoders: images ``(B, C, H, W)`` -> feature vectors ``(B, out_dim)``.

The same classes serve as the VAE encoder and as the body of a GAN discriminator. Every encoder exposes
``in_channels``, ``image_size`` and ``out_dim`` so a family can check that its parts fit together.
"""

from __future__ import annotations

import torch
from torch import nn

from gensuite.errors import ConfigError, require_positive
from gensuite.nets.common import ResBlock, level_widths, make_act, make_norm, resolution_levels


class MLPEncoder(nn.Module):
    """Flatten, then ``depth`` hidden layers of ``width`` units.

    >>> MLPEncoder(in_channels=1, image_size=28, out_dim=64)(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 64])
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        out_dim: int,
        width: int = 512,
        depth: int = 2,
        act: str = "leaky_relu",
        dropout: float = 0.0,
    ):
        super().__init__()
        require_positive(in_channels=in_channels, image_size=image_size, out_dim=out_dim, width=width)
        if depth < 0:
            raise ConfigError(f"depth must be >= 0, got {depth}", keys=("depth",))
        self.in_channels, self.image_size, self.out_dim = in_channels, image_size, out_dim
        layers: list[nn.Module] = [nn.Flatten()]
        dim = in_channels * image_size * image_size
        for _ in range(depth):
            layers += [nn.Linear(dim, width), make_act(act), nn.Dropout(dropout)]
            dim = width
        layers.append(nn.Linear(dim, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvEncoder(nn.Module):
    """DCGAN-style (Radford et al. 2016): a 3x3 stem, then ``depth`` stride-2 4x4 convs that double the width.

    ``depth=None`` halves down to about 4x4 (28 -> 14 -> 7, 32 -> 16 -> 8 -> 4). Width is capped at ``max_width``.

    >>> ConvEncoder(in_channels=3, image_size=32, out_dim=128)(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 128])
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        out_dim: int,
        width: int = 16,
        depth: int | None = None,
        max_width: int = 256,
        norm: str = "batch",
        act: str = "leaky_relu",
    ):
        super().__init__()
        require_positive(
            in_channels=in_channels, image_size=image_size, out_dim=out_dim, width=width, max_width=max_width
        )
        self.in_channels, self.image_size, self.out_dim = in_channels, image_size, out_dim
        levels = resolution_levels(image_size, depth)
        widths = level_widths(width, levels, max_width)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1), make_act(act)]
        for i in range(levels):
            # (B, w_i, s, s) -> (B, w_{i+1}, s/2, s/2)
            layers += [
                nn.Conv2d(widths[i], widths[i + 1], 4, 2, 1),
                make_norm(norm, widths[i + 1]),
                make_act(act),
            ]
        final = image_size // 2**levels
        layers += [nn.Flatten(), nn.Linear(widths[-1] * final * final, out_dim)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ResNetEncoder(nn.Module):
    """Residual encoder: ``blocks`` pre-activation residual blocks per level, average-pool downsampling.

    >>> ResNetEncoder(in_channels=1, image_size=8, out_dim=32)(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 32])
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        out_dim: int,
        width: int = 32,
        depth: int | None = None,
        blocks: int = 1,
        max_width: int = 256,
        norm: str = "group",
        act: str = "silu",
    ):
        super().__init__()
        require_positive(
            in_channels=in_channels,
            image_size=image_size,
            out_dim=out_dim,
            width=width,
            blocks=blocks,
            max_width=max_width,
        )
        self.in_channels, self.image_size, self.out_dim = in_channels, image_size, out_dim
        levels = resolution_levels(image_size, depth)
        widths = level_widths(width, levels, max_width)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1)]
        prev = widths[0]
        for i in range(levels + 1):
            for _ in range(blocks):
                layers.append(ResBlock(prev, widths[i], norm, act))
                prev = widths[i]
            if i < levels:
                layers.append(nn.AvgPool2d(2))  # (B, w, s, s) -> (B, w, s/2, s/2)
        final = image_size // 2**levels
        layers += [make_norm(norm, widths[-1]), make_act(act), nn.Flatten()]
        layers.append(nn.Linear(widths[-1] * final * final, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
