"""The runs summed up per family: the per-seed values of every number, their means and intervals, the ranking in
each feature space and whether the spaces agree, the pairwise verdicts, quality against sampling time, and — where
the runs have budget points — the same at every point of the training clock, with where two families' curves
cross."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from itertools import combinations
from typing import Any

from gensuite.compare import stats
from gensuite.compare.columns import SAMPLING, Column, bounds, columns, fid, spaces_of, verdict_columns
from gensuite.compare.runs import Run, by_family


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(float(value)) else None


@dataclass
class Verdict:
    """One pair of families on one metric: ``a - b`` with Welch's interval."""

    column: Column
    a: str
    b: str
    difference: stats.Difference

    @property
    def better(self) -> str | None:
        """The family the difference favours where it is significant."""
        if not self.difference.significant or self.column.higher_is_better is None:
            return None
        a_higher = self.difference.diff > 0
        return self.a if a_higher == self.column.higher_is_better else self.b


@dataclass(frozen=True)
class CostPoint:
    """One family at one knob value (``knob`` empty: its runs' own setting, ``value`` "default"): sampling
    seconds per image and headline FID over seeds, and whether no other point is both faster and better."""

    family: str
    knob: str
    value: str
    seconds: stats.Estimate
    fid: stats.Estimate
    on_front: bool = False

    @property
    def setting(self) -> str:
        return f"{self.knob}={self.value}" if self.knob else self.value

    @property
    def name(self) -> str:
        return f"{self.family} {self.setting}"


@dataclass
class Summary:
    runs: list[Run]
    groups: dict[str, list[Run]] = field(init=False)
    spaces: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.groups = by_family(self.runs)
        self.spaces = spaces_of([r.metrics for r in self.runs])

    @property
    def headline(self) -> str:
        return self.spaces[0]

    @property
    def families(self) -> list[str]:
        return list(self.groups)

    def columns(self) -> list[Column]:
        return columns(self.headline)

    def values(self, family: str, key: str) -> list[float]:
        """The per-seed values of ``key`` of ``family`` (runs without it left out)."""
        found = (_number(r.metrics.get(key)) for r in self.groups.get(family, []))
        return [v for v in found if v is not None]

    def estimate(self, family: str, key: str) -> stats.Estimate | None:
        """Mean and 95 % interval over seeds, inside the range of ``key`` (`columns.bounds`)."""
        return stats.estimate(self.values(family, key), *bounds(key))

    def first(self, key: str) -> Any:
        """The first run's value of a key every run shares (the data, the number of samples, a floor)."""
        return next((r.metrics[key] for r in self.runs if r.metrics.get(key) is not None), None)

    # -- quality against speed -----------------------------------------------------------------------------
    def seconds_per_image(self, family: str) -> stats.Estimate | None:
        """Sampling seconds per image over seeds (the inverse of each run's images/s)."""
        return stats.estimate([1 / v for v in self.values(family, SAMPLING.key) if v > 0], lower=0.0)

    def cost_points(self) -> list[CostPoint]:
        """Headline FID against sampling seconds per image at every knob value of each family's trade-off curves
        (`Run.sweeps`, one per seed: the interval is over seeds), or, for a family without a curve that has both
        numbers, at the setting of its runs' own evaluation; each marked whether it is on the Pareto front of all."""
        points = []
        for family, group in self.groups.items():
            settings: dict[tuple[str, str], list[dict[str, Any]]] = {}
            for run in group:
                for sweep in run.sweeps():
                    for value, metrics in sweep.points():
                        settings.setdefault((sweep.knob, value), []).append(metrics)
            along = [
                p for (knob, value), records in settings.items() if (p := self._point(family, knob, value, records))
            ]
            default = self._point(family, "", "default", [r.metrics for r in group])
            points += along or ([default] if default else [])
        front = set(stats.pareto_front({p.name: (p.seconds.mean, p.fid.mean) for p in points}))
        return [replace(p, on_front=p.name in front) for p in points]

    def _point(self, family: str, knob: str, value: str, records: list[dict[str, Any]]) -> CostPoint | None:
        key = fid(self.headline).key
        speeds = [v for m in records if (v := _number(m.get(SAMPLING.key))) is not None and v > 0]
        t = stats.estimate([1 / v for v in speeds], lower=0.0)
        q = stats.estimate([v for m in records if (v := _number(m.get(key))) is not None], *bounds(key))
        return CostPoint(family, knob, value, t, q) if t is not None and q is not None else None

    # -- rankings across feature spaces --------------------------------------------------------------------
    def rankings(self) -> dict[str, list[str]]:
        """Families best first by mean FID, per feature space (spaces where at least one family has a FID)."""
        out = {}
        for space in self.spaces:
            means = {f: e.mean for f in self.families if (e := self.estimate(f, fid(space).key)) is not None}
            if means:
                out[space] = stats.ranking(means)
        return out

    def agreement(self) -> tuple[dict[tuple[str, str], float | None], bool | None]:
        """Kendall's tau for every pair of spaces, and whether all spaces give the same order (None: fewer than
        two spaces, or no two families in common)."""
        ranks = self.rankings()
        taus = {(a, b): stats.kendall_tau(ranks[a], ranks[b]) for a, b in combinations(ranks, 2)}
        measured = [t for t in taus.values() if t is not None]
        return taus, (all(t == 1 for t in measured) if measured else None)

    # -- pairwise verdicts -----------------------------------------------------------------------------------
    def verdicts(self) -> list[Verdict]:
        out = []
        for column in verdict_columns(self.headline):
            for a, b in combinations(self.families, 2):
                va, vb = self.values(a, column.key), self.values(b, column.key)
                if va and vb:
                    out.append(Verdict(column, a, b, stats.welch(va, vb)))
        return out

    # -- curves over the training clock (budget points) --------------------------------------------------------
    @property
    def budgets(self) -> list[float]:
        """The budget points (training seconds) the comparison's runs were evaluated at: every point some run has
        (a two-stage entry has none inside its stage 1; a family that lacks a point is absent there)."""
        return sorted(set().union(*(r.budgets for r in self.runs)))

    def at(self, seconds: float) -> Summary:
        """The comparison as it stood at the budget point ``seconds``: the runs that have it."""
        return Summary([r.at(seconds) for r in self.runs if seconds in r.budgets])

    def family_budgets(self, family: str) -> list[float]:
        """The budget points every run of ``family`` has."""
        sets = [set(r.budgets) for r in self.groups.get(family, [])]
        return sorted(set.intersection(*sets)) if sets else []

    def curve_columns(self) -> list[Column]:
        """The headline metrics some run has at some budget point."""
        keys = {k for r in self.runs for m in r.budgets.values() for k in m}
        return [c for c in verdict_columns(self.headline) if c.key in keys]

    def curve(self, family: str, key: str) -> dict[float, stats.Estimate | None]:
        """Mean and 95 % band over seeds of ``key`` at every budget point the family has."""
        return {b: self.at(b).estimate(family, key) for b in self.family_budgets(family)}

    def per_seed(self, family: str, key: str, points: list[float] | None = None) -> list[list[float]]:
        """One curve per seed over ``points`` (default: the family's), the seeds that have ``key`` at each."""
        points = self.family_budgets(family) if points is None else points
        rows = [[_number(r.budgets[b].get(key)) for b in points] for r in self.groups.get(family, [])]
        return [row for row in rows if all(v is not None for v in row)]

    def crossings(self) -> list[tuple[Column, str, str, stats.Crossing]]:
        """For every headline metric and pair of families: where their mean curves first cross, over the budget
        points both families have."""
        out = []
        for column in self.curve_columns():
            for a, b in combinations(self.families, 2):
                points = sorted(set(self.family_budgets(a)) & set(self.family_budgets(b)))
                ca, cb = self.per_seed(a, column.key, points), self.per_seed(b, column.key, points)
                if ca and cb and points:
                    out.append((column, a, b, stats.crossing(points, ca, cb)))
        return out

    def budget_verdicts(self) -> dict[float, list[Verdict]]:
        """The pairwise verdicts (Welch) at every budget point."""
        return {b: self.at(b).verdicts() for b in self.budgets}
