"""The contracts between the suite's parts, written as code.

- `DataInfo`: what a data module tells a model and the evaluation — one declared object (``datamodule.info()``)
  instead of attribute lookups that differ per data module;
- `data_info`: the `DataInfo` of the data module a LightningModule trains on, or None while it is not attached;
- `world_rank` / `rank_slice`: noise under DDP — every rank holds the same global RNG (``seed_everything``), so a
  family draws the noise of the whole global batch and keeps its own rows; the RNG streams stay identical across
  ranks (and are restored exactly on resume) while each rank's noise differs;
- `to_signed` / `to_unit`: the one data-range mapping, images in [0, 1] <-> the [-1, 1] a network works in.

The family protocol (``sample``, ``nll``, ``reconstruct``, ``panels``) is `gensuite.families.base.check_protocol`;
the sampler protocol by process is `gensuite.families.processes`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

MODALITIES = ("image", "text")


@dataclass(frozen=True)
class DataInfo:
    """What a data module declares about its data.

    Attributes:
        name: the data's name (run names, messages).
        modality: ``image`` or ``text``.
        channels, image_size: the images' shape ``(channels, image_size, image_size)``; 0 for text.
        num_classes: classes the labels may take (0: no labels declared).
        labelled: whether the training split carries labels (a folder without class sub-folders does not).
        seq_len: tokens per training window (text), or 0.
        fingerprint: a hash of the data as loaded: the cache key of feature extractors and reference statistics.
        held_out: the split the sample metrics are measured against (``test``; ``val`` where there is none).
    """

    name: str
    modality: str = "image"
    channels: int = 0
    image_size: int = 0
    num_classes: int = 0
    labelled: bool = False
    seq_len: int = 0
    fingerprint: str = ""
    held_out: str = "test"

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"DataInfo.modality must be one of {MODALITIES}, got {self.modality!r}")

    @property
    def is_image(self) -> bool:
        return self.modality == "image"


def info_of(datamodule) -> DataInfo | None:
    """``datamodule.info()``; None for an object that is not a suite data module (no ``info``)."""
    info = getattr(datamodule, "info", None)
    return info() if callable(info) else None


def attached_trainer(module):
    """The trainer a LightningModule is attached to, or None (Lightning's ``module.trainer`` raises when detached)."""
    try:
        return module.trainer
    except RuntimeError:
        return None


def data_info(module) -> DataInfo | None:
    """The `DataInfo` of the data module ``module`` (a LightningModule) trains on, or None when there is none."""
    trainer = attached_trainer(module)
    return info_of(getattr(trainer, "datamodule", None)) if trainer is not None else None


def world_rank(module) -> tuple[int, int]:
    """``(world_size, global_rank)`` of the trainer ``module`` is attached to; ``(1, 0)`` when it is not."""
    trainer = attached_trainer(module)
    return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)


def rank_slice(module, draw: Callable[..., torch.Tensor], n: int, *shape: int, **kwargs) -> torch.Tensor:
    """``draw(world * n, *shape, **kwargs)`` from the global RNG, and this rank's ``n`` rows of it.

    Every DDP rank holds the same global RNG state; drawing the global batch and slicing gives each rank its own
    noise while the RNG streams stay identical across ranks (and are restored on resume). One process: ``draw(n,
    *shape)`` exactly, so single-device runs draw what they always drew.
    """
    world, rank = world_rank(module)
    full = draw(world * n, *shape, **kwargs)
    return full if world == 1 else full[rank * n : (rank + 1) * n]


def to_signed(x: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] -> [-1, 1]."""
    return x * 2 - 1


def to_unit(x: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """[-1, 1] -> images in [0, 1] (clamped unless ``clamp=False``)."""
    out = (x + 1) / 2
    return out.clamp(0, 1) if clamp else out
