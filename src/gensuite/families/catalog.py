"""The suite's families as classes, read from ``conf/model/`` (`gensuite.registry`): what the command-line layer
asks of all of them at once — every sampling knob (the ``sampling.*`` keys of sample.py / eval.py) and the model
keys a resumed run may change. Nothing in the families imports this module, so no family is imported by another.
"""

from __future__ import annotations

import dataclasses
import functools

from hydra.utils import get_object

from gensuite import registry


@functools.cache
def builtin_families() -> tuple[type, ...]:
    """The class of every family in ``conf/model/`` (`gensuite.registry`), one each (latent diffusion is a
    diffusion subclass with the same options)."""
    classes: dict[type, None] = {}
    for family in registry.families():
        classes[get_object(family.target)] = None
    return tuple(classes)


def builtin_knobs() -> dict[str, dict[str, str]]:
    """Every knob of the suite's own families: name -> {family: what it does} (the ``sampling.*`` keys of
    sample.py / eval.py)."""
    out: dict[str, dict[str, str]] = {}
    for cls in builtin_families():
        for name, help in cls.Options.knobs().items():
            out.setdefault(name, {})[cls.family] = help
    return out


def sampling_only_model_keys() -> tuple[str, ...]:
    """The knobs whose model setting of the same name (``model.temperature``) is the default of sampling only,
    never of training: a resumed run may change them (`gensuite.runs.resume`)."""
    keys: dict[str, None] = {}
    for cls in builtin_families():
        keys.update({f.name: None for f in dataclasses.fields(cls.Options) if not f.metadata.get("trained")})
    return tuple(keys)
