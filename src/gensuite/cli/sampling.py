"""What ``sample.py`` and ``eval.py`` take from the command line for a model loaded from a checkpoint: the
device (``device=``), the sampler (``sampler=``, set on the model) and the family's sampling options
(``sampling.<name>=``, passed to ``sample``)."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from gensuite.cli.config import instantiate_checked
from gensuite.errors import ConfigError
from gensuite.families.options import SamplingOptions


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


def options_from(model: torch.nn.Module, cfg: DictConfig) -> SamplingOptions | None:
    """The family's sampling options with ``sampling.<name>=...`` (those not null) applied, checked before any
    sampling work; None when none is given (the model samples with its own ``default_options``). Passed to
    ``model.sample``, never set on the model."""
    knobs = {k: v for k, v in (cfg.get("sampling") or {}).items() if v is not None}
    return model.sampling_options(knobs) if knobs else None
