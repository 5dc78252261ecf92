"""Building objects from the composed config, with errors that name config keys rather than Python arguments."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from gensuite.errors import ConfigError, GensuiteError


def user_error_in(exc: BaseException) -> GensuiteError | None:
    """The `GensuiteError` behind ``exc`` (Hydra and Lightning wrap exceptions), if any."""
    from omegaconf.errors import MissingMandatoryValue

    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, GensuiteError):
            return exc
        if isinstance(exc, MissingMandatoryValue):  # a `???` setting the command line did not give
            key = getattr(exc, "full_key", None) or "a required setting"
            return ConfigError(f"{key} must be given (it has no default)", fix=f"add {key}=... to the command")
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def describe_key(cfg: DictConfig, key: str) -> str:
    """``model.decoder.image_size=28 (from ${data.image_size})``: a key, its value and where the value is set."""
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    if not isinstance(parent, (DictConfig, ListConfig)) or leaf not in parent:
        return key
    raw = OmegaConf.to_container(parent, resolve=False).get(leaf) if isinstance(parent, DictConfig) else None
    try:
        value = OmegaConf.select(cfg, key)
    except Exception:  # an interpolation that does not resolve
        value = raw
    text = f"{key}={value}"
    if isinstance(raw, str) and "${" in raw:
        text += f" (from {raw})"
    return text


def instantiate_checked(cfg: DictConfig, key: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(cfg.<key>)``; a part's `ConfigError` comes out naming full config keys."""
    node = OmegaConf.select(cfg, key)
    if node is None:
        raise ConfigError(f"the config has no '{key}' section", fix=f"choose one: {key}=<name>")
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        err = user_error_in(exc)
        match = re.search(r"full_key: (\S+)", str(exc))
        where = match.group(1) if match else key
        if not where.startswith(key):
            where = f"{key}.{where}"
        if isinstance(err, ConfigError):
            err.where = where
            err.key_notes = [describe_key(cfg, f"{where}.{k}") for k in err.keys]
            raise err from None
        if err is not None:
            raise err from None
        cause = exc.__cause__ or exc
        raise ConfigError(
            f"cannot build {where}: {type(cause).__name__}: {cause}",
            fix=f"check the settings under {where} (python train.py --cfg job shows the composed config)",
        ) from exc


@contextmanager
def report_user_errors() -> Iterator[None]:
    """Turn a user's mistake into a short message on stderr and exit status 2 (no traceback)."""
    import sys

    try:
        yield
    except Exception as exc:
        err = user_error_in(exc)
        if err is None:
            raise
        print("\n" + err.render() + "\n", file=sys.stderr, flush=True)
        sys.exit(err.exit_code)


def to_plain(cfg: DictConfig) -> dict:
    """The resolved config as plain Python data (what travels in a checkpoint), without Hydra's own node."""
    if "hydra" in cfg:
        cfg = cfg.copy()
        with open_dict(cfg):
            del cfg["hydra"]
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """``{"model": {"beta": 1}}`` -> ``{"model.beta": 1}``; lists and None become strings (for the hparams tab)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, name + "."))
        elif isinstance(v, (int, float, str, bool)):
            out[name] = v
        else:
            out[name] = str(v)
    return out
