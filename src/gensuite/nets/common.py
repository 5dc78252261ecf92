"""Small building blocks shared by the parts zoo. No Lightning, no config: plain modules and numbers."""

from __future__ import annotations

import torch
from torch import nn

from gensuite.errors import ConfigError

NORMS = ("batch", "group", "layer", "none")
ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.2), "silu": nn.SiLU, "gelu": nn.GELU}


def make_norm(kind: str, channels: int) -> nn.Module:
    """A 2-d normalisation layer by name: ``batch``, ``group`` (32 groups or fewer), ``layer`` or ``none``."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        groups = next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"norm must be one of {NORMS}, got {kind!r}", keys=("norm",))


def make_act(kind: str) -> nn.Module:
    if kind not in ACTIVATIONS:
        raise ConfigError(f"act must be one of {tuple(ACTIVATIONS)}, got {kind!r}", keys=("act",))
    return ACTIVATIONS[kind]()


def max_halvings(image_size: int, min_size: int = 4) -> int:
    """How often ``image_size`` can be halved exactly while staying >= ``min_size`` (28 -> 14 -> 7: 2)."""
    n, size = 0, image_size
    while size % 2 == 0 and size // 2 >= min_size:
        size //= 2
        n += 1
    return n


def resolution_levels(image_size: int, depth: int | None) -> int:
    """The number of stride-2 resolution levels of a conv net: ``depth`` if it fits, else a ConfigError.

    ``depth=None`` takes as many exact halvings as fit down to 4x4 (28: 2, 32: 3, 64: 4, 8: 1).
    """
    if image_size < 4:
        raise ConfigError(f"image_size must be >= 4, got {image_size}", keys=("image_size",))
    if depth is None:
        return max_halvings(image_size)
    if depth < 0:
        raise ConfigError(f"depth must be >= 0 (or null for auto), got {depth}", keys=("depth",))
    if image_size % (2**depth) != 0 or image_size // (2**depth) < 1:
        fit = max_halvings(image_size, min_size=1)
        raise ConfigError(
            f"depth={depth} halvings need an image_size divisible by {2**depth}, but image_size={image_size} "
            f"can be halved exactly only {fit} times",
            keys=("depth", "image_size"),
            fix=f"set depth <= {fit} (or null for automatic), or use an image size divisible by {2**depth}",
        )
    return depth


def level_widths(width: int, levels: int, max_width: int) -> list[int]:
    """Channel widths per resolution level, doubling from ``width`` and capped at ``max_width``."""
    return [min(width * 2**i, max_width) for i in range(levels + 1)]


class ResBlock(nn.Module):
    """Pre-activation residual block (He et al. 2016, 'Identity mappings'): norm-act-conv twice plus a skip."""

    def __init__(self, in_ch: int, out_ch: int, norm: str = "group", act: str = "silu", dropout: float = 0.0):
        super().__init__()
        self.body = nn.Sequential(
            make_norm(norm, in_ch),
            make_act(act),
            nn.Conv2d(in_ch, out_ch, 3, padding=1),
            make_norm(norm, out_ch),
            make_act(act),
            nn.Dropout(dropout),
            nn.Conv2d(out_ch, out_ch, 3, padding=1),
        )
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


def check_image_input(x: torch.Tensor, channels: int, image_size: int, who: str) -> None:
    """Fail early, in words, when a batch does not match the shape a part was built for."""
    if x.dim() != 4 or x.shape[1] != channels or x.shape[-1] != image_size or x.shape[-2] != image_size:
        raise ValueError(
            f"{who} was built for images (B, {channels}, {image_size}, {image_size}) but got {tuple(x.shape)}"
        )
