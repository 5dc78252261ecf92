"""``python sample.py ckpt_path=X n=64 [format=grid|npz|png]``: samples from a checkpoint alone (its config travels
inside it).

The samples are drawn in batches of ``batch_size`` from one generator seeded with ``seed``, so every format of
the same ``n``, ``seed`` and ``batch_size`` holds the same samples (the grid's pixels are the ``npz``'s values).
Reading and writing sample files is `gensuite.runs.sample_files`.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torchvision.utils import save_image

from gensuite.cli.sampling import apply_sampler, options_from, pick_device
from gensuite.errors import ConfigError
from gensuite.families.draw import draw
from gensuite.runs import sample_files
from gensuite.runs.checkpoint import load_model
from gensuite.runs.grids import grid_of
from gensuite.safe_files import refuse_link, write_bytes_atomic, write_text_atomic

FORMATS = {"grid": "a PNG grid", "npz": "uint8 (N, H, W, C) under 'samples' in an .npz", "png": "a folder of PNGs"}
TEXT_FORMATS = {"grid": "the samples as a .txt file"}


def given_labels(model: torch.nn.Module, cfg: DictConfig, n: int) -> torch.Tensor | None:
    """``label=3`` (every sample) or ``labels=[3,3,7]`` (repeated to ``n``) for a conditional model, else None."""
    label, labels = cfg.get("label"), cfg.get("labels")
    if label is None and labels is None:
        return None
    key = "label" if label is not None else "labels"
    k = int(getattr(model, "num_classes", 0) or 0)
    if label is not None and labels is not None:
        raise ConfigError("label= and labels= were both given", keys=("label", "labels"), fix="give one of them")
    if k <= 0:
        raise ConfigError(
            f"{key}= was given but this {getattr(model, 'family', '?')} model is unconditional (it was trained "
            "without labels)",
            keys=(key,),
            fix=f"drop {key}=, or train a conditional model (model.num_classes=${{data.num_classes}})",
        )
    wanted = [label] if label is not None else list(labels)
    if not wanted or any(not isinstance(c, int) or not 0 <= c < k for c in wanted):
        raise ConfigError(
            f"{key}={wanted}: labels must be integers in 0..{k - 1} (the model's {k} classes)",
            keys=(key,),
            fix="e.g. label=3 or labels=[0,1,2]",
        )
    return torch.tensor(wanted, dtype=torch.long).repeat((n + len(wanted) - 1) // len(wanted))[:n]


def is_text(model: torch.nn.Module, run_cfg: DictConfig) -> bool:
    return bool(getattr(model, "is_text", False)) or OmegaConf.select(run_cfg, "data.modality") == "text"


def check_format(cfg: DictConfig) -> str:
    fmt = str(cfg.format)
    if fmt not in FORMATS:
        raise ConfigError(
            f"format={fmt}: no such format; valid: " + ", ".join(f"{k} ({v})" for k, v in FORMATS.items()),
            fix="format=grid (the default), format=npz or format=png",
        )
    out = Path(cfg.out) if cfg.out else None
    if fmt == "npz" and out is not None and out.suffix != ".npz":
        raise ConfigError(f"out={cfg.out}: format=npz writes an .npz file", fix=f"out={out.with_suffix('.npz')}")
    if fmt == "png" and out is not None and (out.suffix.lower() == ".png" or (out.exists() and not out.is_dir())):
        raise ConfigError(f"out={cfg.out}: format=png writes a folder of PNGs", fix=f"out={out.with_suffix('')}")
    if fmt == "png" and out is not None and out.is_dir() and any(out.iterdir()):
        raise ConfigError(
            f"out={cfg.out} is a folder that already holds files: a later eval.py samples= would score them too",
            fix="give a new folder, or empty this one",
        )
    return fmt


def sample(cfg: DictConfig) -> Path:
    """Draw ``n`` samples with ``seed``; write them as ``format`` (images) or a text file (text). Returns the path."""
    fmt = check_format(cfg)
    if cfg.n < 1:
        raise ConfigError(f"n must be >= 1, got {cfg.n}", fix="n=64")
    if cfg.batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {cfg.batch_size}", fix="batch_size=500")
    model, run_cfg = load_model(cfg.ckpt_path)
    if is_text(model, run_cfg) and fmt not in TEXT_FORMATS:
        raise ConfigError(
            f"format={fmt}: a {getattr(model, 'family', '?')} model of text samples text, not images; the valid "
            "format for text is " + ", ".join(f"{k} ({v})" for k, v in TEXT_FORMATS.items()),
            fix="drop format= (format=grid is the default)",
        )
    device = pick_device(cfg.device)
    model.to(device)
    apply_sampler(model, cfg)
    options = options_from(model, cfg)
    labels = given_labels(model, cfg, int(cfg.n))
    g = torch.Generator(device=device).manual_seed(int(cfg.seed))
    ckpt = Path(cfg.ckpt_path)
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    stem = f"samples-{cfg.n}-seed{cfg.seed}"
    ext = {"npz": ".npz", "png": ""}.get(fmt, ".txt" if is_text(model, run_cfg) else ".png")
    path = Path(cfg.out) if cfg.out else run_dir / f"{stem}{ext}"
    # a default name is in the run folder, where nothing at or below it may be a link; out= is the user's: only a
    # link at the name itself is refused. Checked before drawing, and again at the write (gensuite.safe_files)
    root = None if cfg.out else run_dir
    refuse_link(path, "out", root, "the samples")
    raw = fmt in ("npz", "png")  # uint8 batch by batch: 4x less memory than floats for large n
    parts, label_parts = [], []
    for x, y in draw(model, int(cfg.n), int(cfg.batch_size), g, labels, options):
        x = x.cpu()
        parts.append(sample_files.to_uint8(x) if raw else x)
        label_parts.append(y.cpu() if y is not None else None)
    labels = torch.cat(label_parts).numpy() if label_parts[0] is not None else None
    if raw:
        samples = np.concatenate(parts)
        if fmt == "npz":
            sample_files.write_npz(path, samples, labels, root)
        else:
            sample_files.write_png_folder(path, samples, labels, root)
    elif torch.is_floating_point(parts[0]) and parts[0].dim() == 4:
        out = torch.cat(parts)
        grid = grid_of(out) if not cfg.nrow else grid_of(out.view(-1, int(cfg.nrow), *out.shape[1:]))
        buffer = io.BytesIO()  # rendered here, then written beside the name and renamed over it
        save_image(grid, buffer, format="png")
        write_bytes_atomic(path, buffer.getvalue(), "out", root)
    else:
        texts = model.decode(torch.cat(parts))
        write_text_atomic(path, "\n\n-----\n\n".join(texts), "out", root)
        print(texts[0][:2000])
    print(f"[gensuite] wrote {cfg.n} samples to {path}" + (" (with their labels)" if labels is not None else ""))
    return path
