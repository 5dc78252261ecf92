"""Class conditioning shared by the families: the labels drawn to sample, label dropout, classifier-free guidance.

One rule for every family and for the evaluation (``sample.py`` stores the labels it draws):

- **labels to sample** (`sample_labels`): balanced, ``0, 1, ..., K-1, 0, 1, ...`` — class coverage and the class
  histogram of the samples are judged against a balanced reference, so a model is given each class equally often
  (uniform draws would add their own multinomial noise to ``class_tv``);
- **the class grid** (`class_grid_labels`): one row per class, ``per_class`` samples each;
- **label dropout** (`drop_labels`): in training, a label is replaced by "no label" (``-1``) with probability p, so
  one network learns p(x|y) and p(x) (Ho & Salimans 2022);
- **classifier-free guidance** (`guide`): ``out = out(∅) + s · (out(y) - out(∅))``; ``s = 0`` is unconditional,
  ``s = 1`` conditional (one network call each), ``s > 1`` trades diversity for fidelity (one batched call).

The switch is one spelling in every family, ``model.num_classes=${data.num_classes}`` (0: unconditional); the
protocol a conditional family offers is ``num_classes`` and ``sample(n, generator, labels=...)`` (``y=`` in the
diffusion families, `label_keyword`). Shared here as well: the ``class_grid`` panel (`class_grid`) and the check
that the data has the model's classes (`check_data_labels`, called once, by `gensuite.train`).

Label ``-1`` means "no label" everywhere (the conditional nets embed it as an extra class, `gensuite.nets.unet`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch

from gensuite.errors import ConfigError

NO_LABEL = -1
#: the sampling knob of every guided family (``sampling.guidance_scale=`` of sample.py / eval.py)
GUIDANCE_KNOB = {"guidance_scale": "classifier-free guidance of a conditional model (0: unconditional, 1: "
                 "conditional, > 1: guided)"}  # fmt: skip


def check_guidance(scale: float, conditional: bool, family: str) -> None:
    """A `ConfigError` for a negative guidance scale, or any guidance of an unconditional model."""
    if scale < 0:
        raise ConfigError(f"guidance_scale must be >= 0, got {scale}", keys=("guidance_scale",))
    if scale != 1.0 and not conditional:
        raise ConfigError(
            f"guidance_scale={scale} but this {family} model is unconditional (classifier-free guidance mixes a "
            "conditional and an unconditional prediction)",
            keys=("guidance_scale",),
            fix="drop the guidance setting, or train a conditional model (model.num_classes=${data.num_classes})",
        )


def sample_labels(n: int, num_classes: int, device: torch.device | str | None = None) -> torch.Tensor | None:
    """``(n,)`` long: balanced labels ``0, 1, ..., K-1, 0, ...`` for ``n`` conditional samples; None when K = 0."""
    if num_classes <= 0:
        return None
    return torch.arange(n, device=device) % num_classes


def class_grid_labels(num_classes: int, per_class: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``(num_classes * per_class,)`` long: ``0 x per_class, 1 x per_class, ...`` (one grid row per class)."""
    return torch.arange(num_classes, device=device).repeat_interleave(per_class)


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


def label_keyword(model) -> str | None:
    """The keyword a conditional model's ``sample`` takes its labels by (``labels`` or ``y``); None for a model that
    is unconditional (``num_classes`` 0 or absent) or whose ``sample`` takes no labels.

    This is the whole conditioning protocol the evaluation and ``sample.py`` rely on: ``num_classes`` > 0, and
    ``sample(n, generator, labels=...)`` (``y=`` in the diffusion families) drawing class ``labels[i]`` at row i.
    """
    if int(getattr(model, "num_classes", 0) or 0) <= 0:
        return None
    takes = inspect.signature(model.sample).parameters
    return next((k for k in ("labels", "y") if k in takes), None)


def class_grid(
    model, generator: torch.Generator | None = None, per_class: int = 8, same_noise: bool = False
) -> torch.Tensor:
    """The ``class_grid`` panel of every conditional family: ``(num_classes, per_class, C, H, W)``, one row per class.

    ``same_noise``: each row is drawn from the same generator state, so a column differs only by its label (one
    ``sample`` call per class: for families whose sampling is cheap, the GAN and the VAE); otherwise one batched
    call of ``num_classes * per_class`` samples (diffusion, flow matching, the transformer).
    """
    k, keyword = int(model.num_classes), label_keyword(model)
    if keyword is None:
        raise ValueError(f"a {getattr(model, 'family', '?')} model without labels has no class grid")
    device = getattr(model, "device", None)
    if not same_noise:
        labels = class_grid_labels(k, per_class, device)
        images = model.sample(len(labels), generator=generator, **{keyword: labels})
        return images.view(k, per_class, *images.shape[1:])
    state = generator.get_state() if generator is not None else None
    rows = []
    for c in range(k):
        if generator is not None:
            generator.set_state(state)
        labels = torch.full((per_class,), c, device=device)
        rows.append(model.sample(per_class, generator=generator, **{keyword: labels}))
    return torch.stack(rows)  # (K, per_class, C, H, W)


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
