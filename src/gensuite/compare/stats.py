"""The statistics of a comparison over seeds: a Student-t interval per family and metric, Welch's interval for the
difference of two families, Kendall's tau between two rankings, and the Pareto front of quality against speed.

Pure functions of numbers: no run folders, no figures. Every interval is 95 % and two-sided.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats as sps

LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """The mean of a metric over ``n`` seeds with the half-width of its Student-t interval (None with one seed)."""

    mean: float
    half: float | None
    n: int
    std: float | None

    @property
    def interval(self) -> tuple[float, float] | None:
        return None if self.half is None else (self.mean - self.half, self.mean + self.half)


def estimate(values: Sequence[float]) -> Estimate | None:
    """Mean and Student-t 95 % interval of per-seed values: ``mean ± t(0.975, n-1) * s / sqrt(n)``; None if empty."""
    values = [float(v) for v in values if math.isfinite(float(v))]
    if not values:
        return None
    n = len(values)
    if n == 1:
        return Estimate(values[0], None, 1, None)
    s = statistics.stdev(values)
    return Estimate(statistics.fmean(values), float(sps.t.ppf(0.5 + LEVEL / 2, n - 1)) * s / math.sqrt(n), n, s)


@dataclass(frozen=True)
class Difference:
    """``a - b`` with Welch's 95 % interval; ``interval`` None when either side has a single seed."""

    diff: float
    interval: tuple[float, float] | None
    p: float | None
    spread: bool = True  # False: every seed on both sides gave the same value, so the difference is exact

    @property
    def significant(self) -> bool | None:
        """Whether the interval excludes zero (None: no interval)."""
        if self.interval is None:
            return None
        lo, hi = self.interval
        return lo > 0 or hi < 0

    @property
    def verdict(self) -> str:
        if self.interval is None:
            return "one seed: no interval"
        if not self.spread:  # no test to run: the values are deterministic, not a sample
            return "no spread over seeds: exact difference" if self.diff else "no spread over seeds: equal"
        return "significant" if self.significant else "not significant"


def welch(a: Sequence[float], b: Sequence[float]) -> Difference:
    """Welch's unequal-variance comparison of the means of ``a`` and ``b`` (Welch 1947): the difference, its 95 %
    interval with the Welch-Satterthwaite degrees of freedom, and the two-sided p-value."""
    a, b = [float(x) for x in a], [float(x) for x in b]
    diff = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return Difference(diff, None, None)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:  # identical seeds on both sides: the difference is exact
        return Difference(diff, (diff, diff), None, spread=False)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(sps.t.ppf(0.5 + LEVEL / 2, df)) * se
    p = float(2 * sps.t.sf(abs(diff) / se, df))
    return Difference(diff, (diff - half, diff + half), p)


def ranking(scores: dict[str, float], higher_is_better: bool = False) -> list[str]:
    """Names ordered best first (ties by name, so the order is stable)."""
    return sorted(scores, key=lambda k: ((-scores[k] if higher_is_better else scores[k]), k))


def kendall_tau(first: Sequence[str], second: Sequence[str]) -> float | None:
    """Kendall's tau between two orders of the same names (only the names both hold count): 1 for the same order,
    -1 for the reverse; None with fewer than two common names."""
    common = [x for x in first if x in second]
    if len(common) < 2:
        return None
    pos = {x: i for i, x in enumerate(second)}
    concordant = discordant = 0
    for i in range(len(common)):
        for j in range(i + 1, len(common)):
            # common keeps the first order, so pair (i, j) is concordant where the second order agrees
            if pos[common[i]] < pos[common[j]]:
                concordant += 1
            else:
                discordant += 1
    return (concordant - discordant) / (concordant + discordant)


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """The names of the points no other point beats on both axes (both lower is better: seconds per image, FID),
    ordered by the first axis."""
    front = []
    for name, (x, y) in points.items():
        dominated = any(
            (ox <= x and oy <= y) and (ox < x or oy < y) for other, (ox, oy) in points.items() if other != name
        )
        if not dominated:
            front.append(name)
    return sorted(front, key=lambda k: points[k])
