"""Sampling options: the settings of ``sample`` a user changes without retraining, declared once per family.

A family declares its options as a frozen dataclass (a subclass of `SamplingOptions`), one field per knob with a
default and a one-line ``help`` in its metadata, and a ``check(model)`` of the values. The model holds an
immutable default (``model.default_options``, built from its constructor arguments: what it was trained with);
``sample(n, generator, labels, options)`` takes another, which ``sample.py`` / ``eval.py`` build from their
``sampling.<knob>=`` overrides (`SamplingOptions.override`) and pass in. Nothing is set on the model.

The names ``sampling.*`` of ``conf/sample.yaml`` / ``conf/eval.yaml`` and the sampling-only model keys of
`gensuite.runs.resume` are read from these declarations (`gensuite.families.catalog`;
``tests/test_sampling_knobs.py`` checks the yaml agrees).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from gensuite.errors import ConfigError


def knob(default: Any, help: str, trained: bool = False) -> Any:
    """A field of an options class: ``default``, what it does (``help``, listed by the unknown-knob error), and
    ``trained``: the model setting of the same name also shapes training (so it is no sampling-only key on resume)."""
    return dataclasses.field(default=default, metadata={"help": help, "trained": trained})


@dataclasses.dataclass(frozen=True)
class SamplingOptions:
    """The options of a family without knobs; the base of every family's options."""

    @classmethod
    def knobs(cls) -> dict[str, str]:
        """Knob name -> what it does."""
        return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}

    def check(self, model) -> None:
        """Raise a `ConfigError` naming ``sampling.<knob>`` when a value is out of range for ``model``."""

    def override(self, overrides: Mapping[str, Any], family: str) -> SamplingOptions:
        """These options with ``overrides`` (``sampling.<knob>`` values; None: unchanged) replaced. A knob this
        class does not declare is a `ConfigError` listing the ones it has (values are checked by `check`)."""
        knobs = self.knobs()
        given = {k: v for k, v in overrides.items() if v is not None}
        unknown = [k for k in given if k not in knobs]
        if unknown:
            have = "; ".join(f"sampling.{k}: {v}" for k, v in knobs.items()) or "none"
            raise ConfigError(
                f"a {family} model has no sampling knob " + ", ".join(f"sampling.{k}" for k in unknown)
                + f". Its knobs: {have}",
                keys=tuple(f"sampling.{k}" for k in unknown),
                fix="drop the override" + (", or use one of the knobs above" if knobs else ""),
            )  # fmt: skip
        return dataclasses.replace(self, **given)

    def info(self) -> dict[str, Any]:
        """The values, for metrics.json (``eval/sampling.<name>``; None left out): numbers say how they were made."""
        return {f"eval/sampling.{k}": v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclasses.dataclass(frozen=True)
class Guidance(SamplingOptions):
    """Classifier-free guidance (Ho & Salimans 2022), the one guidance of diffusion and flow matching:
    ``out = out(∅) + s · (out(y) - out(∅))`` (`gensuite.families.conditioning.guide`)."""

    guidance_scale: float = knob(
        1.0, "classifier-free guidance of a conditional model (0: unconditional, 1: conditional, > 1: guided)"
    )

    def check(self, model) -> None:
        scale = self.guidance_scale
        if scale < 0:
            raise ConfigError(f"guidance_scale must be >= 0, got {scale}", keys=("sampling.guidance_scale",))
        if scale != 1.0 and not model.conditional:
            raise ConfigError(
                f"guidance_scale={scale} but this {model.family} model is unconditional (classifier-free guidance "
                "mixes a conditional and an unconditional prediction)",
                keys=("sampling.guidance_scale",),
                fix="drop the guidance setting, or train a conditional model (model.num_classes=${data.num_classes})",
            )
