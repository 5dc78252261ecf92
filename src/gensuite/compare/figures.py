"""The report's figures (matplotlib, Agg backend: no display needed). Each returns the PNG's path, or None when
the runs hold nothing to draw."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from gensuite.compare.columns import SAMPLING, bounds, family_color, fid
from gensuite.compare.runs import Run
from gensuite.compare.summary import Summary
from gensuite.record import TRAIN_SECONDS_KEY
from gensuite.safe_files import write_bytes_atomic


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _err(e) -> list[float]:
    """The distances from the mean to the ends of its interval (matplotlib's asymmetric error bars); 0 without."""
    if e.interval is None:
        return [0.0, 0.0]
    return [max(0.0, e.mean - e.interval[0]), max(0.0, e.interval[1] - e.mean)]


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    image = io.BytesIO()  # rendered in memory, then written beside the name and renamed (never through a link)
    fig.savefig(image, format="png", dpi=110)
    _pyplot().close(fig)
    return write_bytes_atomic(path, image.getvalue(), "out")


def plot_samples(runs: list[Run], out: Path) -> Path | None:
    """The first run's sample grid of each family, side by side."""
    from PIL import Image

    first: dict[str, Run] = {}
    for r in runs:
        if r.samples and r.family not in first:
            first[r.family] = r
    if not first:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(first), figsize=(3.2 * len(first), 3.6), squeeze=False)
    for ax, (family, r) in zip(axes[0], first.items(), strict=True):
        ax.imshow(Image.open(r.samples), cmap="gray")
        ax.set_title(family)
        ax.axis("off")
    return _save(fig, out / "samples.png")


def plot_fid_vs_time(s: Summary, out: Path) -> Path | None:
    """FID during training against training seconds (dots) and each run's final FID (stars)."""
    key = fid(s.headline).key
    curves = [r for r in s.runs if r.curve]
    finals = [r for r in s.runs if isinstance(r.metrics.get(key), (int, float))]
    if not curves and not finals:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    labelled: set[str] = set()
    for r in curves:
        t, f = zip(*r.curve, strict=True)
        ax.plot(t, f, marker="o", ms=3, color=family_color(r.family), label=None if r.family in labelled else r.family)
        labelled.add(r.family)
    for r in finals:
        x, y = r.metrics.get(TRAIN_SECONDS_KEY, 0), r.metrics[key]
        label = None if r.family in labelled else r.family
        ax.scatter([x], [y], marker="*", s=120, color=family_color(r.family), label=label)
        labelled.add(r.family)
    ax.set_xlabel("training time (s)")
    ax.set_ylabel(f"FID ({s.headline}), log scale")
    ax.set_yscale("log")
    ax.set_title("FID during training (dots) and final, full-sample FID (stars)")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, out / "fid_vs_time.png")


def plot_throughput(s: Summary, out: Path) -> Path | None:
    """Sampling images per second of each family, with its 95 % interval over seeds."""
    data = [(f, e) for f in s.families if (e := s.estimate(f, SAMPLING.key)) is not None]
    if not data:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    names = [f for f, _ in data]
    means = [e.mean for _, e in data]
    errs = [_err(e) for _, e in data]
    ax.bar(names, means, yerr=[[lo for lo, _ in errs], [hi for _, hi in errs]], color=[family_color(n) for n in names])
    ax.set_yscale("log")
    ax.set_ylabel("images / s (log scale)")
    ax.set_title("sampling throughput")
    for i, m in enumerate(means):
        ax.text(i, m, f"{m:.3g}", ha="center", va="bottom")
    return _save(fig, out / "throughput.png")


def _plain_log_ticks(axis, estimates) -> None:
    """Ticks of a log axis as plain numbers (FID 10, 20, 50; 0.001 s), at 1, 2 and 5 of each decade where the
    values span one, else matplotlib's own (a narrow range gets ticks inside it)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ends = [x for e in estimates for x in (e.interval or (e.mean, e.mean))]
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    if max(ends) / min(ends) >= 10:
        axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.set_minor_formatter(NullFormatter())
    else:
        axis.set_minor_formatter(plain)
    axis.set_major_formatter(plain)


def plot_quality_vs_cost(s: Summary, out: Path) -> Path | None:
    """Headline FID against sampling seconds per image (both log), one line per family along its knob (a lone
    point: a family without a trade-off curve), each point labelled by its knob value, 95 % intervals over seeds
    as error bars on both axes, and the Pareto front of all points (circled, joined by a dashed line)."""
    points = s.cost_points()
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.2, 4.8))
    lines: dict[tuple[str, str], list] = {}
    for p in points:
        lines.setdefault((p.family, p.knob), []).append(p)
    for (family, knob), line in lines.items():
        color = family_color(family)
        ax.errorbar(
            [p.seconds.mean for p in line],
            [p.fid.mean for p in line],
            xerr=np.transpose([_err(p.seconds) for p in line]),
            yerr=np.transpose([_err(p.fid) for p in line]),
            fmt="o-",
            ms=5,
            color=color,
            capsize=3,
            label=f"{family}: {knob}" if knob else f"{family} (its own setting)",
        )
        for p in line:
            label = p.value if knob else "default"
            ax.annotate(label, (p.seconds.mean, p.fid.mean), xytext=(4, 4), textcoords="offset points", fontsize=7,
                        color=color)  # fmt: skip
    front = sorted((p for p in points if p.on_front), key=lambda p: p.seconds.mean)
    # the front's staircase: below and left of it no point was measured
    ax.step([p.seconds.mean for p in front], [p.fid.mean for p in front], "k--", where="post", lw=1, alpha=0.6)
    ax.scatter([p.seconds.mean for p in front], [p.fid.mean for p in front], s=160, facecolors="none",
               edgecolors="k", lw=1.2, label="Pareto front", zorder=3)  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log_ticks(ax.xaxis, [p.seconds for p in points])
    _plain_log_ticks(ax.yaxis, [p.fid for p in points])
    ax.set_xlabel("sampling time per image (s, log scale)")
    ax.set_ylabel(f"FID ({s.headline}) ↓, log scale")
    ax.set_title("quality against sampling cost (circled: the Pareto front)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return _save(fig, out / "quality_vs_cost.png")


def plot_curves(s: Summary, out: Path) -> Path | None:
    """Each headline metric against the budget points of the training clock: the mean over seeds of every family
    with its 95 % band (shaded)."""
    columns = s.curve_columns()
    if not columns:
        return None
    plt = _pyplot()
    cols = min(3, len(columns))
    rows = -(-len(columns) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    budgets = [b / 60 for b in s.budgets]
    for ax, column in zip(axes.flat, columns, strict=False):
        drawn = []
        for family in s.families:
            curve = s.curve(family, column.key)
            if not curve or any(e is None for e in curve.values()):
                continue
            drawn += list(curve.values())
            minutes = [b / 60 for b in curve]  # a two-stage entry starts after its stage 1
            color = family_color(family)
            ax.plot(minutes, [e.mean for e in curve.values()], marker="o", ms=3, color=color, label=family)
            if all(e.interval for e in curve.values()):
                lo, hi = zip(*(e.interval for e in curve.values()), strict=True)
                ax.fill_between(minutes, lo, hi, color=color, alpha=0.15, lw=0)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(budgets))  # ticks at the budget points, as plain minutes
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("training clock (min, log scale)")
        # an unbounded positive number spanning a decade (FID from 400 to 2) is read on a log axis; shares stay linear
        ends = [x for e in drawn for x in (e.interval or (e.mean, e.mean))]
        log_y = bounds(column.key) == (0.0, None) and ends and min(ends) > 0 and max(ends) / min(ends) >= 10
        if log_y:
            ax.set_yscale("log")
            _plain_log_ticks(ax.yaxis, drawn)
        ax.set_title(column.header + (", log scale" if log_y else ""), fontsize=9)
        ax.grid(alpha=0.3, which="both")
    for ax in list(axes.flat)[len(columns) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    return _save(fig, out / "curves.png")
