"""Denoisers for images: a UNet mapping ``(x_t, t[, y])`` to a tensor shaped like ``x_t``.

The network never sees the noise schedule (DESIGN.md): ``t`` is just a number per example that it embeds, and the
diffusion family decides what the output means (noise ε, velocity v, ...). The layout follows DDPM (Ho et al.
2020, appendix B) with the refinements of Improved DDPM / ADM (Nichol & Dhariwal 2021; Dhariwal & Nichol 2021):

- residual blocks with the time (and class) embedding applied as a scale and shift after the second GroupNorm;
- self-attention at chosen resolutions;
- skip connections from every block of the way down to the way up;
- zero-initialised last convolutions of each block and of the output, so the network starts as the identity
  (blocks) and predicts 0 (output): training starts from the loss of the trivial predictor.

Class conditioning (``num_classes > 0``) adds a learned class embedding to the time embedding; label ``-1`` (or
``y=None``) selects an extra "no label" embedding, which is what classifier-free guidance (Ho & Salimans 2022)
needs: one network that is conditional and unconditional at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gensuite.errors import ConfigError, require_positive
from gensuite.nets.common import check_image_input


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) step numbers, as the Transformer's positions.

    Args:
        t: ``(B,)`` step numbers, any float or integer dtype.
        dim: embedding size (even).
    Returns:
        ``(B, dim)`` float32: ``[cos(t·f_k), sin(t·f_k)]`` with frequencies ``f_k`` from 1 down to 1/max_period.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups of at least 4 channels (DDPM's GroupNorm(32) at >= 128 channels; a narrow
    CPU-sized UNet would otherwise normalise single channels, which removes their mean)."""
    groups = next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0 and (channels // g >= 4 or g == 1))
    return nn.GroupNorm(groups, channels)


def zero_init(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ConditionEmbedding(nn.Module):
    """``(t, y)`` -> one ``(B, dim)`` vector: an MLP over the sinusoidal time embedding plus a class embedding.

    Labels ``-1`` (or ``y=None``) map to the extra "no label" row ``num_classes`` (classifier-free guidance).
    """

    def __init__(self, in_dim: int, dim: int, num_classes: int = 0):
        super().__init__()
        if num_classes < 0:
            raise ConfigError(f"num_classes must be >= 0, got {num_classes}", keys=("num_classes",))
        self.in_dim, self.num_classes = in_dim, num_classes
        self.time_mlp = nn.Sequential(nn.Linear(in_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.class_embed = nn.Embedding(num_classes + 1, dim) if num_classes else None

    def forward(self, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.in_dim))
        if self.class_embed is not None:
            if y is None:
                y = torch.full((len(t),), -1, dtype=torch.long, device=t.device)
            emb = emb + self.class_embed(torch.where(y < 0, self.num_classes, y))
        return emb


class TimeResBlock(nn.Module):
    """Pre-activation residual block that takes in the embedding either as a scale and shift of its second
    normalisation (``scale_shift=True``, ADM's ``use_scale_shift_norm``) or added to its features before it (DDPM's
    original block, ``scale_shift=False``: half the embedding projection's weights)."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float = 0.0, scale_shift: bool = True):
        super().__init__()
        self.scale_shift = scale_shift
        self.in_layers = nn.Sequential(group_norm(in_ch), nn.SiLU(), nn.Conv2d(in_ch, out_ch, 3, padding=1))
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, (2 if scale_shift else 1) * out_ch))
        self.out_norm = group_norm(out_ch)
        self.out_layers = nn.Sequential(
            nn.SiLU(), nn.Dropout(dropout), zero_init(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        )
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        if self.scale_shift:
            scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)  # (B, 2*out, 1, 1) -> 2 x (B, out, 1, 1)
            h = self.out_norm(h) * (1 + scale) + shift
        else:
            h = self.out_norm(h + self.emb(emb)[:, :, None, None])  # (B, out, s, s) + (B, out, 1, 1)
        return self.skip(x) + self.out_layers(h)


class SelfAttention(nn.Module):
    """Multi-head self-attention over the pixels of a feature map, with a residual connection."""

    def __init__(self, channels: int, num_heads: int = 1):
        super().__init__()
        if channels % num_heads:
            raise ConfigError(
                f"num_heads={num_heads} does not divide the {channels} channels of an attention layer",
                keys=("num_heads",),
                fix="choose num_heads dividing base_width * channel_mults[level]",
            )
        self.num_heads = num_heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero_init(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        # The 1x1 convolutions are applied as matmuls over pixel tokens: that leaves each head's channels
        # contiguous, which SDPA's fused (flash) kernels need; the strided q/k/v of a conv output fall back to
        # its unfused path. Same weights, same function.
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        qkv = F.linear(tokens, self.qkv.weight.view(3 * c, c), self.qkv.bias)  # (B, HW, 3C)
        q, k, v = qkv.view(b, h * w, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)  # each of q, k, v, out: (B, heads, HW, c/heads)
        out = F.linear(out.transpose(1, 2).reshape(b, h * w, c), self.proj.weight.view(c, c), self.proj.bias)
        return x + out.transpose(1, 2).view(b, c, h, w)  # (B, HW, C) -> (B, C, H, W)


class Upsample(nn.Sequential):
    """Nearest-neighbour 2x upsampling, then a 3x3 convolution: ``(B, C, s, s) -> (B, C, 2s, 2s)`` (no checkerboard
    artefacts, unlike a transposed convolution).

    Computed without the upsampled map (the sub-pixel form of Shi et al. 2016): output rows ``2r - 1`` and ``2r``
    both see only input rows ``r - 1`` and ``r``, through the 3x3 kernel's taps summed where they fall on the same
    input pixel, and so do the columns. One 2x2 convolution with 4x the output channels and a pixel shuffle give all
    four phases: the same function with about half the multiply-adds (16 (s+1)^2 instead of 36 s^2 per channel
    pair). The children stay ``nn.Upsample`` and ``nn.Conv2d``, so the parameter names are those of the plain form.
    """

    def __init__(self, channels: int):
        super().__init__(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(channels, channels, 3, padding=1))
        # taps of a 3x3 kernel's row over input rows (r-1, r): output row 2r-1 gets [w0+w1, w2], row 2r [w0, w1+w2]
        taps = torch.tensor([[[1.0, 1, 0], [0, 0, 1]], [[1, 0, 0], [0, 1, 1]]])  # (phase, 2 taps, 3 taps)
        fold = torch.einsum("pau,qbv->pqabuv", taps, taps).reshape(16, 9)  # (row/col phase and 2x2 tap, 3x3 tap)
        self.register_buffer("fold", fold, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self[1]
        o, i = conv.weight.shape[:2]
        w = (conv.weight.reshape(o * i, 9) @ self.fold.T).view(o, i, 4, 2, 2).transpose(1, 2).reshape(4 * o, i, 2, 2)
        y = F.conv2d(x, w, conv.bias.repeat_interleave(4), padding=1)  # (B, 4C, s+1, s+1): 4 phases per channel
        # shuffled row 2r + phase is output row 2r - 1 + phase: drop the first and last rows and columns
        return F.pixel_shuffle(y, 2)[:, :, 1:-1, 1:-1]  # (B, C, 2s, 2s)


class _Level(nn.Module):
    """A residual block, optionally followed by attention (one step of the UNet's way down or up)."""

    def __init__(
        self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, attention: bool, num_heads: int, scale_shift: bool
    ):
        super().__init__()
        self.res = TimeResBlock(in_ch, out_ch, emb_dim, dropout, scale_shift)
        self.attn = SelfAttention(out_ch, num_heads) if attention else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        x = self.res(x, emb)
        return self.attn(x) if self.attn is not None else x


class UNet(nn.Module):
    """UNet denoiser: ``(x_t (B,C,H,W), t (B,), y (B,) or None) -> (B, out_channels, H, W)``.

    Args:
        in_channels, image_size: the images (or latent maps) it denoises; ``image_size`` must be divisible by
            ``2 ** (len(channel_mults) - 1)``.
        base_width: channels of the first level.
        channel_mults: one multiplier of ``base_width`` per resolution level; a level halves the resolution.
        num_res_blocks: residual blocks per level on the way down (one more on the way up, as in DDPM).
        attention_levels: the resolution levels that get self-attention, as indices into ``channel_mults``
            (0: full resolution; -1: the lowest, e.g. 7x7 for 28x28 inputs with three levels), so one config
            fits every image size; the middle block has attention when this list is not empty.
        dropout: inside the residual blocks (DDPM used 0.1 on CIFAR-10).
        num_heads: attention heads.
        num_classes: > 0 adds class conditioning with a "no label" class (``y=-1`` or ``None``) for guidance.
        out_channels: default ``in_channels``.
        scale_shift: the embedding modulates the blocks' second GroupNorm (ADM); ``False``: it is added to the
            features (DDPM). DDPM's CIFAR-10 sizes give 35.7M parameters with ``False``, 38.3M with ``True``.

    >>> UNet(in_channels=1, image_size=28, base_width=16, channel_mults=[1, 2])(torch.zeros(2, 1, 28, 28),
    ...      torch.tensor([3, 500])).shape
    torch.Size([2, 1, 28, 28])
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        base_width: int = 16,
        channel_mults: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 1,
        attention_levels: Sequence[int] = (),
        dropout: float = 0.0,
        num_heads: int = 1,
        num_classes: int = 0,
        out_channels: int | None = None,
        scale_shift: bool = True,
    ):
        super().__init__()
        require_positive(in_channels=in_channels, image_size=image_size, base_width=base_width, num_heads=num_heads)
        require_positive(num_res_blocks=num_res_blocks)
        channel_mults = list(channel_mults)
        if not channel_mults or any(m <= 0 for m in channel_mults):
            raise ConfigError(
                f"channel_mults must be a non-empty list of positive integers, got {channel_mults}",
                keys=("channel_mults",),
                fix="e.g. channel_mults=[1,2,2] (28x28) or [1,2,2,2] (32x32)",
            )
        halvings = len(channel_mults) - 1
        if image_size % 2**halvings:
            fit = 0
            while image_size % 2 ** (fit + 1) == 0:
                fit += 1
            raise ConfigError(
                f"{len(channel_mults)} levels (channel_mults={channel_mults}) halve the resolution {halvings} times, "
                f"but image_size={image_size} can be halved exactly only {fit} times",
                keys=("channel_mults", "image_size"),
                fix=f"use at most {fit + 1} channel multipliers for this image size",
            )
        sizes = [image_size // 2**i for i in range(len(channel_mults))]
        levels = len(channel_mults)
        bad = [a for a in attention_levels if not -levels <= a < levels]
        if bad:
            raise ConfigError(
                f"attention_levels={list(attention_levels)} names levels the UNet does not have: {bad}; with "
                f"channel_mults={channel_mults} its levels are 0..{levels - 1} (feature maps of {sizes} pixels)",
                keys=("attention_levels", "channel_mults"),
                fix=f"choose among 0..{levels - 1} or -1..-{levels} (or [] for no attention)",
            )
        if not 0 <= dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}", keys=("dropout",))
        self.in_channels, self.image_size = in_channels, image_size
        self.out_channels = out_channels or in_channels
        self.num_classes = num_classes
        emb_dim = 4 * base_width
        self.embed = ConditionEmbedding(base_width, emb_dim, num_classes)
        attn = {a % levels for a in attention_levels}  # level indices that attend
        args = {"emb_dim": emb_dim, "dropout": dropout, "num_heads": num_heads, "scale_shift": scale_shift}

        self.conv_in = nn.Conv2d(in_channels, base_width, 3, padding=1)
        self.down = nn.ModuleList()
        skips = [base_width]  # channels of every feature map kept for the way up
        ch = base_width
        for level, mult in enumerate(channel_mults):
            for _ in range(num_res_blocks):
                self.down.append(_Level(ch, base_width * mult, attention=level in attn, **args))
                ch = base_width * mult
                skips.append(ch)
            if level < halvings:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))  # (B, ch, s, s) -> (B, ch, s/2, s/2)
                skips.append(ch)
        self.mid = nn.ModuleList(
            [_Level(ch, ch, attention=bool(attn), **args), _Level(ch, ch, attention=False, **args)]
        )
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mults))):
            for _ in range(num_res_blocks + 1):
                self.up.append(_Level(ch + skips.pop(), base_width * mult, attention=level in attn, **args))
                ch = base_width * mult
            if level > 0:
                self.up.append(Upsample(ch))  # (B, ch, s, s) -> (B, ch, 2s, 2s)
        self.out = nn.Sequential(group_norm(ch), nn.SiLU(), zero_init(nn.Conv2d(ch, self.out_channels, 3, padding=1)))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        check_image_input(x, self.in_channels, self.image_size, "UNet")
        emb = self.embed(t, y)  # (B, 4 * base_width)
        h = self.conv_in(x)
        skips = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, _Level) else layer(h)
            skips.append(h)
        for layer in self.mid:
            h = layer(h, emb)
        for layer in self.up:
            # a level reads (B, ch + skip_ch, s, s): its input joined with the matching map of the way down
            h = layer(torch.cat([h, skips.pop()], dim=1), emb) if isinstance(layer, _Level) else layer(h)
        return self.out(h)
