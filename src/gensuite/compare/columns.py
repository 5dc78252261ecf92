"""Which numbers the comparison shows, built from the run record's declarations (`gensuite.record`): the
evaluator's metrics per feature space (`SPACE_METRICS`, `space_key`), the families' likelihood key and the run
keys train.py writes. The families come from ``conf/model`` (`gensuite.registry`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from gensuite import registry
from gensuite.record import (
    CLASS_COVERAGE_KEY,
    HEADLINE_SPACE_KEY,
    LIKELIHOOD_KEY,
    PARAMETERS_KEY,
    SAMPLING_SPEED_KEY,
    SPACE_METRICS,
    SPACES,
    SPACES_KEY,
    STEPS_KEY,
    STEPS_PER_S_KEY,
    TRAIN_SECONDS_KEY,
    space_key,
)

ARROW = {True: " ↑", False: " ↓", None: ""}


@dataclass(frozen=True)
class Column:
    """One number of the table: its header, its ``metrics.json`` key, how it is printed and which way is better."""

    header: str
    key: str
    fmt: str
    higher_is_better: bool | None = None


def _fmt(metric: str) -> str:
    return {"fid": ".2f", "kid": ".4f", "is": ".2f"}.get(metric, ".3f")


def space_column(metric: str, space: str, variant: str = "") -> Column:
    label, higher = SPACE_METRICS[metric]
    if variant:  # a floor or the train-referenced value: a reference point, not better or worse
        return Column(f"{label} {variant.replace('_', ' ')} ({space})", space_key(metric, space, variant), _fmt(metric))
    return Column(f"{label} ({space}){ARROW[higher]}", space_key(metric, space), _fmt(metric), higher)


def fid(space: str) -> Column:
    """The quality column of ``space``: the first metric the evaluator declares (FID)."""
    return space_column(next(iter(SPACE_METRICS)), space)


# the range each per-space metric cannot leave; its interval over seeds stays inside (`stats.estimate`). KID is
# unbounded: its unbiased estimate goes below zero for samples close to the reference.
SPACE_BOUNDS = {
    "fid": (0.0, None),
    "precision": (0.0, 1.0),
    "recall": (0.0, 1.0),
    "density": (0.0, None),
    "coverage": (0.0, 1.0),
    "copy_rate": (0.0, 1.0),
    "is": (1.0, None),
}
LIKELIHOOD = Column("bits/dim ↓", LIKELIHOOD_KEY, ".3f", False)
SAMPLING = Column("sampling img/s ↑", SAMPLING_SPEED_KEY, ".4g", True)
# the headline metrics of the verdict table: every per-space metric that ranks a model, in the headline space
VERDICT_METRICS = ("fid", "kid", "precision", "recall", "density", "coverage")


def bounds(key: str) -> tuple[float | None, float | None]:
    """The range of the number ``key`` (None: unbounded on that side): counts, times and rates are positive."""
    positive = (LIKELIHOOD_KEY, SAMPLING_SPEED_KEY, PARAMETERS_KEY, TRAIN_SECONDS_KEY, STEPS_KEY, STEPS_PER_S_KEY)
    if key in (*positive, CLASS_COVERAGE_KEY):
        return 0.0, None
    metric = next((m for m in SPACE_METRICS if key.startswith(f"val/{m}_")), None)
    return SPACE_BOUNDS.get(metric, (None, None))


def columns(space: str) -> list[Column]:
    """Every column of the table, the per-space ones in ``space`` (named in each header)."""
    first = next(iter(SPACE_METRICS))  # FID, whose train-referenced value and floor are also shown
    kid = list(SPACE_METRICS)[1]
    return [
        Column("parameters", PARAMETERS_KEY, "params"),
        Column("train s", TRAIN_SECONDS_KEY, ".0f"),
        Column("steps", STEPS_KEY, "int"),
        Column("steps/s", STEPS_PER_S_KEY, ".2f"),
        *(space_column(m, space) for m in SPACE_METRICS),
        space_column(first, space, "train"),
        space_column(kid, space, "floor"),
        Column("classes covered ↑", CLASS_COVERAGE_KEY, ".1f", True),
        LIKELIHOOD,
        SAMPLING,
    ]


def verdict_columns(space: str) -> list[Column]:
    return [space_column(m, space) for m in VERDICT_METRICS if m in SPACE_METRICS] + [LIKELIHOOD, SAMPLING]


def spaces_of(metrics: list[dict]) -> list[str]:
    """The feature spaces of the runs, the headline one first (the first run's headline where runs differ)."""
    found: list[str] = []
    for m in metrics:
        for s in [m.get(HEADLINE_SPACE_KEY), *str(m.get(SPACES_KEY) or "").split(",")]:
            if s and s not in found:
                found.append(str(s))
    if not found:
        # older runs name no space: the spaces whose FID they hold
        found = [s for s in SPACES if any(fid(s).key in m for m in metrics)]
    return found or [SPACES[0]]


@cache
def known_families() -> tuple[str, ...]:
    """Every family the suite can train (``conf/model/<family>.yaml``, `gensuite.registry`), in the comparison's
    order: the families that train from nothing first."""
    every = registry.families()
    return tuple(f.name for f in sorted(every, key=lambda f: not f.from_nothing))


def family_color(family: str) -> str:
    """One matplotlib colour per family, the same in every figure of every report."""
    order = known_families()
    if family in order[:10]:
        return f"C{order.index(family)}"
    return f"C{sum(map(ord, family)) % 10}"
