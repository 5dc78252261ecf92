"""Discriminators: images ``(B, C, H, W)`` (and, class-conditional, labels ``(B,)``) -> logits ``(B,)``.

A discriminator is an encoder of the parts zoo (`gensuite.nets.encoders`: mlp, conv, resnet) as its body plus
a small head, so the zoo is not duplicated: ``conf/model/discriminator/<name>.yaml`` pulls the encoder's own
config in as ``body`` and changes only what a discriminator wants different (no batch norm by default: the
gradient penalties need one logit per example that depends on that example alone).

- Unconditional: ``logit = w^T act(body(x)) + b``.
- Class-conditional (``num_classes > 0``): the projection discriminator of Miyato & Koyama (2018, eq. 3),
  ``logit = w^T h + b + embed(y)^T h`` with ``h = act(body(x))``: the label enters as an inner product with
  the features rather than as an extra input channel.
- ``spectral_norm=True`` wraps every linear, convolution and embedding weight in
  `torch.nn.utils.parametrizations.spectral_norm` (Miyato et al. 2018), one power iteration per training
  forward, which bounds each layer's Lipschitz constant by about 1.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as add_spectral_norm

from gensuite.errors import ConfigError
from gensuite.nets.common import check_image_input, make_act

NORMALISED_LAYERS = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.Embedding)


def apply_spectral_norm(module: nn.Module) -> int:
    """Spectral normalisation on every linear / conv / embedding weight inside ``module``; returns the count."""
    layers = [m for m in module.modules() if isinstance(m, NORMALISED_LAYERS)]
    for layer in layers:
        add_spectral_norm(layer)
    return len(layers)


def uses_batch_statistics(module: nn.Module) -> bool:
    """Whether any layer normalises over the batch (then an example's logit depends on the others)."""
    from gensuite.lightning_compat import is_batch_norm  # here: the parts import no Lightning

    return any(is_batch_norm(m) for m in module.modules())


class Discriminator(nn.Module):
    """An encoder body plus a linear (and optionally projection) head.

    Args:
        body: an encoder of the zoo, images ``(B, C, H, W)`` -> features ``(B, body.out_dim)``; it must expose
            ``in_channels``, ``image_size`` and ``out_dim``.
        num_classes: > 0 makes the projection discriminator that reads labels ``y`` (int64, ``(B,)``).
        spectral_norm: spectrally normalise every weight of body and head.
        act: activation applied to the body's (linear) output before the head.

    Input images are in the generator's range, [-1, 1]. Output: float logits ``(B,)``.

    >>> from gensuite.nets.encoders import ConvEncoder
    >>> d = Discriminator(ConvEncoder(in_channels=1, image_size=28, out_dim=32, norm="none"), num_classes=10)
    >>> d(torch.zeros(4, 1, 28, 28), torch.arange(4)).shape
    torch.Size([4])
    """

    def __init__(
        self,
        body: nn.Module,
        num_classes: int = 0,
        spectral_norm: bool = False,
        act: str = "leaky_relu",
        augment: nn.Module | None = None,
    ):
        super().__init__()
        missing = [k for k in ("in_channels", "image_size", "out_dim") if not hasattr(body, k)]
        if missing:
            raise ConfigError(
                f"the discriminator body {type(body).__name__} has no {', '.join(missing)}: it must be an "
                "encoder of the parts zoo (images -> features)",
                keys=("body",),
                fix="use one of conf/model/encoder/*.yaml as the body (see conf/model/discriminator/conv.yaml)",
            )
        if num_classes < 0:
            raise ConfigError(f"num_classes must be >= 0, got {num_classes}", keys=("num_classes",))
        self.body = body
        self.in_channels, self.image_size = body.in_channels, body.image_size
        self.num_classes, self.spectral_norm = num_classes, spectral_norm
        features = body.out_dim
        self.act = make_act(act)
        self.head = nn.Linear(features, 1)
        self.class_embed = nn.Embedding(num_classes, features) if num_classes else None
        if self.class_embed is not None:
            # small initial projection term (the default N(0, 1) rows make the label dominate the first steps)
            nn.init.xavier_uniform_(self.class_embed.weight)
        if spectral_norm:
            apply_spectral_norm(self)
        self.augment = augment  # after spectral norm: an augmentation has no weights to normalise

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        check_image_input(x, self.in_channels, self.image_size, "the discriminator")
        if self.augment is not None and self.training:  # held-out validation sees the images as they are
            x = self.augment(x)
        h = self.act(self.body(x))  # (B, F)
        logits = self.head(h).squeeze(1)  # (B, 1) -> (B,)
        if self.class_embed is not None:
            if y is None:
                raise ValueError("this discriminator was built with num_classes > 0 and needs labels y")
            logits = logits + (self.class_embed(y) * h).sum(1)  # projection term <embed(y), h>
        return logits
