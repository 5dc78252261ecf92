"""Differentiable augmentation of everything a GAN's discriminator sees (DiffAugment, Zhao et al. 2020).

With a few thousand training images a discriminator memorises them within a few epochs and its gradients stop
teaching the generator anything. Augmenting the real *and* the generated images, in the discriminator's and in
the generator's update, with transformations that are differentiable in the images keeps the discriminator from
memorising while the generator still learns the un-augmented distribution (the augmentations are not leaked: the
generator is never asked to produce translated or cut-out digits, because the discriminator only ever compares
augmented reals with augmented fakes).

Each transformation draws its parameters per example from torch's global generator (saved in checkpoints, so a
resumed run draws the same), on the images' device:

- ``translation``: an integer shift of up to ``translation`` x the image side in each direction, zero-filled
  (zero is mid-grey in the generator's [-1, 1] range, as in the paper's code);
- ``cutout``: one square of ``cutout`` x the side, at a uniform position (possibly partly outside), set to zero;
- ``color``: brightness (add U(-0.5, 0.5)), saturation (scale the deviation from the channel mean by U(0, 2);
  nothing for one channel) and contrast (scale the deviation from the image mean by U(0.5, 1.5)).
"""

from __future__ import annotations

import torch
from torch import nn

from gensuite.errors import ConfigError

POLICIES = ("color", "translation", "cutout")


class DiffAugment(nn.Module):
    """Images ``(B, C, H, W)`` in [-1, 1] -> the same shape, each example transformed by ``policy`` in order.

    Args:
        policy: names from `POLICIES`, applied in the order given.
        translation: the largest shift as a fraction of the side (1/8 in the paper).
        cutout: the side of the cut-out square as a fraction of the image side (1/2 in the paper).
        p: the probability that an example is augmented at all (1: always, as in the paper).

    >>> aug = DiffAugment(["translation", "cutout"])
    >>> aug(torch.zeros(4, 1, 28, 28)).shape
    torch.Size([4, 1, 28, 28])
    """

    def __init__(
        self,
        policy: list[str] | tuple[str, ...] = ("translation", "cutout"),
        translation: float = 0.125,
        cutout: float = 0.5,
        p: float = 1.0,
    ):
        super().__init__()
        policy = list(policy)
        unknown = [name for name in policy if name not in POLICIES]
        if unknown or not policy:
            raise ConfigError(
                f"augment.policy={policy}: {'unknown ' + ', '.join(unknown) if unknown else 'empty'}",
                keys=("discriminator.augment.policy",),
                fix=f"a list of {', '.join(POLICIES)} (or model.discriminator.augment=null for none)",
            )
        for key, value, high in (("translation", translation, 0.5), ("cutout", cutout, 1.0), ("p", p, 1.0)):
            if not 0 < value <= high:
                raise ConfigError(
                    f"augment.{key}={value} must be in (0, {high}]", keys=(f"discriminator.augment.{key}",)
                )
        self.policy, self.translation, self.cutout, self.p = policy, translation, cutout, p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for name in self.policy:
            out = getattr(self, f"_{name}")(out)
        if self.p < 1:  # examples left as they were keep their own (un-augmented) values
            keep = torch.rand(len(x), 1, 1, 1, device=x.device) >= self.p
            out = torch.where(keep, x, out)
        return out

    def _color(self, x: torch.Tensor) -> torch.Tensor:
        b = len(x)
        x = x + (torch.rand(b, 1, 1, 1, device=x.device) - 0.5)  # brightness
        if x.shape[1] > 1:  # saturation
            mean = x.mean(1, keepdim=True)
            x = (x - mean) * (torch.rand(b, 1, 1, 1, device=x.device) * 2) + mean
        mean = x.mean((1, 2, 3), keepdim=True)  # contrast
        return (x - mean) * (torch.rand(b, 1, 1, 1, device=x.device) + 0.5) + mean

    def _translation(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        sy, sx = int(h * self.translation + 0.5), int(w * self.translation + 0.5)
        dy = torch.randint(-sy, sy + 1, (b, 1, 1), device=x.device)
        dx = torch.randint(-sx, sx + 1, (b, 1, 1), device=x.device)
        rows = torch.arange(h, device=x.device).view(1, h, 1) + dy + sy  # (B, H, 1) into the padded image
        cols = torch.arange(w, device=x.device).view(1, 1, w) + dx + sx  # (B, 1, W)
        padded = nn.functional.pad(x, (sx, sx, sy, sy)).permute(0, 2, 3, 1)  # (B, H + 2sy, W + 2sx, C)
        batch = torch.arange(b, device=x.device).view(b, 1, 1)
        return padded[batch, rows, cols].permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)

    def _cutout(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        ch, cw = int(h * self.cutout + 0.5), int(w * self.cutout + 0.5)
        # the square's top-left corner, so that its centre is uniform over the image (it may hang over an edge)
        top = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), device=x.device) - ch // 2
        left = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), device=x.device) - cw // 2
        rows = torch.arange(h, device=x.device).view(1, h, 1)
        cols = torch.arange(w, device=x.device).view(1, 1, w)
        inside = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)  # (B, H, W)
        return x * (~inside).unsqueeze(1).to(x.dtype)

    def extra_repr(self) -> str:
        return f"policy={self.policy}, translation={self.translation}, cutout={self.cutout}, p={self.p}"
