"""Rendering: the report as a list of blocks (headings, paragraphs, tables, figures), written once as markdown
(``report.md``, figures beside it) and once as a static HTML page (``report.html``, figures embedded: it opens
offline), and the table as ``results.csv``."""

from __future__ import annotations

import base64
import csv
import html
import io
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from gensuite.compare import figures
from gensuite.compare.claims import budget_label, check_claims, over_budgets, resolve_note
from gensuite.compare.columns import Column, space_column
from gensuite.compare.runs import Run
from gensuite.compare.summary import Summary
from gensuite.record import DATA_KEY, N_SAMPLES_KEY, PARTS_KEY, space_key
from gensuite.safe_files import refuse_link, write_text_atomic


@dataclass
class Block:
    kind: str  # h2 | p | list | table | img
    text: str = ""
    items: list[str] | None = None
    header: list[str] | None = None
    rows: list[list[str]] | None = None
    path: Path | None = None


def cell(e, fmt: str) -> str:
    """``mean [lo, hi]``, the 95 % interval over seeds; ``mean (one seed)``; blank where no run has the number."""
    if e is None:
        return ""
    if fmt == "params":  # the same in every seed: no interval to show
        return f"{e.mean / 1e6:.2f} M"
    spec = ".0f" if fmt == "int" else fmt
    if e.interval is None:
        return f"{e.mean:{spec}} (one seed)"
    return f"{e.mean:{spec}} [{e.interval[0]:{spec}}, {e.interval[1]:{spec}}]"


INTERVALS = (
    "Intervals are 95 % over seeds and stay inside each number's range: for a number that cannot be negative "
    "(FID, times, bits/dim, speeds) a Student-t interval of its logarithm, mapped back; for a share in [0, 1] "
    "(precision, recall, coverage, copy rate) the same on the logit scale; KID, whose unbiased estimate can go "
    "below zero, a plain Student-t interval. The value shown is the plain mean of the seeds."
)


def reference_notes(s: Summary) -> list[str]:
    """What the headline numbers are measured against: the held-out split, its size, and the floors."""
    data = ", ".join(sorted({str(r.metrics.get(DATA_KEY, "?")) for r in s.runs}))
    notes = " ".join(str(r.metrics.get("eval/notes", "")) for r in s.runs)
    split = "val split (the data has no test split)" if "has no test split" in notes else "held-out test split"
    seeds = {str((r.config.get("data") or {}).get("split_seed")) for r in s.runs} - {"None"}
    fixed = f", fixed by data.split_seed={', '.join(sorted(seeds))}" if seeds else ""
    size, n = s.first("eval/n_reference"), s.first(N_SAMPLES_KEY)
    lines = [
        f"Reference: the {split} of data={data}"
        + (f", {size} images" if size else "")
        + f"{fixed} — the same images for every family and seed; no model trains on them and no checkpoint is "
        "chosen by them." + (f" Every model is scored on {n} samples (fixed seed) against it." if n else "")
    ]
    for space in s.spaces:
        floors = []
        for metric, variant, what in (("fid", "floor", "FID"), ("kid", "floor", "KID")):
            value = s.first(space_key(metric, space, variant))
            if isinstance(value, (int, float)):
                floors.append(f"{what} {value:{space_column(metric, space).fmt}}")
        train = s.first(space_key("fid", space, "train_floor"))
        if floors:
            lines.append(
                f"Floors in `{space}` features (as many real training images as samples, against the same "
                f"reference: what a perfect model scores): {', '.join(floors)}"
                + (f"; train-referenced FID floor {train:.2f}" if isinstance(train, (int, float)) else "")
                + "."
            )
    return lines


def default_claims() -> dict:
    from omegaconf import OmegaConf

    from gensuite import config_dir

    return OmegaConf.to_container(OmegaConf.load(config_dir() / "compare.yaml").claims)


def blocks(s: Summary, claims: dict, figs: dict[str, Path | None], command: str | None) -> list[Block]:
    cols = s.columns()
    out: list[Block] = []

    # -- the claims first: what the runs say about what everyone says ------------------------------------------
    rows = []
    for claim in check_claims(s, claims):
        for i, f in enumerate(claim.findings):
            rows.append([claim.family if i == 0 else "", claim.says if i == 0 else "", f.check, f.answer, f.evidence])
    out += [
        Block("h2", "What is measured against what"),
        Block("list", items=[*reference_notes(s), INTERVALS]),
    ]
    # with budget points the answer is a curve: it comes first, the final budget's tables after it
    out += curve_blocks(s, claims, figs.get("curves"))
    final = f"At the final budget ({budget_label(s.budgets[-1])} of training). " if s.budgets else ""
    out += [
        Block("h2", "Common wisdom, measured"),
        Block(
            "p",
            f"{final}Quality is FID in the `{s.headline}` feature space, speed the sampling time per image. A check "
            "answers yes or no only where Welch's 95 % interval of the difference behind it excludes zero (or the"
            " seeds do not vary at all); otherwise it is undecided, with the seeds per family that would make a "
            "difference of the size seen significant if the means and spreads stayed as seen (Student-t with "
            "Welch's degrees of freedom).",
        ),
        Block("table", header=["family", "says", "check", "measured", "evidence"], rows=rows),
    ]

    # -- the table ----------------------------------------------------------------------------------------------
    header = ["family", "runs"] + [c.header for c in cols]
    rows = [[f, str(len(g))] + [cell(s.estimate(f, c.key), c.fmt) for c in cols] for f, g in s.groups.items()]
    n = s.first(N_SAMPLES_KEY)
    floor = s.first(space_key("fid", s.headline, "floor"))
    data = sorted({str(r.metrics.get(DATA_KEY, "?")) for r in s.runs})
    parts = "; ".join(f"{f}: {p}" for f, g in s.groups.items() if (p := g[0].metrics.get(PARTS_KEY)))
    notes = [
        f"Data: {', '.join(data)}. Headline feature space: `{s.headline}`"
        + (f"; FID floor (real vs real, same N): {floor:.3f}" if floor is not None else "")
        + (f"; {n} samples per model, fixed seed." if n else "."),
        "Mean over seeds [95 % interval] (see above); a blank cell means the family has no such number (e.g. "
        "bits/dim for a GAN).",
        *([f"Parts: {parts}"] if parts else []),
    ]
    if command:
        notes.append(f"Reproduce: `{command}`")
    out += [Block("h2", "Results"), Block("table", header=header, rows=rows), Block("list", items=notes)]

    out += cost_blocks(s, figs.get("quality_vs_cost"))

    # -- agreement of the feature spaces -----------------------------------------------------------------------
    ranks = s.rankings()
    if ranks:
        depth = max(len(r) for r in ranks.values())
        table = [[str(i + 1)] + [(r[i] if i < len(r) else "") for r in ranks.values()] for i in range(depth)]
        taus, same = s.agreement()
        lines = [f"Kendall's tau, {a} vs {b}: " + ("n/a" if t is None else f"{t:+.2f}") for (a, b), t in taus.items()]
        verdict = {True: "yes", False: "no", None: "n/a (one feature space)" if len(ranks) < 2 else "n/a"}[same]
        out += [
            Block("h2", "Rankings per feature space"),
            Block("table", header=["rank"] + [f"FID ({space})" for space in ranks], rows=table),
            Block("list", items=[*lines, f"Same order in every feature space: {verdict}"]),
        ]

    # -- pairwise verdicts -------------------------------------------------------------------------------------
    verdicts = s.verdicts()
    if verdicts:
        rows = []
        for v in verdicts:
            d = v.difference
            interval = "n/a" if d.interval is None else f"[{d.interval[0]:.3g}, {d.interval[1]:.3g}]"
            better = f" ({v.better} better)" if v.better else ""
            if d.verdict == "not significant":
                better = "; " + resolve_note(s.values(v.a, v.column.key), s.values(v.b, v.column.key))
            rows.append([v.column.header, f"{v.a} − {v.b}", f"{d.diff:.3g}", interval, d.verdict + better])
        out += [
            Block("h2", "Verdicts: every pair of families"),
            Block(
                "p",
                "Each row is the difference of the means (first family minus second) with Welch's 95 % interval; "
                "significant where the interval excludes zero. One seed gives no interval: run seeds=3 or more.",
            ),
            Block("table", header=["metric", "families", "difference", "95 % interval", "verdict"], rows=rows),
        ]

    labels = {
        "samples": "Samples (one grid per family)",
        "fid_vs_time": "FID against training time",
        "throughput": "Sampling throughput",
    }
    for key, label in labels.items():
        if figs.get(key):
            out += [Block("h2", label), Block("img", label, path=figs[key])]

    # -- trade-off curves --------------------------------------------------------------------------------------
    sweeps = [(f, sw) for f, g in s.groups.items() for sw in g[0].sweeps()]
    if sweeps:
        out.append(Block("h2", "Trade-off curves"))
        for family, sw in sweeps:
            names = [k for k in sw.rows[0]] if sw.rows else []
            out += [
                Block("p", f"{family}: {sw.knob}, its first seed (from {sw.folder})"),
                Block("table", header=names, rows=[[r.get(k, "") for k in names] for r in sw.rows]),
            ]
            if sw.plot:
                out.append(Block("img", f"{family}: {sw.knob}", path=sw.plot))
    return out


def cost_blocks(s: Summary, figure: Path | None) -> list[Block]:
    """Headline FID against sampling seconds per image, each family along its knob: the figure, the Pareto front
    named, and one row per point."""
    points = s.cost_points()
    if not points:
        return []
    front = [p for p in sorted(points, key=lambda p: p.seconds.mean) if p.on_front]
    curves = sorted({p.family for p in points if p.knob})
    rows = [
        [p.family, p.setting, cell(p.seconds, ".3g"), cell(p.fid, ".2f"), "yes" if p.on_front else "no"] for p in points
    ]
    return [
        Block("h2", "Quality against sampling cost"),
        Block(
            "p",
            f"Headline FID (`{s.headline}`) against sampling seconds per image at the final budget, "
            + (
                f"each of {', '.join(curves)} along its knob (`curve_args`: `eval.py sweep=` on every seed's "
                "last checkpoint), the other families at their runs' own setting (default). "
                if curves
                else "every family at its runs' own setting (default; `curves=true` adds each family's knob). "
            )
            + "Mean over seeds [95 % interval]. Pareto front (no other point both faster and better): "
            + ", ".join(p.name for p in front)
            + ".",
        ),
        *([Block("img", "Quality against sampling cost", path=figure)] if figure else []),
        Block(
            "table", header=["family", "knob value", "s / sample", f"FID ({s.headline}) ↓", "Pareto front"], rows=rows
        ),  # fmt: skip
    ]


def budget_leaders(s: Summary) -> list[str]:
    """Per budget point: the family with the best mean headline metric (the first curve column), the runner-up,
    and Welch's verdict between the two: ``1 min: vae 29.5 [28.4, 30.7]; next gan 33.7 [...]: not significant``."""
    columns = s.curve_columns()
    if not columns or columns[0].higher_is_better is None:
        return []
    column, out = columns[0], []
    for b in s.budgets:
        at = s.at(b)
        means = {f: e for f in at.families if (e := at.estimate(f, column.key)) is not None}
        if len(means) < 2:
            continue
        first, second = sorted(means, key=lambda f: means[f].mean, reverse=column.higher_is_better)[:2]
        verdict = next((v for v in at.verdicts() if v.column.key == column.key and {v.a, v.b} == {first, second}), None)
        said = "one seed: no test" if verdict is None or verdict.difference.interval is None else (
            "significant" if verdict.better == first else "not significant")  # fmt: skip
        out.append(f"{budget_label(b)}: {first} {cell(means[first], column.fmt)}; next {second} "
                   f"{cell(means[second], column.fmt)} ({column.header}): {said}")  # fmt: skip
    return out


def curve_blocks(s: Summary, claims: dict, figure: Path | None) -> list[Block]:
    """The comparison at every budget point: the claims, each metric's curve with its band, where two families'
    curves cross, and Welch's verdict at each point."""
    budgets = s.budgets
    if not budgets:
        return []
    heads = [budget_label(b) for b in budgets]
    out = [
        Block("h2", "Curves over the training clock"),
        Block(
            "p",
            "Every run was evaluated at each budget point of its training clock (" + ", ".join(heads) + "; "
            "training seconds only, the evaluation itself off the clock) with the same samples, reference and "
            "feature spaces as its final evaluation, from the checkpoint saved there "
            "(`checkpoints/budget_<seconds>s.ckpt`: `eval.py ckpt_path=<it>` reproduces the row). One run per "
            "family and seed serves every point, trained to the largest budget: a learning-rate schedule that "
            "follows the budget decays over the largest one, so a smaller point shows a run in the middle of its "
            "schedule, not one tuned to end there.",
        ),
    ]
    late = [f for f in s.families if len(s.family_budgets(f)) < len(budgets)]
    if late:
        out.append(Block("p", f"{', '.join(late)}: no sample at the first point(s) (—): a two-stage entry counts its "
                              "stage 1 in the budget and samples only after it; at those points the others are "
                              "compared without it."))  # fmt: skip
    if figure is not None:
        out.append(Block("img", "Curves over the training clock", path=figure))
    leaders = budget_leaders(s)
    if leaders:
        out += [Block("p", "The best family at each budget, and whether Welch's test separates it from the next:"),
                Block("list", items=leaders)]  # fmt: skip
    rows = []
    for c in over_budgets(s, claims):
        rows.append([c.family, c.says, c.check, c.sentence + (" (flips between budgets)" if c.flips else "")])
    if rows:
        out += [Block("p", "The common wisdom at every budget:"),
                Block("table", header=["family", "says", "check", "over the budgets"], rows=rows)]  # fmt: skip
    for column in s.curve_columns():
        curves = {f: s.curve(f, column.key) for f in s.families}
        table = [[f] + [cell(curves[f][b], column.fmt) if b in curves[f] else "—" for b in budgets] for f in s.families]
        out += [Block("p", f"{column.header}: mean over seeds [95 % band]"),
                Block("table", header=["family", *heads], rows=table)]  # fmt: skip
    rows = []
    for column, a, b, x in s.crossings():
        if x.at is None:
            where = "no crossing within the budgets"
        else:
            where = f"{x.at:.0f} s" + (f" [{x.interval[0]:.0f}, {x.interval[1]:.0f}]" if x.interval else "")
        rows.append([column.header, f"{a} − {b}", where, f"{x.share:.0%}"])
    if rows:
        out += [
            Block(
                "p",
                "Where two families' mean curves first cross (training seconds, linear between budget points), "
                "with the 95 % percentile interval over 2,000 bootstrap resamples of each family's seeds (none "
                "with one seed a side, or when fewer than half the resamples cross); the last column is the share "
                "of resamples that cross within the budgets.",
            ),
            Block("table", header=["metric", "families", "first crossing", "resamples crossing"], rows=rows),
        ]
    per_budget = s.budget_verdicts()
    cells: dict[tuple[str, str], dict[float, str]] = {}
    for budget, verdicts in per_budget.items():
        for v in verdicts:
            d = v.difference
            text = f"{d.diff:.3g}: " + (f"{v.better} better" if v.better else d.verdict)
            cells.setdefault((v.column.header, f"{v.a} − {v.b}"), {})[budget] = text
    if cells:
        rows = [[m, pair] + [by.get(b, "") for b in budgets] for (m, pair), by in cells.items()]
        out += [Block("p", "Welch's verdict at every budget point (difference of the means, first minus second):"),
                Block("table", header=["metric", "families", *heads], rows=rows)]  # fmt: skip
    return out


def to_markdown(title: str, subtitle: str, body: list[Block], out: Path) -> str:
    md = [f"# {title}", "", f"_{subtitle}_", ""]
    for b in body:
        if b.kind == "h2":
            md += [f"## {b.text}", ""]
        elif b.kind == "p":
            md += [b.text, ""]
        elif b.kind == "list":
            md += [f"- {x}" for x in b.items or []] + [""]
        elif b.kind == "table":
            md += ["| " + " | ".join(b.header or []) + " |", "|" + "---|" * len(b.header or [])]
            md += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in b.rows or []] + [""]
        elif b.kind == "img" and b.path is not None:
            md += [f"![{b.text}]({_relative(b.path, out)})", ""]
    return "\n".join(md)


def _relative(path: Path, out: Path) -> str:
    try:
        return str(path.resolve().relative_to(out.resolve()))
    except ValueError:
        return str(path.resolve())


def _td(text: str) -> str:
    """A table cell; numbers (and ``mean ± half``) right-aligned, words left."""
    numeric = bool(re.match(r"^[-+−]?\d", text)) and not re.search(r"[a-z]{3,}", text.replace("n/a", ""))
    return f"<td class='num'>{html.escape(text)}</td>" if numeric else f"<td>{html.escape(text)}</td>"


def to_html(title: str, subtitle: str, body: list[Block]) -> str:
    esc = html.escape
    parts = [f"<h1>{esc(title)}</h1><p><em>{esc(subtitle)}</em></p>"]
    for b in body:
        if b.kind == "h2":
            parts.append(f"<h2>{esc(b.text)}</h2>")
        elif b.kind == "p":
            parts.append(f"<p>{esc(b.text)}</p>")
        elif b.kind == "list":
            parts.append("<ul>" + "".join(f"<li>{esc(x)}</li>" for x in b.items or []) + "</ul>")
        elif b.kind == "table":
            th = "".join(f"<th>{esc(h)}</th>" for h in b.header or [])
            trs = "".join("<tr>" + "".join(_td(c) for c in r) + "</tr>" for r in b.rows or [])
            parts.append(f"<div class='wide'><table><tr>{th}</tr>{trs}</table></div>")
        elif b.kind == "img" and b.path is not None:
            data = base64.b64encode(b.path.read_bytes()).decode()
            parts.append(f"<img alt='{esc(b.text)}' src='data:image/png;base64,{data}'>")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}}
.wide{{overflow-x:auto}}table{{border-collapse:collapse;margin:1em 0;font-size:0.9em}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}}td.num{{text-align:right;
white-space:nowrap}}img{{max-width:100%}}</style></head>
<body>{"".join(parts)}</body></html>
"""


def write_csv(s: Summary, cols: list[Column], path: Path) -> Path:
    """One row per family: the mean, the standard deviation and the ends of the 95 % interval of every column."""

    def num(x: float | None) -> str:
        return "" if x is None else f"{x:.6g}"

    table = io.StringIO(newline="")
    writer = csv.writer(table)
    heads = [c.header for c in cols]
    ends = [f"{h} ci95 {end}" for h in heads for end in ("lo", "hi")]
    writer.writerow(["family", "runs", "parts", *heads, *(f"{h} std" for h in heads), *ends])
    for family, group in s.groups.items():
        ests = [s.estimate(family, c.key) for c in cols]
        writer.writerow(
            [family, len(group), group[0].metrics.get(PARTS_KEY, "")]
            + [num(e and e.mean) for e in ests]
            + [num(e and e.std) for e in ests]
            + [num(e.interval[i] if e and e.interval else None) for e in ests for i in (0, 1)]
        )
    return write_text_atomic(path, table.getvalue(), "out")


def build_report(
    runs: list[Run],
    out: Path,
    title: str = "gensuite: the families side by side",
    command: str | None = None,
    claims: dict | None = None,
) -> dict[str, Path]:
    """Write results.csv, the figures, report.md and report.html into ``out``; returns their paths.

    ``claims``: family -> {says, checks} (default: ``conf/compare.yaml``'s)."""
    refuse_link(out, "out", what="the report")  # and each file as it is written (gensuite.safe_files)
    out.mkdir(parents=True, exist_ok=True)
    s = Summary(runs)
    csv_path = write_csv(s, s.columns(), out / "results.csv")
    figs = {
        "samples": figures.plot_samples(runs, out),
        "fid_vs_time": figures.plot_fid_vs_time(s, out),
        "throughput": figures.plot_throughput(s, out),
        "quality_vs_cost": figures.plot_quality_vs_cost(s, out),
        "curves": figures.plot_curves(s, out),
    }
    body = blocks(s, default_claims() if claims is None else claims, figs, command)
    subtitle = f"{datetime.now():%Y-%m-%d %H:%M}, {len(runs)} runs of {len(s.groups)} families"
    md_path, html_path = out / "report.md", out / "report.html"
    write_text_atomic(md_path, to_markdown(title, subtitle, body, out), "out")
    write_text_atomic(html_path, to_html(title, subtitle, body), "out")
    return {
        "report.md": md_path,
        "report.html": html_path,
        "results.csv": csv_path,
        **{k: v for k, v in figs.items() if v is not None},
    }
