"""Class conditioning helpers shared by the families: label dropout, classifier-free guidance, the data check.

The conditioning every family has is the base class's (`gensuite.families.base.GenerativeModule`: ``num_classes``,
``conditional``, the batch's labels, the balanced labels to sample, the class grid); this module holds the pieces
it and the guided families call:

- **label dropout** (`drop_labels`): in training, a label is replaced by "no label" (``-1``) with probability p, so
  one network learns p(x|y) and p(x) (Ho & Salimans 2022);
- **classifier-free guidance** (`guide`): ``out = out(∅) + s · (out(y) - out(∅))``; ``s = 0`` is unconditional,
  ``s = 1`` conditional (one network call each), ``s > 1`` trades diversity for fidelity (one batched call). The
  scale is the `gensuite.families.options.Guidance` option of diffusion and flow matching;
- **the data check** (`check_data_labels`, called once, by `gensuite.train`): the data has the model's classes.

The switch is one spelling in every family, ``model.num_classes=${data.num_classes}`` (0: unconditional).
Label ``-1`` means "no label" everywhere (the conditional nets embed it as an extra class, `gensuite.nets.unet`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from gensuite.errors import ConfigError

NO_LABEL = -1


def drop_labels(y: torch.Tensor, p: float, u: torch.Tensor | None = None) -> torch.Tensor:
    """``y`` with each label replaced by `NO_LABEL` with probability ``p`` (label dropout for guidance).

    ``u``: uniform draws in [0, 1), one per label (a family passes its per-rank training noise); drawn from the
    global RNG when None."""
    drop = (torch.rand(y.shape, device=y.device) if u is None else u.to(y.device)) < p
    return torch.where(drop, torch.full_like(y, NO_LABEL), y)


def guide(
    net: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor],
    x: torch.Tensor,
    t: torch.Tensor,
    y: torch.Tensor | None,
    scale: float,
) -> torch.Tensor:
    """Classifier-free guidance of ``net(x, t, y)``: ``net(x, t, ∅) + scale · (net(x, t, y) - net(x, t, ∅))``.

    ``y=None`` is the unconditional output; ``scale`` 0 and 1 cost one call; any other scale one batched call of
    both halves.
    """
    if y is None or scale == 0.0:
        return net(x, t, None)
    if scale == 1.0:
        return net(x, t, y)
    both = net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, NO_LABEL)]))
    cond, uncond = both.chunk(2)  # (B, ...) each
    return uncond + scale * (cond - uncond)


def check_data_labels(model, datamodule) -> None:
    """A conditional model (``model.num_classes`` > 0) needs data with as many classes: refused before training
    otherwise, in one place for every family (`gensuite.train`)."""
    k = int(getattr(model, "num_classes", 0) or 0)
    if k <= 0 or datamodule is None:
        return
    info = datamodule.info()  # gensuite.contracts.DataInfo
    if not info.is_image:
        raise ConfigError(
            f"model.num_classes={k} makes a class-conditional {model.family} model, but data={info.name} is "
            f"{info.modality}, which has no classes",
            fix="model.num_classes=0 (conditional generation is for labelled image data)",
        )
    if not info.labelled:
        raise ConfigError(
            f"model.num_classes={k} makes a class-conditional {model.family} model, but data={info.name} has no labels",
            fix="model.num_classes=0 for unlabelled data, or a data.path folder with one sub-folder per class",
        )
    if info.num_classes != k:
        raise ConfigError(
            f"model.num_classes={k} but data.num_classes={info.num_classes}",
            fix="model.num_classes=${data.num_classes} (conditional) or model.num_classes=0",
        )
