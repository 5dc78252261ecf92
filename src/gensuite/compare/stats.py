"""The statistics of a comparison over seeds: an interval per family and metric that respects the metric's range,
Welch's interval for the difference of two families (and the seeds that would resolve it), where two curves over
the training clock cross, Kendall's tau between two rankings, and the Pareto front of quality against speed.

Pure functions of numbers: no run folders, no figures. Every interval is 95 % and two-sided.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

LEVEL = 0.95
MAX_SEEDS = 10_000  # `seeds_to_resolve` gives up beyond this


@dataclass(frozen=True)
class Estimate:
    """The mean of a metric over ``n`` seeds and its 95 % interval (None with one seed). ``scale`` says how the
    interval was made: ``t`` (Student-t), ``log-t`` (Student-t of log(value - lower), back-transformed: a metric
    bounded below, FID), ``logit-t`` (of the logit, a metric bounded on both sides: precision), or ``t, clipped``
    (a value on a bound: the t-interval cut to the range)."""

    mean: float
    interval: tuple[float, float] | None
    n: int
    std: float | None
    scale: str = "t"


def estimate(values: Sequence[float], lower: float | None = None, upper: float | None = None) -> Estimate | None:
    """Mean and 95 % interval of per-seed values in the range ``[lower, upper]`` (None: unbounded); None if empty.

    Unbounded: ``mean ± t(0.975, n-1) * s / sqrt(n)``. Bounded, the same interval is made on the scale where the
    range is the whole line (log of the distance to ``lower``; logit with both bounds) and mapped back, so its ends
    stay inside the range: two seeds' FIDs of 21.5 and 60.5 give [0.05, 25800] (two seeds say little), not the
    raw scale's 41 ± 248, which reaches -207. The mean is the plain mean of the values either way."""
    values = [float(v) for v in values if math.isfinite(float(v))]
    if not values:
        return None
    n = len(values)
    if n == 1:
        return Estimate(values[0], None, 1, None)
    mean, s = statistics.fmean(values), statistics.stdev(values)
    t = float(sps.t.ppf(0.5 + LEVEL / 2, n - 1))

    def around(xs: list[float]) -> tuple[float, float]:
        m, half = statistics.fmean(xs), t * statistics.stdev(xs) / math.sqrt(n)
        return m - half, m + half

    inside = all((lower is None or v > lower) and (upper is None or v < upper) for v in values)
    if inside and lower is not None and upper is None:
        lo, hi = around([math.log(v - lower) for v in values])
        return Estimate(mean, (lower + math.exp(lo), lower + math.exp(hi)), n, s, "log-t")
    if inside and lower is not None and upper is not None:
        width = upper - lower
        lo, hi = around([math.log((v - lower) / (upper - v)) for v in values])
        back = lambda x: lower + width / (1 + math.exp(-x))  # noqa: E731
        return Estimate(mean, (back(lo), back(hi)), n, s, "logit-t")
    lo, hi = around(values)
    if lower is None and upper is None:
        return Estimate(mean, (lo, hi), n, s)
    lo, hi = max(lo, lower) if lower is not None else lo, min(hi, upper) if upper is not None else hi
    return Estimate(mean, (lo, hi), n, s, "t, clipped")


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


def seeds_to_resolve(a: Sequence[float], b: Sequence[float]) -> int | None:
    """Seeds per side at which the observed difference of ``a`` and ``b`` would be significant (Welch, 5 %) if the
    means and the per-seed spreads stayed as observed: the smallest ``n`` with ``t(0.975, df) * sqrt((s_a² + s_b²) /
    n) < |mean_a - mean_b|``, df by Welch-Satterthwaite for ``n`` per side. None: no difference or no spread to
    scale, or more than ``MAX_SEEDS``. A planning figure, not a power calculation: at 50 % power, half of such
    repeats would still come out not significant."""
    if len(a) < 2 or len(b) < 2:
        return None
    diff = abs(statistics.fmean(a) - statistics.fmean(b))
    va, vb = statistics.variance(a), statistics.variance(b)
    if diff == 0 or va + vb == 0:
        return None
    for n in range(2, MAX_SEEDS + 1):
        df = (n - 1) * (va + vb) ** 2 / (va**2 + vb**2)
        if float(sps.t.ppf(0.5 + LEVEL / 2, df)) * math.sqrt((va + vb) / n) < diff:
            return n
    return None


@dataclass(frozen=True)
class Crossing:
    """Where curve ``a`` minus curve ``b`` (means over seeds, against training seconds) first changes sign.

    ``at``: the training seconds of the first crossing of the mean curves, linear between budget points (None: no
    crossing within the budgets); ``interval``: the 95 % percentile interval of the first crossing over bootstrap
    resamples of the seeds of each side that cross (None with one seed a side, or when fewer than half cross);
    ``share``: the share of resamples whose mean curves cross within the budgets."""

    at: float | None
    interval: tuple[float, float] | None
    share: float


def first_crossing(times: Sequence[float], diff: Sequence[float]) -> float | None:
    """The first time where ``diff`` (one value per time, times increasing) changes sign: linear between the two
    points around it, or the time of a zero that lies between a positive and a negative value; None if it never
    does."""
    last: tuple[float, float] | None = None  # (time, value) of the last nonzero point
    zero_at: float | None = None  # the first zero since then
    for t, d in zip(times, diff, strict=True):
        if d == 0:
            zero_at = t if zero_at is None else zero_at
            continue
        if last is not None and (last[1] > 0) != (d > 0):
            if zero_at is not None:
                return zero_at
            t0, d0 = last
            return t0 + (t - t0) * d0 / (d0 - d)
        last, zero_at = (t, d), None
    return None


def crossing(
    times: Sequence[float], a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], resamples: int = 2000
) -> Crossing:
    """The first crossing of the mean curves of ``a`` and ``b`` (each: one curve per seed, one value per time) with
    its bootstrap interval over seeds (each side resampled with replacement, a fixed generator: the same numbers
    every time)."""
    A, B = np.asarray(a, dtype=float), np.asarray(b, dtype=float)  # (seeds, times)
    at = first_crossing(times, [float(x) for x in A.mean(0) - B.mean(0)])
    if len(A) < 2 or len(B) < 2:
        return Crossing(at, None, float(at is not None))
    rng = np.random.default_rng(0)
    mean_a = A[rng.integers(len(A), size=(resamples, len(A)))].mean(1)  # (resamples, times)
    mean_b = B[rng.integers(len(B), size=(resamples, len(B)))].mean(1)
    found = [c for row in mean_a - mean_b if (c := first_crossing(times, [float(x) for x in row])) is not None]
    share = len(found) / resamples
    if share < 0.5:
        return Crossing(at, None, share)
    lo, hi = np.quantile(found, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return Crossing(at, (float(lo), float(hi)), share)


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
