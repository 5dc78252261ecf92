"""Every private member of a library the suite relies on sits in an adapter module (`gensuite.lightning_compat`,
`gensuite.hydra_compat`), whose tests fail loudly when an upgrade moves it: outside them, the scan finds none.

The rule, over the AST of every module of ``src/gensuite`` (and the classes those modules define, imported):

- a *private name* starts with one underscore and not two (``_x``, not ``__init__``); Hydra's documented config
  keys (``_target_``, ``_partial_``...) are public;
- the *libraries*: torch, torchvision, lightning (and lightning_fabric / pytorch_lightning), hydra, omegaconf,
  torchmetrics, tensorboard;
- an *import* is a use when a library module path has a private part (``hydra._internal.utils``) or it imports a
  private name from a library (``from lightning.fabric.loggers.logger import _DummyExperiment``);
- ``obj._x`` (or ``getattr(obj, "_x")`` / ``setattr`` / ``hasattr``) on anything but ``self``/``cls``/``super()``
  is a use when ``obj``'s chain starts at a library import (``nn.modules.batchnorm._BatchNorm``), or when it starts
  at a local value and the suite itself defines no ``_x`` anywhere (``scheduler._last_lr``); a chain that starts
  at a module of the standard library or of the suite is not;
- in a class with a library class among its bases (``EMA(EMAWeightAveraging)``), ``self._x`` (read or written) and
  a ``def _x`` / ``_x = ...`` in its body are a use when a library class of its MRO defines ``_x`` (as a class
  attribute or method, or as ``self._x = ...`` in its source), and a ``self._x`` read is a use when no suite class
  of its MRO defines ``_x`` either (it can only come from the library).

Not seen: a private name reached through an object the scan cannot trace (a value a library function returns,
passed around under a name that the suite also uses for its own members).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import textwrap
from functools import cache
from pathlib import Path

import pytest

from .conftest import ROOT

SRC = ROOT / "src"
LIBRARIES = {
    "torch",
    "torchvision",
    "lightning",
    "lightning_fabric",
    "pytorch_lightning",
    "hydra",
    "omegaconf",
    "torchmetrics",
    "tensorboard",
}
ADAPTERS = {"gensuite/lightning_compat.py", "gensuite/hydra_compat.py"}
HYDRA_KEYS = {"_target_", "_partial_", "_convert_", "_recursive_", "_args_"}
ATTRIBUTE_CALLS = {"getattr", "setattr", "hasattr", "delattr"}


def private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__") and name not in HYDRA_KEYS


def is_library(module: str) -> bool:
    return module.split(".")[0] in LIBRARIES


def modules(src: Path, package: str) -> dict[str, Path]:
    """``gensuite.x.y -> path`` for every module of the package."""
    out = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


@cache
def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def own_names(cls_node: ast.ClassDef) -> set[str]:
    """The private names a class defines itself: in its body, and as ``self._x = ...`` in its methods."""
    names = set()
    for node in cls_node.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    for node in _walk_class(cls_node):
        if isinstance(node, ast.Attribute) and _is_self(node.value) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
    return {n for n in names if private(n)}


@cache
def library_names(cls: type) -> frozenset[str]:
    """The private names a library class defines: its class attributes and methods, and ``self._x = ...`` in its
    source (attributes made in ``__init__`` are in no class ``__dict__``)."""
    names = {n for n in vars(cls) if private(n)}
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # a class written in C
        return frozenset(names)
    for node in ast.walk(ast.parse(source)):
        stored = isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
        if stored and _is_self(node.value) and private(node.attr):
            names.add(node.attr)
    return frozenset(names)


def _is_self(node: ast.AST) -> bool:
    if isinstance(node, ast.Name):
        return node.id in ("self", "cls")
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"


def _walk_class(cls_node: ast.ClassDef):
    """The nodes of a class's body, not those of the classes nested in it (their ``self`` is another)."""
    todo = list(cls_node.body)
    while todo:
        node = todo.pop()
        yield node
        todo += [c for c in ast.iter_child_nodes(node) if not isinstance(c, ast.ClassDef)]


def _classes(module_tree: ast.Module):
    """``(qualname, ClassDef)`` of every class importable by its qualified name (not those made in functions)."""
    todo = [("", n) for n in module_tree.body]
    while todo:
        prefix, node = todo.pop()
        if isinstance(node, ast.ClassDef):
            yield prefix + node.name, node
            todo += [(f"{prefix}{node.name}.", n) for n in node.body]


def _lookup(module: str, qualname: str):
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return obj if isinstance(obj, type) else None


def _imported_roots(module_tree: ast.Module, package: str) -> dict[str, str]:
    """``local name -> the module it was imported from`` (``nn -> torch.nn``; relative imports: ``gensuite``)."""
    roots = {}
    for node in ast.walk(module_tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                roots[(a.asname or a.name).split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            source = package if node.level else (node.module or "")
            for a in node.names:
                roots[a.asname or a.name] = source
    return roots


def _chain_root(node: ast.AST) -> ast.AST:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node


def _accesses(node: ast.AST):
    """``(base, name, ctx)`` when ``node`` reaches a member by name: ``base.name`` or ``getattr(base, "name")``
    (``setattr``, ``hasattr``, ``delattr``)."""
    if isinstance(node, ast.Attribute):
        yield node.value, node.attr, node.ctx
    elif (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ATTRIBUTE_CALLS
        and len(node.args) >= 2
        and isinstance(node.args[1], ast.Constant)
        and isinstance(node.args[1].value, str)
    ):
        yield node.args[0], node.args[1].value, ast.Store() if node.func.id == "setattr" else ast.Load()


def scan(src: Path = SRC, package: str = "gensuite") -> list[str]:
    """Every use of a library's private member outside the adapters, as ``path:line: what``."""
    mods = modules(src, package)
    suite_classes = {}  # class object -> ClassDef
    for name, path in mods.items():
        for qualname, node in _classes(tree(path)):
            cls = _lookup(name, qualname)
            if cls is not None:
                suite_classes[cls] = node
    # every private name the suite defines anywhere: a module's functions and globals, a class's members
    suite_names = {n for node in suite_classes.values() for n in own_names(node)}
    for path in mods.values():
        for node in tree(path).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and private(node.name):
                suite_names.add(node.name)
            elif isinstance(node, ast.Assign):
                suite_names |= {t.id for t in node.targets if isinstance(t, ast.Name) and private(t.id)}

    found = []
    for name, path in mods.items():
        rel = path.relative_to(src).as_posix()
        if rel in ADAPTERS:
            continue
        module_tree = tree(path)
        roots = _imported_roots(module_tree, package)

        def use(node: ast.AST, what: str, rel=rel) -> None:
            found.append(f"{rel}:{node.lineno}: {what}")

        for node in ast.walk(module_tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if is_library(a.name) and any(private(p) for p in a.name.split(".")):
                        use(node, f"import {a.name}")
            elif isinstance(node, ast.ImportFrom) and not node.level and is_library(node.module or ""):
                if any(private(p) for p in node.module.split(".")):
                    use(node, f"from {node.module} import ...")
                for a in node.names:
                    if private(a.name):
                        use(node, f"from {node.module} import {a.name}")
            for base, attr, _ in _accesses(node):
                if not private(attr) or _is_self(base):
                    continue
                root = _chain_root(base)
                source = roots.get(root.id) if isinstance(root, ast.Name) else None
                if is_library(source) if source is not None else attr not in suite_names:
                    use(node, f"{ast.unparse(base)}.{attr}")

        for qualname, cls_node in _classes(module_tree):
            cls = _lookup(name, qualname)
            if cls is None:
                continue
            library = [k for k in cls.__mro__[1:] if is_library(k.__module__) and k not in suite_classes]
            if not library:
                continue
            theirs = set().union(*(library_names(k) for k in library))
            ours = set().union(*(own_names(suite_classes[k]) for k in cls.__mro__ if k in suite_classes))
            for node in cls_node.body:  # overriding or shadowing a library's private member
                defined = [node.name] if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else []
                if isinstance(node, (ast.Assign, ast.AnnAssign)):
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    defined = [t.id for t in targets if isinstance(t, ast.Name)]
                for n in defined:
                    if n in theirs:
                        use(node, f"{qualname}.{n} overrides a library base's")
            for node in _walk_class(cls_node):
                for base, attr, ctx in _accesses(node):
                    from_library = attr in theirs or (isinstance(ctx, ast.Load) and attr not in ours)
                    if _is_self(base) and private(attr) and from_library:
                        use(node, f"{qualname}: self.{attr}")
    return sorted(set(found))


def test_no_private_library_member_outside_the_adapters():
    found = scan()
    if found:
        pytest.fail(
            f"{len(found)} private library members outside the adapters (move each into lightning_compat.py or "
            "hydra_compat.py, with a test):\n" + "\n".join(found)
        )


def test_the_scan_sees_each_kind_of_use(tmp_path, monkeypatch):
    """The rule on a module written for the purpose: each kind of use is found, the suite's own members are not."""
    pkg = tmp_path / "gensuite_probe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "probe_mod.py").write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn
            from hydra._internal.utils import get_args_parser
            from lightning.fabric.loggers.logger import _DummyExperiment
            from lightning.pytorch.callbacks import EMAWeightAveraging

            BN = nn.modules.batchnorm._BatchNorm

            def _helper():
                return 1

            class Mine(EMAWeightAveraging):
                def _own(self):
                    self._mine = 1
                    return self._mine, self._own, _helper()

                def read(self, scheduler):
                    scheduler._last_lr = [0.1]
                    return self._average_model, getattr(self, "_device"), {"_target_": "x"}

                def _gensuite_probe(self):   # not Lightning's: fine
                    return torch.zeros(1)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    found = "\n".join(scan(tmp_path, "gensuite_probe"))
    for expected in (
        "from hydra._internal.utils import",
        "import _DummyExperiment",
        "nn.modules.batchnorm._BatchNorm",
        "scheduler._last_lr",
        "self._average_model",
        "self._device",
    ):
        assert expected in found, (expected, found)
    for own in ("_mine", "self._own", "_helper", "_gensuite_probe", "_target_"):
        assert own not in found, (own, found)
