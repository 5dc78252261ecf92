"""What ``sample.py`` and ``eval.py`` set on a model loaded from a checkpoint before it samples: the device
(``device=``), the sampler (``sampler=``) and the family's sampling knobs (``sampling.<name>=``)."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from gensuite.config import instantiate_checked
from gensuite.errors import ConfigError


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but no CUDA device is available", fix="device=cpu or device=auto")
    return torch.device(name)


def apply_sampler(model: torch.nn.Module, cfg: DictConfig) -> None:
    """``sampler=ddim sampler.steps=50``: swap the sampler of a model that has one (diffusion)."""
    if cfg.get("sampler") is None:
        return
    if not hasattr(model, "set_sampler"):
        raise ConfigError(
            f"sampler= was given but a {getattr(model, 'family', '?')} model has no sampler to choose",
            fix="drop the sampler= override (it applies to diffusion checkpoints)",
        )
    model.set_sampler(instantiate_checked(cfg, "sampler"))


def apply_sampling(model: torch.nn.Module, cfg: DictConfig) -> None:
    """``sampler=...`` and the family's knobs ``sampling.<name>=...`` (those not null), before any sampling work."""
    apply_sampler(model, cfg)
    knobs = {k: v for k, v in (cfg.get("sampling") or {}).items() if v is not None}
    if knobs:
        model.set_sampling(**knobs)
