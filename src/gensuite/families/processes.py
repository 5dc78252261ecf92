"""Samplers by process: a sampler belongs to one generative process, and a model takes only its own kind.

A diffusion sampler (`gensuite.diffusion.samplers`) walks a noise schedule with a denoiser; a flow sampler
(`gensuite.flow.samplers`) integrates a velocity field along a time grid. Each sampler class says which with its
``process`` attribute; a family's ``set_sampler`` calls `check_process` first, so ``sampler=heun`` on a diffusion
checkpoint (or ``sampler=ddim`` on a flow model) is a one-line `ConfigError` before any sampling, training or
evaluation. The choices offered in the message are read from the shipped ``conf/sampler`` folder.
"""

from __future__ import annotations

import functools

from gensuite.errors import ConfigError


@functools.cache
def sampler_choices() -> dict[str, tuple[str, ...]]:
    """``{process: (config names of conf/sampler that build a sampler of that process)}``."""
    import yaml
    from hydra.utils import get_class

    from gensuite import config_dir

    found: dict[str, list[str]] = {}
    for path in sorted((config_dir() / "sampler").glob("*.yaml")):
        target = (yaml.safe_load(path.read_text()) or {}).get("_target_")
        process = getattr(get_class(target), "process", None) if target else None
        if process:
            found.setdefault(process, []).append(path.stem)
    return {k: tuple(v) for k, v in found.items()}


def check_process(sampler: object, process: str, family: str) -> None:
    """Raise `ConfigError` unless ``sampler`` is a sampler of ``process`` (the model's: ``diffusion``, ``flow``)."""
    got = getattr(sampler, "process", None)
    if got == process:
        return
    name = getattr(sampler, "name", type(sampler).__name__)
    choices = " | ".join(sampler_choices().get(process, ()))
    raise ConfigError(
        f"sampler={name} is a {got or 'non'}-process sampler; a {family} model needs a {process} sampler",
        keys=("sampler",),
        fix=f"sampler={choices}" if choices else "drop the sampler= override",
    )
