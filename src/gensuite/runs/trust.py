"""What a stored config may build: an exact allowlist, checked before anything is instantiated.

A checkpoint (or a sample file, or a config file) from someone else is untrusted input. Its tensors are read with
``torch.load(weights_only=True)``, which unpickles no code; but rebuilding the model means instantiating the
``_target_``s of its stored config, and instantiating a ``_target_`` runs code. A name-prefix check is not enough:
Hydra resolves ``gensuite.runs.checkpoint.os.system`` by walking attributes, so any name that *starts* with a trusted
prefix reaches whatever that module imported. Hence, for every ``_target_`` in a stored config:

1. the name must be one of an exact set — the ``_target_``s of the suite's own shipped configs for the groups a
   checkpoint is rebuilt from (``model``, ``data``, ``metrics``, ``sampler``), plus the optimiser, scheduler and
   layer classes of ``torch.optim`` / ``torch.nn`` — so nothing outside it is even imported;
2. the object it resolves to must be one of the objects of that set (identity, not name);
3. names under a prefix the user declared trusted (``GENSUITE_TRUSTED_MODULES=mypkg,otherpkg``: their own
   families and parts) must resolve to a class or function *defined* in that package (its ``__module__``), and
   no name may hold a dunder — so ``mypkg.os.system`` is refused like ``gensuite.runs.checkpoint.os.system``.
   Declaring a package trusts its code: resolving ``mypkg.sub.Thing`` imports ``mypkg`` and ``mypkg.sub``, and
   whatever those modules do on import runs before the identity check. The suite's own package (and any prefix
   of it) cannot be declared: its names go through the exact set of 1. only.

Interpolations (``${...}``) are refused anywhere in a stored config: a stored config is resolved when it is
written, so one in a checkpoint was put there by hand, and it could pull an unchecked section into a checked one
or call a resolver. Settings that would make a trusted class write somewhere (``cache_dir``) or download
(``download``) are replaced by the local ones (`neutralise`).
"""

from __future__ import annotations

import functools
import inspect
import os
import re
from collections.abc import Iterator
from typing import Any

from gensuite import config_dir
from gensuite.errors import CheckpointError

#: the config groups whose shipped ``_target_``s a stored config may name
BUILT_GROUPS = ("model", "data", "metrics", "sampler")
TRUSTED_ENV = "GENSUITE_TRUSTED_MODULES"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _targets_in(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("_target_"), str):
            yield node["_target_"]
        for value in node.values():
            yield from _targets_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from _targets_in(value)


@functools.cache
def suite_target_names() -> frozenset[str]:
    """Every ``_target_`` the suite's own configs of `BUILT_GROUPS` name (read as yaml, nothing resolved)."""
    import yaml

    names: set[str] = set()
    for group in BUILT_GROUPS:
        for path in sorted((config_dir() / group).rglob("*.yaml")):
            names.update(_targets_in(yaml.safe_load(path.read_text()) or {}))
    return frozenset(names)


@functools.cache
def _torch_classes() -> dict[str, object]:
    """Optimisers, learning-rate schedulers and layers of torch, under their public and their defining names."""
    import torch

    found: dict[str, object] = {}
    spaces = (
        ("torch.optim", torch.optim, torch.optim.Optimizer),
        (
            "torch.optim.lr_scheduler",
            torch.optim.lr_scheduler,
            (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau),
        ),
        ("torch.nn", torch.nn, torch.nn.Module),
    )
    for prefix, space, base in spaces:
        for name, obj in vars(space).items():
            if isinstance(obj, type) and issubclass(obj, base):
                found[f"{prefix}.{name}"] = obj
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


@functools.cache
def allowlist() -> dict[str, object]:
    """Name -> object of everything a stored config may build, the user's declared modules aside."""
    from hydra.utils import get_object

    allowed = dict(_torch_classes())
    for name in suite_target_names():
        allowed[name] = get_object(name)
    return allowed


def trusted_modules() -> tuple[str, ...]:
    """The module prefixes of ``GENSUITE_TRUSTED_MODULES`` (comma-separated), each a dotted Python name."""
    raw = os.environ.get(TRUSTED_ENV, "")
    prefixes = tuple(p.strip() for p in raw.split(",") if p.strip())
    for p in prefixes:
        if not _NAME.match(p):
            raise CheckpointError(
                f"{TRUSTED_ENV}={raw!r}: {p!r} is not a module name",
                fix=f"list module prefixes, comma-separated: {TRUSTED_ENV}=mypkg,otherpkg",
            )
        if _in_package(p, "gensuite") or _in_package("gensuite", p):
            raise CheckpointError(
                f"{TRUSTED_ENV}={raw!r}: {p!r} names the suite's own package, whose classes a stored config may "
                "build through the exact allowlist only (its helper functions, e.g. the checkpoint writer, are never "
                "model targets)",
                fix=f"name only your own packages: {TRUSTED_ENV}=mypkg",
            )
    return prefixes


def _in_package(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def resolve_target(name: Any, where: str) -> object:
    """The object a stored ``_target_`` names, if it may be built; else `CheckpointError` (nothing imported)."""
    refuse = CheckpointError(
        f"the stored config asks to build {name!r} at {where}, which is not one of the suite's own classes "
        "(nor of a module declared trusted); refusing to build it",
        fix="only load files from sources you trust; for your own family or parts, declare their package: "
        f"{TRUSTED_ENV}=mypkg",
    )
    if not isinstance(name, str) or not _NAME.match(name) or "__" in name:
        raise refuse
    allowed = allowlist()
    if name in allowed:
        from hydra.utils import get_object

        obj = get_object(name)
        if not any(obj is ok for ok in allowed.values()):  # pragma: no cover - a module that rebinds its names
            raise refuse
        return obj
    for prefix in trusted_modules():
        if _in_package(name, prefix):
            from hydra.utils import get_object

            try:
                obj = get_object(name)
            except Exception as err:
                raise CheckpointError(f"cannot import {name!r} (at {where}): {err}", fix=refuse.fix) from err
            # defined in the declared package (a re-export such as mypkg.MyFamily is fine), never a name it imported
            module = getattr(obj, "__module__", None) or ""
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and _in_package(module, prefix):
                return obj
    raise refuse


def _walk(node: Any, where: str) -> Iterator[tuple[Any, str]]:
    yield node, where
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, f"{where}.{k}" if where else str(k))
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _walk(v, f"{where}[{i}]")


def check_stored_config(plain: Any, sections: tuple[str, ...]) -> None:
    """Refuse a stored config (plain data) that interpolates, or whose `sections` name anything not allowed."""
    trusted_modules()  # a malformed or refused declaration is an error whatever the config names
    if not isinstance(plain, dict):
        raise CheckpointError("the stored config is not a mapping", fix="only load files written by the suite")
    for node, where in _walk(plain, ""):
        if isinstance(node, dict) and any(not isinstance(k, str) for k in node):
            raise CheckpointError(f"the stored config has a non-text key at {where or '<root>'}")
        if isinstance(node, str) and "${" in node:
            raise CheckpointError(
                f"the stored config holds an interpolation at {where}: {node[:80]!r}; a stored config is resolved "
                "when it is written, so this one was edited; refusing to resolve it",
                fix="only load files from sources you trust",
            )
        if not isinstance(node, (dict, list, tuple, str, int, float, bool, type(None))):
            raise CheckpointError(f"the stored config holds a {type(node).__name__} at {where}; only plain data")
    for section in sections:
        for node, where in _walk(plain.get(section), section):
            if isinstance(node, dict) and "_target_" in node:
                resolve_target(node["_target_"], where)


#: where a stored config's data would be read from, and what `neutralise` keeps of it (the key a user confirms)
STORED_DATA_PATH = "stored_data_path"


def neutralise(plain: dict, sections: tuple[str, ...], cache_dir: str) -> dict:
    """Settings of a stored config that would read, write or download where the file says: the local ones instead.

    ``cache_dir`` becomes the local cache, ``download`` false, a torchvision ``root`` the local data folder, and
    the data's ``path`` (an image folder, a text file) is not followed at all: it is kept under
    `STORED_DATA_PATH` for the message that asks the user to confirm it (``eval.py ... data_path=<folder>``)."""
    for section in sections:
        for node, where in _walk(plain.get(section), section):
            if isinstance(node, dict):
                if "cache_dir" in node:
                    node["cache_dir"] = cache_dir
                if "download" in node:
                    node["download"] = False
                if where == "data" and "root" in node:
                    node["root"] = local_data_dir()
                if where == "data" and node.get("path") is not None:
                    plain[STORED_DATA_PATH] = node["path"]
                    node["path"] = None
    return plain


def local_cache_dir() -> str:
    return os.environ.get("GENSUITE_CACHE_DIR", ".cache/gensuite")


def local_data_dir() -> str:
    return os.environ.get("GENSUITE_DATA_DIR", "data")
