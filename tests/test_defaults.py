"""One source of truth for every default: where the suite's yaml files set a literal value for an argument of one
of the suite's own classes, and every yaml file that builds that class agrees on it, the Python signature's
default is that same value. (A value the yaml files disagree on is a variant, e.g. two UNet sizes; a default of
None in code means "required" or "derived" and is not compared.)"""

from __future__ import annotations

import inspect
from collections import defaultdict

import yaml
from hydra.utils import get_object

from gensuite import config_dir

GROUPS = ("model", "sampler", "metrics", "data", "callbacks")


def _targets(node, out):
    if isinstance(node, dict):
        if isinstance(node.get("_target_"), str) and node["_target_"].startswith("gensuite."):
            out.append(node)
        for value in node.values():
            _targets(value, out)


def _literal(value) -> bool:
    return not isinstance(value, (dict, list)) and not (isinstance(value, str) and "${" in value)


def yaml_values() -> dict[tuple[str, str], dict[str, object]]:
    """(target, argument) -> {yaml file: literal value} over every config of `GROUPS`."""
    found: dict[tuple[str, str], dict[str, object]] = defaultdict(dict)
    for group in GROUPS:
        for path in sorted((config_dir() / group).rglob("*.yaml")):
            nodes: list[dict] = []
            _targets(yaml.safe_load(path.read_text()) or {}, nodes)
            for node in nodes:
                for key, value in node.items():
                    if not key.startswith("_") and _literal(value):
                        found[(node["_target_"], key)][str(path.relative_to(config_dir()))] = value
    return found


def test_the_yaml_and_the_code_agree_on_every_shared_default():
    disagree = []
    for (target, key), values in sorted(yaml_values().items()):
        if len({repr(v) for v in values.values()}) != 1:
            continue  # variants of the part: the yaml files choose, the code default is one of them or neutral
        try:
            param = inspect.signature(get_object(target)).parameters.get(key)
        except (TypeError, ValueError):
            continue
        if param is None or param.default is inspect.Parameter.empty or param.default is None:
            continue
        value = next(iter(values.values()))
        default = list(param.default) if isinstance(param.default, tuple) else param.default
        if default != value:
            disagree.append(f"{target}({key}=...): {default!r} in code, {value!r} in {', '.join(values)}")
    assert not disagree, "defaults stated twice, differently:\n" + "\n".join(disagree)


def test_the_check_reads_the_suite_configs():
    values = yaml_values()
    assert len(values) > 50  # the walk found the parts' settings (a broken walk would pass the test above vacuously)
    assert ("gensuite.nets.transformer.Transformer", "dropout") in values
