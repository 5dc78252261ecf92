"""Decoders: latent vectors ``(B, latent_dim)`` -> images ``(B, C, H, W)``, unbounded ("raw") values.

The same classes are the VAE decoder and the GAN generator; the family maps the raw output to what it needs
(logits or a mean for a likelihood, ``tanh`` for a GAN). Every decoder exposes ``latent_dim``,
``out_channels`` and ``image_size``. An optional class-conditional input (``num_classes > 0``) adds a learned
class embedding to the latent, which is how the conditional GAN feeds labels to its generator.
"""

from __future__ import annotations

import torch
from torch import nn

from gensuite.errors import ConfigError, require_positive
from gensuite.nets.common import ResBlock, level_widths, make_act, make_norm, resolution_levels


class _Decoder(nn.Module):
    """Shared plumbing: argument checks, the optional class embedding, shape bookkeeping."""

    def __init__(self, latent_dim: int, out_channels: int, image_size: int, num_classes: int = 0):
        super().__init__()
        require_positive(latent_dim=latent_dim, out_channels=out_channels, image_size=image_size)
        if num_classes < 0:
            raise ConfigError(f"num_classes must be >= 0, got {num_classes}", keys=("num_classes",))
        self.latent_dim, self.out_channels, self.image_size = latent_dim, out_channels, image_size
        self.num_classes = num_classes
        self.class_embed = nn.Embedding(num_classes, latent_dim) if num_classes else None

    def condition(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if self.class_embed is None:
            return z
        if y is None:
            raise ValueError("this decoder was built with num_classes > 0 and needs labels y")
        return z + self.class_embed(y)


class MLPDecoder(_Decoder):
    """``depth`` hidden layers of ``width`` units, then one linear layer to ``C*H*W`` values.

    >>> MLPDecoder(latent_dim=8, out_channels=1, image_size=28)(torch.zeros(2, 8)).shape
    torch.Size([2, 1, 28, 28])
    """

    def __init__(
        self,
        latent_dim: int,
        out_channels: int,
        image_size: int,
        width: int = 512,
        depth: int = 2,
        act: str = "leaky_relu",
        num_classes: int = 0,
    ):
        super().__init__(latent_dim, out_channels, image_size, num_classes)
        require_positive(width=width)
        if depth < 0:
            raise ConfigError(f"depth must be >= 0, got {depth}", keys=("depth",))
        layers: list[nn.Module] = []
        dim = latent_dim
        for _ in range(depth):
            layers += [nn.Linear(dim, width), make_act(act)]
            dim = width
        layers.append(nn.Linear(dim, out_channels * image_size * image_size))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        out = self.net(self.condition(z, y))
        return out.view(-1, self.out_channels, self.image_size, self.image_size)  # (B, C*H*W) -> (B, C, H, W)


class ConvDecoder(_Decoder):
    """DCGAN-style generator: a linear map to a small feature map, then ``depth`` stride-2 transposed convs.

    Mirrors `ConvEncoder`: 28x28 starts from 7x7, 32x32 from 4x4, 8x8 from 4x4.

    >>> ConvDecoder(latent_dim=16, out_channels=3, image_size=32)(torch.zeros(2, 16)).shape
    torch.Size([2, 3, 32, 32])
    """

    def __init__(
        self,
        latent_dim: int,
        out_channels: int,
        image_size: int,
        width: int = 16,
        depth: int | None = None,
        max_width: int = 256,
        norm: str = "batch",
        act: str = "relu",
        num_classes: int = 0,
    ):
        super().__init__(latent_dim, out_channels, image_size, num_classes)
        require_positive(width=width, max_width=max_width)
        levels = resolution_levels(image_size, depth)
        widths = level_widths(width, levels, max_width)[::-1]  # widest at the lowest resolution
        self.base = image_size // 2**levels
        self.base_width = widths[0]
        self.fc = nn.Linear(latent_dim, widths[0] * self.base * self.base)
        layers: list[nn.Module] = [make_norm(norm, widths[0]), make_act(act)]
        for i in range(levels):
            # (B, w_i, s, s) -> (B, w_{i+1}, 2s, 2s)
            layers += [
                nn.ConvTranspose2d(widths[i], widths[i + 1], 4, 2, 1),
                make_norm(norm, widths[i + 1]),
                make_act(act),
            ]
        layers.append(nn.Conv2d(widths[-1], out_channels, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.fc(self.condition(z, y)).view(-1, self.base_width, self.base, self.base)
        return self.net(h)


class ResNetDecoder(_Decoder):
    """Residual generator: ``blocks`` residual blocks per level, nearest-neighbour upsampling then a 3x3 conv.

    >>> ResNetDecoder(latent_dim=16, out_channels=1, image_size=28)(torch.zeros(2, 16)).shape
    torch.Size([2, 1, 28, 28])
    """

    def __init__(
        self,
        latent_dim: int,
        out_channels: int,
        image_size: int,
        width: int = 32,
        depth: int | None = None,
        blocks: int = 1,
        max_width: int = 256,
        norm: str = "group",
        act: str = "silu",
        num_classes: int = 0,
    ):
        super().__init__(latent_dim, out_channels, image_size, num_classes)
        require_positive(width=width, blocks=blocks, max_width=max_width)
        levels = resolution_levels(image_size, depth)
        widths = level_widths(width, levels, max_width)[::-1]
        self.base = image_size // 2**levels
        self.base_width = widths[0]
        self.fc = nn.Linear(latent_dim, widths[0] * self.base * self.base)
        layers: list[nn.Module] = []
        prev = widths[0]
        for i in range(levels + 1):
            for _ in range(blocks):
                layers.append(ResBlock(prev, widths[i], norm, act))
                prev = widths[i]
            if i < levels:
                # (B, w, s, s) -> (B, w, 2s, 2s)
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(prev, prev, 3, padding=1)]
        layers += [make_norm(norm, prev), make_act(act), nn.Conv2d(prev, out_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.fc(self.condition(z, y)).view(-1, self.base_width, self.base, self.base)
        return self.net(h)
