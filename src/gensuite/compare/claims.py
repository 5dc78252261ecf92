"""The report's opening section: the common wisdom about each family (``claims`` in ``conf/compare.yaml``) put
against what the runs measured. Each claim is a list of checks; a check answers yes, no or not measured, with the
numbers and intervals that decide it. Nothing here knows a family by name: the families and what is said of them
come from the config."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

from gensuite.compare import stats
from gensuite.compare.columns import LIKELIHOOD, SAMPLING, Column, fid, space_column
from gensuite.compare.summary import Summary
from gensuite.record import DATA_KEY, LIKELIHOOD_KIND_KEY

NOT_MEASURED = "not measured"


@dataclass
class Finding:
    check: str
    answer: str  # yes | no | not measured
    evidence: str


def show(e: stats.Estimate | None, fmt: str = ".3g") -> str:
    """``9.85 ± 0.41`` (95 % interval over seeds), or ``9.85 (one seed)``."""
    if e is None:
        return "n/a"
    if e.half is None:
        return f"{e.mean:{fmt}} (one seed)"
    return f"{e.mean:{fmt}} ± {e.half:{fmt}}"


def show_difference(d: stats.Difference, fmt: str = ".3g") -> str:
    if d.interval is None:
        return f"difference {d.diff:{fmt}}, one seed: no interval"
    lo, hi = d.interval
    return f"difference {d.diff:{fmt}} [{lo:{fmt}}, {hi:{fmt}}], {d.verdict}"


def _others(s: Summary, family: str, column: Column) -> dict[str, stats.Estimate]:
    return {f: e for f in s.families if f != family and (e := s.estimate(f, column.key)) is not None}


def _better(column: Column, a: float, b: float) -> bool:
    return a > b if column.higher_is_better else a < b


def _best_of(column: Column, ests: dict[str, stats.Estimate]) -> str:
    return sorted(ests, key=lambda f: -ests[f].mean if column.higher_is_better else ests[f].mean)[0]


def _quality(s: Summary, family: str, want_best: bool) -> Finding:
    """Best (or not best) headline FID, against the next best (or the best) other family."""
    name = "best quality" if want_best else "less detail"
    col = fid(s.headline)
    own, others = s.estimate(family, col.key), _others(s, family, col)
    if own is None or not others:
        return Finding(name, NOT_MEASURED, f"{col.header}: {'no value' if own is None else 'no other family'}")
    rival = _best_of(col, others)
    is_best = _better(col, own.mean, others[rival].mean)
    diff = stats.welch(s.values(family, col.key), s.values(rival, col.key))
    label = "next best" if is_best else "best"
    evidence = (
        f"{col.header.rstrip(' ↓↑')} {show(own)} vs {label} {rival} {show(others[rival])}; {show_difference(diff)}"
    )
    return Finding(name, "yes" if is_best == want_best else "no", evidence)


def _rank(s: Summary, family: str, column: Column, name: str, want_top: bool) -> Finding:
    """Whether ``family`` beats the median of the other families on ``column`` (``want_top``) or trails it."""
    own, others = s.estimate(family, column.key), _others(s, family, column)
    if own is None or not others:
        return Finding(name, NOT_MEASURED, f"{column.header}: {'no value' if own is None else 'no other family'}")
    median = statistics.median(e.mean for e in others.values())
    above = _better(column, own.mean, median)
    every = {**others, family: own}
    order = sorted(every, key=lambda f: -every[f].mean if column.higher_is_better else every[f].mean)
    best = order[0] if order[0] != family else order[1]
    evidence = (
        f"{column.header.rstrip(' ↓↑')} {show(own)}, rank {order.index(family) + 1} of {len(order)} "
        f"(median of the others {median:.3g}; best other {best} {show(every[best])})"
    )
    if own.mean == median:  # level with the others: neither sharper nor weaker
        return Finding(name, "no", evidence + "; level with the median")
    return Finding(name, "yes" if above == want_top else "no", evidence)


def _speed(s: Summary, family: str, want_fast: bool) -> Finding:
    """Sampling seconds per image against the median of the other families' (faster: at or below it)."""
    name = "fast sampling" if want_fast else "slow sampling"
    own = s.seconds_per_image(family)
    others = {f: e for f in s.families if f != family and (e := s.seconds_per_image(f)) is not None}
    if own is None or not others:
        return Finding(name, NOT_MEASURED, f"{SAMPLING.header}: {'no value' if own is None else 'no other family'}")
    median = statistics.median(e.mean for e in others.values())
    fast = own.mean <= median
    ratio = median / own.mean
    relation = f"{ratio:.3g}× faster" if ratio >= 1 else f"{1 / ratio:.3g}× slower"
    fastest = min(others, key=lambda f: others[f].mean)
    slowest = max(others, key=lambda f: others[f].mean)
    evidence = (
        f"{show(own, '.3g')} s per image; {relation} than the median of the other families ({median:.3g} s; "
        f"fastest other {fastest} {show(others[fastest], '.3g')} s, slowest other {slowest} "
        f"{show(others[slowest], '.3g')} s)"
    )
    return Finding(name, "yes" if fast == want_fast else "no", evidence)


def _likelihood(s: Summary, family: str) -> Finding:
    own = s.estimate(family, LIKELIHOOD.key)
    if family not in s.groups:
        return Finding("exact likelihood", NOT_MEASURED, "")
    if own is None:
        return Finding("exact likelihood", "no", "no bits/dim reported")
    kinds = {r.metrics.get(LIKELIHOOD_KIND_KEY) for r in s.groups[family]} - {None}
    others = _others(s, family, LIKELIHOOD)
    lowest = not others or own.mean < min(e.mean for e in others.values())
    kind = ", ".join(sorted(kinds)) or "kind not recorded"
    evidence = (
        f"{show(own)} bits/dim ({kind}); lowest of {len(others) + 1} families with one: {'yes' if lowest else 'no'}"
    )
    if others:
        evidence += " (" + "; ".join(f"{f} {show(e)}" for f, e in others.items()) + ")"
    answer = "yes" if kinds == {"exact"} else ("no" if kinds else NOT_MEASURED)
    return Finding("exact likelihood", answer, evidence)


def _sequences(s: Summary, family: str) -> Finding:
    data = ", ".join(sorted({str(r.metrics.get(DATA_KEY, "?")) for r in s.runs}))
    return Finding(
        "sequences", NOT_MEASURED, f"every run here modelled data={data}; other modalities need runs of their own"
    )


CHECKS: dict[str, Callable[[Summary, str], Finding]] = {
    "best_quality": lambda s, f: _quality(s, f, want_best=True),
    "less_detail": lambda s, f: _quality(s, f, want_best=False),
    "fast_sampling": lambda s, f: _speed(s, f, want_fast=True),
    "slow_sampling": lambda s, f: _speed(s, f, want_fast=False),
    "sharp": lambda s, f: _rank(s, f, space_column("precision", s.headline), "sharp", want_top=True),
    "weak_diversity": lambda s, f: _rank(s, f, space_column("recall", s.headline), "weak diversity", want_top=False),
    "likelihood": _likelihood,
    "sequences": _sequences,
}

NAMES = {
    "best_quality": "best quality",
    "less_detail": "less detail",
    "fast_sampling": "fast sampling",
    "slow_sampling": "slow sampling",
    "sharp": "sharp",
    "weak_diversity": "weak diversity",
    "likelihood": "exact likelihood",
    "sequences": "sequences",
}


@dataclass
class Claim:
    family: str
    says: str
    findings: list[Finding]

    @property
    def measured(self) -> bool:
        return any(f.answer != NOT_MEASURED for f in self.findings)


def check_claims(s: Summary, claims: dict) -> list[Claim]:
    """Every claim of ``claims`` (family -> {says, checks}) against the runs; an absent family: not measured."""
    out = []
    for family, claim in claims.items():
        unknown = [c for c in claim["checks"] if c not in CHECKS]
        if unknown:
            from gensuite.errors import ConfigError

            raise ConfigError(
                f"claims.{family}.checks: unknown {unknown}", keys=("claims",), fix=f"one of {', '.join(CHECKS)}"
            )
        if family not in s.groups:
            findings = [Finding(NAMES[c], NOT_MEASURED, f"no {family} run") for c in claim["checks"]]
        else:
            findings = [CHECKS[c](s, family) for c in claim["checks"]]
        out.append(Claim(family, str(claim["says"]), findings))
    return out
