"""``python sample.py ckpt_path=X n=64``: samples from a checkpoint alone (its config travels inside it)."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig
from torchvision.utils import save_image

from gensuite.callbacks.evaluation import grid_of
from gensuite.checkpoint import load_model
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


def sample(cfg: DictConfig) -> Path:
    """Draw ``n`` samples with ``seed``; write a PNG grid (images) or a text file (text). Returns its path."""
    if cfg.n < 1:
        raise ConfigError(f"n must be >= 1, got {cfg.n}", fix="n=64")
    model, _ = load_model(cfg.ckpt_path)
    device = pick_device(cfg.device)
    model.to(device)
    apply_sampler(model, cfg)
    g = torch.Generator(device=device).manual_seed(int(cfg.seed))
    with torch.no_grad():
        out = model.sample(int(cfg.n), generator=g)
    ckpt = Path(cfg.ckpt_path)
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    if torch.is_floating_point(out) and out.dim() == 4:
        path = Path(cfg.out) if cfg.out else run_dir / f"samples-{cfg.n}-seed{cfg.seed}.png"
        grid = grid_of(out) if not cfg.nrow else grid_of(out.view(-1, int(cfg.nrow), *out.shape[1:]))
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(grid, path)
    else:
        texts = model.decode(out)
        path = Path(cfg.out) if cfg.out else run_dir / f"samples-{cfg.n}-seed{cfg.seed}.txt"
        path.write_text("\n\n-----\n\n".join(texts))
        print(texts[0][:2000])
    print(f"[gensuite] wrote {cfg.n} samples to {path}")
    return path
