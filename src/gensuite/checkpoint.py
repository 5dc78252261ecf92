"""Checkpoints: the composed config travels inside as plain data; loading never unpickles code.

A gensuite checkpoint is a Lightning checkpoint with one more entry, ``checkpoint["gensuite"]``, holding the
resolved config (dicts, lists, strings, numbers) and the family name. Everything is read with
``torch.load(weights_only=True)``; a model is rebuilt with Hydra from that config, but only through the exact
allowlist of `gensuite.trust` (instantiating a ``_target_`` runs code). Only ``model``, ``data`` and ``metrics``
are ever built from a checkpoint's config.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from gensuite.config import instantiate_checked
from gensuite.errors import CheckpointError, ConfigError
from gensuite.families.base import GenerativeModule, check_protocol
from gensuite.nets.tokenizers import VQTokenizer
from gensuite.trust import check_stored_config, local_cache_dir, neutralise

BUILT_SECTIONS = ("model", "data", "metrics")


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint file with ``weights_only=True``; a clear error if it is missing, corrupt or not ours."""
    p = Path(os.path.expanduser(str(path)))
    if not p.is_file():
        raise CheckpointError(
            f"ckpt_path={path}: no such file",
            fix="give the path of a .ckpt file (e.g. logs/runs/.../last.ckpt)",
        )
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"ckpt_path={path} cannot be read as a checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:160] if str(err) else ''})",
            fix="the file is corrupt, truncated or not a PyTorch checkpoint; use another (last.ckpt or best)",
        ) from err
    if not isinstance(ckpt, dict) or "gensuite" not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(
            f"ckpt_path={path} is not a gensuite checkpoint (no 'gensuite' config entry)",
            fix="use a checkpoint written by `python train.py` (logs/runs/<run>/checkpoints/*.ckpt)",
        )
    return ckpt


#: ``_target_`` names that older versions of the suite stored, and what builds the same thing now
RENAMED_TARGETS = {"gensuite.nets.tokenizers.VQTokenizer": "gensuite.checkpoint.vq_tokenizer"}


def _renamed_targets(node):
    """``node`` (a stored config, plain data) with every `RENAMED_TARGETS` name replaced, before the trust check."""
    if isinstance(node, dict):
        return {k: RENAMED_TARGETS.get(v, v) if k == "_target_" and isinstance(v, str) else _renamed_targets(v)
                for k, v in node.items()}  # fmt: skip
    if isinstance(node, list):
        return [_renamed_targets(v) for v in node]
    return node


def checkpoint_config(ckpt: dict) -> DictConfig:
    """The composed config stored in a checkpoint, after `gensuite.trust.check_stored_config` (no interpolation
    anywhere; every ``_target_`` of the sections sample.py / eval.py build, `BUILT_SECTIONS`, on the allowlist),
    with its cache and download settings replaced by the local ones."""
    import copy

    plain = _renamed_targets(ckpt["gensuite"].get("config"))
    check_stored_config(plain, BUILT_SECTIONS)
    plain = neutralise(copy.deepcopy(plain), BUILT_SECTIONS, local_cache_dir())
    return OmegaConf.create(plain)


def build_model(cfg: DictConfig) -> GenerativeModule:
    """The model of ``cfg.model``, built from its parts and checked against the family protocol."""
    model = instantiate_checked(cfg, "model")
    check_protocol(model)
    return model


def load_frozen(path: str | os.PathLike | None, family: str, setting: str, train_command: str) -> torch.nn.Module:
    """A trained model of ``family`` from the checkpoint ``path``, frozen (no gradients, eval mode), for a model
    that builds on it (a VQ tokenizer, latent diffusion's autoencoder). Errors name ``setting``."""
    if not path:
        raise ConfigError(
            f"{setting} is not set: this model needs a trained {family} model",
            keys=(setting.rsplit(".", 1)[-1],),
            fix=f"train one first ({train_command}), then add {setting}=logs/runs/{family}-<data>/<time>/checkpoints/"
            "last.ckpt",
        )
    try:
        model, _ = load_model(path, expect_family=family)
    except CheckpointError as err:
        raise CheckpointError(
            f"{setting}: {err.message}", fix=err.fix or f"give the last.ckpt of a model={family} run"
        ) from err
    return model.requires_grad_(False).eval()


def vq_tokenizer(path: str | None = None) -> VQTokenizer:
    """``model/tokenizer=vq``: the code grid of the trained VQ-VAE at ``path``, as the transformer's tokenizer."""
    autoencoder = load_frozen(path, "vqvae", "model.tokenizer.path", "python train.py model=vqvae data=<data>")
    return VQTokenizer(autoencoder, path)


def load_model(
    path: str | os.PathLike, expect_family: str | tuple[str, ...] | None = None, map_location: str = "cpu"
) -> tuple[torch.nn.Module, DictConfig]:
    """Rebuild the model of a checkpoint from the config inside it and load its weights (EMA weights where the
    run used EMA: Lightning's EMA callback stores them as the checkpoint's ``state_dict``)."""
    ckpt = read_checkpoint(path)
    family = ckpt["gensuite"].get("family")
    expected = (expect_family,) if isinstance(expect_family, str) else expect_family
    if expected and family not in expected:
        raise CheckpointError(
            f"ckpt_path={path} holds a '{family}' model, but a {' or '.join(expected)} checkpoint is needed here",
            fix=f"give a checkpoint trained with model={expected[0]}",
        )
    cfg = checkpoint_config(ckpt)
    model = build_model(cfg)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise CheckpointError(
            f"ckpt_path={path}: the weights do not fit the model its config describes ({str(err).splitlines()[0]})",
            fix="the checkpoint was edited or written by an incompatible version; retrain or use another",
        ) from err
    return model.to(map_location).eval(), cfg


RESUMABLE = ("last.ckpt", "interrupted.ckpt")


def _intact(path: Path) -> bool:
    try:
        read_checkpoint(path)
    except CheckpointError:
        return False
    return True


def _newest_intact(candidates: list[Path]) -> Path | None:
    """The newest readable, complete checkpoint of ``candidates``; a warning names any newer one that is not."""
    broken = []
    for path in sorted(set(candidates), key=lambda p: p.stat().st_mtime, reverse=True):
        if _intact(path):
            if broken:
                print(
                    f"[gensuite] warning: {broken[0]} cannot be read (truncated or corrupt); resuming from the newest "
                    f"intact checkpoint instead: {path}",
                    flush=True,
                )
            return path
        broken.append(path)
    return None


def find_last_checkpoint(
    output_dir: str | os.PathLike, log_dir: str | os.PathLike, run_group: str | None, required: bool = True
) -> Path | None:
    """``ckpt_path=last``: the newest intact checkpoint of this run folder (``last.ckpt``, ``interrupted.ckpt``
    written on SIGTERM, or any other of its checkpoints when those are damaged), else the newest intact
    ``last.ckpt`` / ``interrupted.ckpt`` of an earlier run of the same ``run_name`` (model and data) under
    ``<log_dir>/runs``."""
    own_dir = Path(output_dir) / "checkpoints"
    own = sorted(own_dir.glob("*.ckpt")) if own_dir.is_dir() else []
    found = _newest_intact(own)
    if found is not None:
        return found
    root = Path(log_dir) / "runs"
    others: list[Path] = []
    if root.is_dir():
        for name in RESUMABLE:
            others += root.glob(f"{run_group}/*/checkpoints/{name}" if run_group else f"**/checkpoints/{name}")
    found = _newest_intact(others)
    if found is None and required:
        raise CheckpointError(
            f"ckpt_path=last: no intact last.ckpt under {root}/{run_group or ''} to resume from"
            + (f" ({len(own) + len(others)} found, none readable)" if own or others else ""),
            fix="train once first, or give the file: ckpt_path=logs/runs/<run>/checkpoints/last.ckpt",
        )
    return found
