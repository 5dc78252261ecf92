"""The import graph of ``src/gensuite``: no import cycles, and no module imports one of a higher layer.

An AST scan (nothing is imported) of every ``import`` and ``from ... import`` in every module, at module level
and inside functions alike (a function-level import is a dependency deferred, not removed). ``from gensuite.x
import y`` counts as an import of ``gensuite.x.y`` where that is a module, else of ``gensuite.x`` (a package's
``__init__``); that Python runs a package's ``__init__`` before any module in it is not counted.

The layers, lowest first. A module belongs to the layer of the longest entry of `LAYERS` that is its dotted path
below ``gensuite`` or a package above it; a module may import its own layer and the layers below it:

=====  ============  ==========================================================================================
layer  name          modules
=====  ============  ==========================================================================================
0      foundation    the package root (``config_dir``), errors, contracts, record (the run record, torch-free),
                     registry (the families of ``conf/model``), safe_files, lightning_compat, hydra_compat
1      parts         nets, diffusion, flow, data
2      models        families (the kernel: base, conditioning, options, draw, guided; the families; catalog)
3      evaluation    metrics
4      run           callbacks, runs (checkpoints, trust, lock, nodes, resume, sample files), cli (config,
                     argv checks, Hydra hooks, sweeps, loggers, memory, precision, sampling settings)
5      commands      train, sample, eval, compare: none imports another (`COMMANDS`)
6      entry points  entry (the Hydra wrappers), __main__ (the ``python -m gensuite <command>`` dispatcher)
=====  ============  ==========================================================================================

What a lower layer needs of a higher one is passed in, not imported: the time budget's progress reaches the
learning-rate schedule as ``GenerativeModule.budget_progress`` and the training seconds reach the evaluation
callback as ``Evaluation.training_seconds`` (both handed in by `gensuite.train`), and latent diffusion gets its
frozen autoencoder from the loader its config names (``model.load_autoencoder``, `gensuite.runs.checkpoint`).

``python tests/test_layers.py`` prints the figures: imports, cycles, upward imports.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "gensuite"

LAYERS: dict[str, int] = {
    **dict.fromkeys(["", "errors", "contracts", "record", "registry", "safe_files"], 0),
    **dict.fromkeys(["lightning_compat", "hydra_compat"], 0),
    **dict.fromkeys(["nets", "diffusion", "flow", "data"], 1),
    "families": 2,
    "metrics": 3,
    **dict.fromkeys(["callbacks", "runs", "cli"], 4),
    **dict.fromkeys(["train", "sample", "eval", "compare"], 5),
    **dict.fromkeys(["entry", "__main__"], 6),
}
#: the commands: each is entered through `gensuite.entry` and imports none of the others
COMMANDS = ("train", "sample", "eval", "compare")


def modules(src: Path = SRC) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name, for its ``__init__``)."""
    out = {}
    for path in sorted((src / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports, anywhere in its file."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package (itself, for an __init__)
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import gensuite.a.b` names gensuite.a.b
                target = target.rpartition(".")[0]
            if target:
                found.add(target)
    return found


@functools.cache
def graph(src: Path = SRC) -> dict[str, set[str]]:
    mods = modules(src)
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def layer_of(name: str) -> int:
    below = name[len(PACKAGE) + 1 :] if name != PACKAGE else ""
    parts = below.split(".") if below else []
    for n in range(len(parts), -1, -1):
        key = ".".join(parts[:n])
        if key in LAYERS:
            return LAYERS[key]
    raise KeyError(name)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm), and each module that
    imports itself, sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges.get(v, ()):
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(out)


def upward(edges: dict[str, set[str]]) -> list[str]:
    """``a (layer) -> b (layer)`` for every import of a higher layer's module."""
    return sorted(
        f"{a} ({layer_of(a)}) -> {b} ({layer_of(b)})"
        for a, targets in edges.items()
        for b in targets
        if layer_of(b) > layer_of(a)
    )


def test_every_module_has_a_layer():
    unlisted = []
    for name in modules():
        try:
            layer_of(name)
        except KeyError:
            unlisted.append(name)
    assert not unlisted, f"add these modules to LAYERS in {__file__}: {unlisted}"


def test_no_import_cycles():
    found = cycles(graph())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_no_import_from_a_lower_layer_to_a_higher_one():
    found = upward(graph())
    assert not found, "imports from a lower layer to a higher one:\n" + "\n".join(found)


def test_no_command_imports_another():
    def command_of(name: str) -> str | None:
        top = name.split(".")[1] if "." in name else None
        return top if top in COMMANDS else None

    found = sorted(
        f"{a} -> {b}"
        for a, targets in graph().items()
        for b in targets
        if command_of(a) and command_of(b) and command_of(a) != command_of(b)
    )
    assert not found, "commands importing one another:\n" + "\n".join(found)


def test_the_scan_sees_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("def f():\n    from gensuite.sub import child\n")
    (pkg / "sub" / "__init__.py").write_text("from . import child\n")
    (pkg / "sub" / "child.py").write_text("import gensuite.errors\nfrom gensuite import errors\n")
    edges = graph(tmp_path)
    assert edges["gensuite.errors"] == {"gensuite.sub.child"}
    assert edges["gensuite.sub"] == {"gensuite.sub.child"}
    assert edges["gensuite.sub.child"] == {"gensuite.errors"}
    assert cycles(edges) == [["gensuite.errors", "gensuite.sub.child"]]


if __name__ == "__main__":  # the figures: python tests/test_layers.py
    edges = graph()
    found, up = cycles(edges), upward(edges)
    print(f"{sum(len(t) for t in edges.values())} imports among {len(edges)} modules")
    print(f"import cycles: {len(found)}" + "".join(f"\n  {len(c)} modules: {', '.join(c)}" for c in found))
    print(f"upward imports: {len(up)}" + "".join(f"\n  {u}" for u in up))
