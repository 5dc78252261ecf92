"""The report's opening section: the common wisdom about each family (``claims`` in ``conf/compare.yaml``) put
against what the runs measured. Each claim is a list of checks; a check answers yes, no, undecided or not measured,
with the numbers and intervals that decide it: *yes* and *no* only where Welch's test finds the difference
significant (or the seeds do not vary at all), *undecided* where it does not — with the seeds per side that would
resolve a difference of the size seen at the spread seen. With budget points the checks are answered at every
point of the training clock (`over_budgets`). Nothing here knows a family by name: the families and what is said of
them come from the config."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

from gensuite.compare import stats
from gensuite.compare.columns import LIKELIHOOD, SAMPLING, Column, fid, space_column
from gensuite.compare.summary import Summary
from gensuite.record import DATA_KEY, LIKELIHOOD_KIND_KEY

YES, NO, UNDECIDED, NOT_MEASURED = "yes", "no", "undecided", "not measured"


@dataclass
class Finding:
    check: str
    answer: str  # yes | no | undecided | not measured
    evidence: str


def show(e: stats.Estimate | None, fmt: str = ".3g") -> str:
    """``9.85 [9.44, 10.3]`` (95 % interval over seeds), or ``9.85 (one seed)``."""
    if e is None:
        return "n/a"
    if e.interval is None:
        return f"{e.mean:{fmt}} (one seed)"
    return f"{e.mean:{fmt}} [{e.interval[0]:{fmt}}, {e.interval[1]:{fmt}}]"


def show_difference(d: stats.Difference, fmt: str = ".3g") -> str:
    if d.interval is None:
        return f"difference {d.diff:{fmt}}, one seed: no interval"
    lo, hi = d.interval
    return f"difference {d.diff:{fmt}} [{lo:{fmt}}, {hi:{fmt}}], {d.verdict}"


def resolve_note(a: list[float], b: list[float]) -> str:
    """How many seeds would make a difference of the size seen significant, at the spread seen."""
    if len(a) < 2 or len(b) < 2:
        return "one seed: run seeds=3 or more"
    n = stats.seeds_to_resolve(a, b)
    if n is None:
        return f"no number of seeds up to {stats.MAX_SEEDS} would resolve a difference this small"
    return f"about {n} seeds per family would resolve a difference this size at this spread (Welch, 5 %)"


def decide(holds: bool, d: stats.Difference, a: list[float], b: list[float]) -> tuple[str, str]:
    """The answer to a check that ``holds`` on the means, from the test of the difference behind it, and a note
    for the evidence: yes / no where the difference is significant or exact, else undecided."""
    if d.interval is not None and (d.significant or not d.spread):
        return (YES if holds else NO), ""
    return UNDECIDED, "; " + resolve_note(a, b)


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
    a, b = s.values(family, col.key), s.values(rival, col.key)
    diff = stats.welch(a, b)
    answer, note = decide(is_best == want_best, diff, a, b)
    label = "next best" if is_best else "best"
    evidence = (
        f"{col.header.rstrip(' ↓↑')} {show(own)} vs {label} {rival} {show(others[rival])}; {show_difference(diff)}"
    )
    return Finding(name, answer, evidence + note)


def _against_median(
    s: Summary, family: str, values: Callable[[str], list[float]], higher_is_better: bool, want_top: bool
) -> tuple[str, str]:
    """Whether ``family`` sits above the median of the other families (``want_top``) or below it, decided by
    Welch's test against each other family: above where it beats more than half of them (significantly, or
    exactly with no spread), not above where it cannot (as many ties and losses as half of them), else undecided.
    Returns the answer and a note for the evidence."""
    own = values(family)
    others = [f for f in s.families if f != family and values(f)]
    wins = losses = ties = 0
    open_pairs = []
    for other in others:
        d = stats.welch(own, values(other))
        decided = d.interval is not None and (d.significant or not d.spread)
        if not decided:
            open_pairs.append(other)
        elif d.diff == 0:
            ties += 1
        elif (d.diff > 0) == higher_is_better:
            wins += 1
        else:
            losses += 1
    ahead, behind = (wins, losses) if want_top else (losses, wins)
    half = len(others) / 2
    if ahead > half:
        return YES, ""
    if behind + ties >= half:
        return NO, ("; level with the median" if ties >= half else "")
    # the open pair with the smallest gap is the one that needs the most seeds
    gap = lambda f: abs(statistics.fmean(own) - statistics.fmean(values(f)))  # noqa: E731
    hardest = min(open_pairs, key=gap)
    return UNDECIDED, f"; undecided against {', '.join(open_pairs)}: " + resolve_note(own, values(hardest))


def _rank(s: Summary, family: str, column: Column, name: str, want_top: bool) -> Finding:
    """Whether ``family`` beats the median of the other families on ``column`` (``want_top``) or trails it."""
    own, others = s.estimate(family, column.key), _others(s, family, column)
    if own is None or not others:
        return Finding(name, NOT_MEASURED, f"{column.header}: {'no value' if own is None else 'no other family'}")
    median = statistics.median(e.mean for e in others.values())
    every = {**others, family: own}
    order = sorted(every, key=lambda f: -every[f].mean if column.higher_is_better else every[f].mean)
    best = order[0] if order[0] != family else order[1]
    evidence = (
        f"{column.header.rstrip(' ↓↑')} {show(own)}, rank {order.index(family) + 1} of {len(order)} "
        f"(median of the others {median:.3g}; best other {best} {show(every[best])})"
    )
    answer, note = _against_median(
        s, family, lambda f: s.values(f, column.key), bool(column.higher_is_better), want_top
    )
    return Finding(name, answer, evidence + note)


def _speed(s: Summary, family: str, want_fast: bool) -> Finding:
    """Sampling seconds per image against the median of the other families'."""
    name = "fast sampling" if want_fast else "slow sampling"
    own = s.seconds_per_image(family)
    others = {f: e for f in s.families if f != family and (e := s.seconds_per_image(f)) is not None}
    if own is None or not others:
        return Finding(name, NOT_MEASURED, f"{SAMPLING.header}: {'no value' if own is None else 'no other family'}")
    median = statistics.median(e.mean for e in others.values())
    ratio = median / own.mean
    relation = f"{ratio:.3g}× faster" if ratio >= 1 else f"{1 / ratio:.3g}× slower"
    fastest = min(others, key=lambda f: others[f].mean)
    slowest = max(others, key=lambda f: others[f].mean)
    evidence = (
        f"{show(own, '.3g')} s per image; {relation} than the median of the other families ({median:.3g} s; "
        f"fastest other {fastest} {show(others[fastest], '.3g')} s, slowest other {slowest} "
        f"{show(others[slowest], '.3g')} s)"
    )
    per_image = lambda f: [1 / v for v in s.values(f, SAMPLING.key) if v > 0]  # noqa: E731
    answer, note = _against_median(s, family, per_image, higher_is_better=False, want_top=want_fast)
    return Finding(name, answer, evidence + note)


def _likelihood(s: Summary, family: str) -> Finding:
    own = s.estimate(family, LIKELIHOOD.key)
    if family not in s.groups:
        return Finding("exact likelihood", NOT_MEASURED, "")
    if own is None:
        return Finding("exact likelihood", NO, "no bits/dim reported")
    kinds = {r.metrics.get(LIKELIHOOD_KIND_KEY) for r in s.groups[family]} - {None}
    others = _others(s, family, LIKELIHOOD)
    lowest = not others or own.mean < min(e.mean for e in others.values())
    kind = ", ".join(sorted(kinds)) or "kind not recorded"
    evidence = (
        f"{show(own)} bits/dim ({kind}); lowest of {len(others) + 1} families with one: {'yes' if lowest else 'no'}"
    )
    if others:
        evidence += " (" + "; ".join(f"{f} {show(e)}" for f, e in others.items()) + ")"
    answer = YES if kinds == {"exact"} else (NO if kinds else NOT_MEASURED)
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


def budget_label(seconds: float) -> str:
    """Training seconds as the report names a budget point: ``1 min``, ``0.25 min``."""
    return f"{seconds / 60:.3g} min"


def across(answers: list[tuple[float, str]]) -> str:
    """One check's answers at increasing budget points as a sentence: ``no at 1 min, yes from 4 min``."""
    runs: list[tuple[str, list[float]]] = []
    for budget, answer in answers:
        if runs and runs[-1][0] == answer:
            runs[-1][1].append(budget)
        else:
            runs.append((answer, [budget]))
    if len(runs) == 1:
        answer, budgets = runs[0]
        return f"{answer} at {budget_label(budgets[0])}" if len(budgets) == 1 else f"{answer} at every budget"
    parts = []
    for i, (answer, budgets) in enumerate(runs):
        if len(budgets) == 1:
            parts.append(f"{answer} at {budget_label(budgets[0])}")
        elif i == len(runs) - 1:
            parts.append(f"{answer} from {budget_label(budgets[0])}")
        else:
            parts.append(f"{answer} from {budget_label(budgets[0])} to {budget_label(budgets[-1])}")
    return ", ".join(parts)


@dataclass
class CheckOverBudgets:
    """One check of one claim at every budget point."""

    family: str
    says: str
    check: str
    findings: dict[float, Finding]  # budget seconds -> the finding there

    @property
    def sentence(self) -> str:
        return across([(b, f.answer) for b, f in self.findings.items()])

    @property
    def flips(self) -> bool:
        """Whether the answer is decided both ways at different budgets (yes at one, no at another)."""
        return {YES, NO} <= {f.answer for f in self.findings.values()}


def over_budgets(s: Summary, claims: dict) -> list[CheckOverBudgets]:
    """Every check of every claim at every budget point of the runs (none without budget points)."""
    at = {b: check_claims(s.at(b), claims) for b in s.budgets}
    if not at:
        return []
    out = []
    first = next(iter(at.values()))
    for i, claim in enumerate(first):
        for j, finding in enumerate(claim.findings):
            found = {b: claims_at[i].findings[j] for b, claims_at in at.items()}
            out.append(CheckOverBudgets(claim.family, claim.says, finding.check, found))
    return out
