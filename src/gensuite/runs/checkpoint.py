"""Checkpoints: the composed config travels inside as plain data; loading never unpickles code.

A gensuite checkpoint is a Lightning checkpoint with one more entry, ``checkpoint["gensuite"]``, holding the
resolved config (dicts, lists, strings, numbers) and the family name. Everything is read with
``torch.load(weights_only=True)``; a model is rebuilt with Hydra from that config, but only through the exact
allowlist of `gensuite.runs.trust` (instantiating a ``_target_`` runs code). Only ``model``, ``data`` and ``metrics``
are ever built from a checkpoint's config.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from gensuite.cli.config import instantiate_checked
from gensuite.errors import CheckpointError, ConfigError
from gensuite.families.base import GenerativeModule, check_protocol
from gensuite.nets.tokenizers import VQTokenizer
from gensuite.runs.checkpoint_file import read_checkpoint
from gensuite.runs.trust import check_stored_config, local_cache_dir, neutralise

BUILT_SECTIONS = ("model", "data", "metrics")


#: how many checkpoints one load may lead to (latent diffusion -> VAE; a VQ tokenizer -> VQ-VAE)
MAX_NESTED_LOADS = 4
#: memory a model may register beyond its checkpoint's own tensors (non-persistent buffers: masks, tables), bytes
MAX_EXTRA_BYTES = 256 * 2**20


#: ``_target_`` names that older versions of the suite stored, and what builds the same thing now
RENAMED_TARGETS = {
    "gensuite.nets.tokenizers.VQTokenizer": "gensuite.runs.checkpoint.vq_tokenizer",
    "gensuite.data.images.TorchvisionImages": "gensuite.data.torchvision_images.TorchvisionImages",
    "gensuite.data.images.CelebA": "gensuite.data.torchvision_images.CelebA",
    "gensuite.data.images.ImageFolder": "gensuite.data.image_folder.ImageFolder",
    # the layout of issue 29: modules grouped into runs/, cli/ and families/
    "gensuite.checkpoint.vq_tokenizer": "gensuite.runs.checkpoint.vq_tokenizer",
    "gensuite.checkpoint.frozen_autoencoder": "gensuite.runs.checkpoint.frozen_autoencoder",
    "gensuite.schedules.warmup_cosine": "gensuite.families.lr_schedules.warmup_cosine",
}


def _renamed_targets(node):
    """``node`` (a stored config, plain data) with every `RENAMED_TARGETS` name replaced, before the trust check."""
    if isinstance(node, dict):
        return {k: RENAMED_TARGETS.get(v, v) if k == "_target_" and isinstance(v, str) else _renamed_targets(v)
                for k, v in node.items()}  # fmt: skip
    if isinstance(node, list):
        return [_renamed_targets(v) for v in node]
    return node


#: settings that older versions of the suite did not store, because the model built them itself:
#: (the model's ``_target_``, setting) -> what builds the same thing now
ADDED_SETTINGS = {
    ("gensuite.families.latent_diffusion.LatentDiffusion", "load_autoencoder"): {
        "_target_": "gensuite.runs.checkpoint.frozen_autoencoder",
        "_partial_": True,
    },
}


def _added_settings(plain):
    """``plain`` (a stored config) with every `ADDED_SETTINGS` entry its model section lacks filled in."""
    model = plain.get("model") if isinstance(plain, dict) else None
    if not isinstance(model, dict):
        return plain
    added = {key: value for (target, key), value in ADDED_SETTINGS.items() if model.get("_target_") == target}
    return {**plain, "model": {**{k: v for k, v in added.items() if k not in model}, **model}}


def checkpoint_config(ckpt: dict) -> DictConfig:
    """The composed config stored in a checkpoint, after `gensuite.runs.trust.check_stored_config` (no interpolation
    anywhere; every ``_target_`` of the sections sample.py / eval.py build, `BUILT_SECTIONS`, on the allowlist),
    with its cache and download settings replaced by the local ones."""
    import copy

    plain = _added_settings(_renamed_targets(ckpt["gensuite"].get("config")))
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


def frozen_autoencoder(path: str | None) -> torch.nn.Module:
    """``model=latent_diffusion``'s ``load_autoencoder``: the frozen VAE of ``autoencoder_ckpt``."""
    return load_frozen(path, "vae", "autoencoder_ckpt", "python train.py model=vae")


def vq_tokenizer(path: str | None = None) -> VQTokenizer:
    """``model/tokenizer=vq``: the code grid of the trained VQ-VAE at ``path``, as the transformer's tokenizer."""
    autoencoder = load_frozen(path, "vqvae", "model.tokenizer.path", "python train.py model=vqvae data=<data>")
    return VQTokenizer(autoencoder, path)


_loading: list[tuple[int, int]] = []  # (device, inode) of the checkpoints being loaded, outermost first
_loaded: dict[tuple[int, int, int], torch.nn.Module] = {}  # nested loads of the load in progress, by file version


@contextlib.contextmanager
def _one_load(p: Path, path) -> Iterator[tuple[int, int, int]]:
    """Refuse a load that leads back to a file being loaded (a checkpoint naming itself as its own autoencoder),
    or more than `MAX_NESTED_LOADS` deep; a file loaded twice within one outer load is built once."""
    st = p.stat()
    key = (st.st_dev, st.st_ino)
    if key in _loading:
        raise CheckpointError(
            f"ckpt_path={path} leads back to itself: a checkpoint that is being loaded names it again (as its "
            "autoencoder_ckpt or tokenizer path)",
            fix="only load checkpoints written by the suite; a latent model names another run's checkpoint",
        )
    if len(_loading) >= MAX_NESTED_LOADS:
        raise CheckpointError(
            f"ckpt_path={path}: more than {MAX_NESTED_LOADS} checkpoints lead to one another",
            fix="only load checkpoints written by the suite",
        )
    _loading.append(key)
    try:
        yield (st.st_dev, st.st_ino, st.st_mtime_ns)
    finally:
        _loading.pop()
        if not _loading:
            _loaded.clear()


@contextlib.contextmanager
def _registered_as_usual() -> Iterator[None]:
    module = torch.nn.Module
    patched = module.register_parameter, module.register_buffer
    module.register_parameter, module.register_buffer = _REGISTER
    try:
        yield
    finally:
        module.register_parameter, module.register_buffer = patched


_REGISTER = torch.nn.Module.register_parameter, torch.nn.Module.register_buffer


def _tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@contextlib.contextmanager
def _registered_on_meta() -> Iterator[None]:
    """Every parameter and buffer a module registers goes to the meta device as it is registered, before any
    initialisation writes it (an ``empty`` tensor's pages are never touched, so a huge layer costs no memory). Only
    what modules register moves: a part's own arithmetic (a noise schedule, a tokenizer's counts) runs as usual."""
    module = torch.nn.Module
    register_parameter, register_buffer = module.register_parameter, module.register_buffer

    def parameter_on_meta(self, name, param):
        if param is not None:
            param = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register_parameter(self, name, param)

    def buffer_on_meta(self, name, tensor, persistent=True):
        register_buffer(self, name, tensor.to("meta") if tensor is not None else None, persistent)

    module.register_parameter, module.register_buffer = parameter_on_meta, buffer_on_meta
    try:
        yield
    finally:
        module.register_parameter, module.register_buffer = register_parameter, register_buffer


def _probe_shapes(cfg: DictConfig, state: dict, path) -> None:
    """Build the model on the meta device (nothing allocated) and compare it with the checkpoint's tensors before
    any weight is materialised: a stored config naming a 20,000 x 20,000 layer costs nothing to refuse."""
    with _registered_on_meta():
        probe = _build_stored(cfg, path)
    own = probe.state_dict()
    bad = [k for k in own if k not in state or tuple(state[k].shape) != tuple(own[k].shape)]
    extra = sorted(set(state) - set(own))
    if bad or extra:
        k = bad[0] if bad else extra[0]
        theirs = tuple(state[k].shape) if k in state else "missing"
        mine = tuple(own[k].shape) if k in own else "missing"
        raise CheckpointError(
            f"ckpt_path={path}: the weights do not fit the model its config describes ({len(bad) + len(extra)} "
            f"tensors differ; e.g. {k}: checkpoint {theirs} vs model {mine})",
            fix="the checkpoint was edited or written by an incompatible version; retrain or use another",
        )
    registered = _tensor_bytes([*probe.parameters(), *probe.buffers()])
    stored = _tensor_bytes(state.values())
    if registered > stored + MAX_EXTRA_BYTES:
        raise CheckpointError(
            f"ckpt_path={path}: its model would allocate {registered:,} bytes for {stored:,} bytes of weights",
            fix="only load checkpoints written by the suite",
        )


def _build_stored(cfg: DictConfig, path) -> GenerativeModule:
    """`build_model` for a stored config: its values are untrusted, so a failure to build is the file's fault."""
    try:
        return build_model(cfg)
    except CheckpointError:
        raise
    except ConfigError as err:  # a value of the file's, not a setting the user typed
        raise CheckpointError(
            f"ckpt_path={path}: its stored config cannot be built ({err.render().splitlines()[0][:200]})",
            fix="the checkpoint was edited or written by an incompatible version; retrain or use another",
        ) from err
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, RuntimeError, NotImplementedError) as err:
        raise CheckpointError(
            f"ckpt_path={path}: its stored config cannot be built ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:160] if str(err) else ''})",
            fix="the checkpoint was edited or written by an incompatible version; retrain or use another",
        ) from err


def load_model(
    path: str | os.PathLike, expect_family: str | tuple[str, ...] | None = None, map_location: str = "cpu"
) -> tuple[torch.nn.Module, DictConfig]:
    """Rebuild the model of a checkpoint from the config inside it and load its weights (EMA weights where the
    run used EMA: Lightning's EMA callback stores them as the checkpoint's ``state_dict``)."""
    p = Path(os.path.expanduser(str(path)))
    ckpt = read_checkpoint(p)
    with _one_load(p, path) as version:
        if version in _loaded:
            return _loaded[version], checkpoint_config(ckpt)
        family = ckpt["gensuite"].get("family")
        expected = (expect_family,) if isinstance(expect_family, str) else expect_family
        if expected and family not in expected:
            raise CheckpointError(
                f"ckpt_path={path} holds a '{family}' model, but a {' or '.join(expected)} checkpoint is needed here",
                fix=f"give a checkpoint trained with model={expected[0]}",
            )
        cfg = checkpoint_config(ckpt)
        _probe_shapes(cfg, ckpt["state_dict"], path)
        with _registered_as_usual():  # the real model, also when an outer load is probing on the meta device
            model = _build_stored(cfg, path)
        built = getattr(model, "family", None)
        if built != family or (expected and built not in expected):
            raise CheckpointError(
                f"ckpt_path={path} says it holds a '{family}' model, but its config builds a '{built}' one",
                fix="the checkpoint was edited; use another",
            )
        try:
            model.load_state_dict(ckpt["state_dict"])
        except RuntimeError as err:
            raise CheckpointError(
                f"ckpt_path={path}: the weights do not fit the model its config describes ({str(err).splitlines()[0]})",
                fix="the checkpoint was edited or written by an incompatible version; retrain or use another",
            ) from err
        model = model.to(map_location).eval()
        if len(_loading) > 1:
            _loaded[version] = model
        return model, cfg
