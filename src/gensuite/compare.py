"""The families side by side: ``python compare.py`` trains one run per family (and seed) on the same data under
one equal budget — or, given ``runs=<folder>``, reads finished runs — and writes ``report.md``, ``report.html``
(static, images embedded: opens offline), ``results.csv`` and the figures it shows.

The runs are a Hydra multirun of ``train.py`` (``-m model=vae,gan,... seed=1,2``), so every number in the report is
what ``metrics.json`` of a run says, and any run can be opened on its own in TensorBoard.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import os
import statistics
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from gensuite.errors import ConfigError, DataError


@dataclass
class Run:
    """One finished run folder: its metrics, config and pictures."""

    path: Path
    metrics: dict[str, Any]
    config: dict[str, Any]
    curve: list[tuple[float, float]] = field(default_factory=list)  # (training seconds, FID) during training

    @property
    def family(self) -> str:
        return str(self.metrics.get("run/family") or self.config.get("model", {}).get("_target_", "?"))

    @property
    def samples(self) -> Path | None:
        p = self.path / "samples.png"
        return p if p.is_file() else None


def read_runs(folder: Path) -> list[Run]:
    """Every run under ``folder`` (any depth) that finished: it has a ``metrics.json``."""
    runs = []
    for metrics_file in sorted(folder.rglob("metrics.json")):
        path = metrics_file.parent
        cfg_file = path / ".hydra" / "config.yaml"
        config = OmegaConf.to_container(OmegaConf.load(cfg_file), resolve=False) if cfg_file.is_file() else {}
        runs.append(Run(path, json.loads(metrics_file.read_text()), config, _fid_curve(path)))
    if not runs:
        raise DataError(
            f"runs={folder}: no finished run (no metrics.json) under it",
            fix="point runs= at a multirun folder (logs/multiruns/<time>) or leave it out to train",
        )
    return runs


def _fid_curve(path: Path) -> list[tuple[float, float]]:
    """FID during training against training seconds, from the run's TensorBoard events."""
    events = path / "tensorboard"
    if not events.is_dir():
        return []
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags().get("scalars", []))
    fid_tag = next((t for t in sorted(tags) if t.startswith("val/fid_") and t.count("_") == 1), None)
    if fid_tag is None or "time/train_elapsed_s" not in tags:
        return []
    elapsed = {e.step: e.value for e in acc.Scalars("time/train_elapsed_s")}
    return [(elapsed[e.step], e.value) for e in acc.Scalars(fid_tag) if e.step in elapsed]


# -- the table ---------------------------------------------------------------------------------------------------
def _extractor(runs: list[Run]) -> str:
    names = {r.metrics.get("eval/features") for r in runs if r.metrics.get("eval/features")}
    return sorted(names)[0] if names else "classifier"


def columns(ext: str) -> list[tuple[str, str, str]]:
    """(header, metrics key, format). The extractor is named in every header it concerns."""
    return [
        ("parameters", "model/parameters", "int"),
        ("train s", "time/train_s", ".0f"),
        ("steps", "train/global_step", "int"),
        ("steps/s", "time/train_steps_per_s", ".2f"),
        (f"FID ({ext}) ↓", f"val/fid_{ext}", ".2f"),
        (f"KID ({ext}) ↓", f"val/kid_{ext}", ".4f"),
        (f"precision ({ext}) ↑", f"val/precision_{ext}", ".3f"),
        (f"recall ({ext}) ↑", f"val/recall_{ext}", ".3f"),
        (f"FID vs train ({ext})", f"val/fid_{ext}_train", ".2f"),
        (f"copy rate ({ext}) ↓", f"val/copy_rate_{ext}", ".3f"),
        ("classes covered ↑", "val/coverage_classes", ".1f"),
        ("bits/dim ↓", "val/nll_bpd", ".3f"),
        ("sampling img/s ↑", "time/sample_images_per_s", ".4g"),
    ]


def aggregate(runs: list[Run]) -> list[dict[str, Any]]:
    """One row per family: mean and std over seeds of every column; blank where no run has the metric."""
    ext = _extractor(runs)
    by_family: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        by_family[r.family].append(r)
    rows = []
    for family, group in sorted(by_family.items()):
        row: dict[str, Any] = {"family": family, "runs": len(group), "parts": group[0].metrics.get("run/parts", "")}
        for header, key, _ in columns(ext):
            values = [float(r.metrics[key]) for r in group if isinstance(r.metrics.get(key), (int, float))]
            values = [v for v in values if math.isfinite(v)]
            row[header] = (
                (statistics.mean(values), statistics.stdev(values) if len(values) > 1 else None) if values else None
            )
        row["floor"] = next((r.metrics.get(f"val/fid_{ext}_floor") for r in group), None)
        rows.append(row)
    return rows


def _cell(value: tuple[float, float | None] | None, fmt: str) -> str:
    if value is None:
        return ""
    mean, std = value
    spec = ".0f" if fmt == "int" else fmt
    text = f"{mean:{spec}}"
    return text + (f" ± {std:{spec}}" if std is not None else "")


# -- figures -----------------------------------------------------------------------------------------------------
_COLOR_ORDER = ["vae", "gan", "diffusion", "transformer", "vqvae", "latent_diffusion"]


def family_color(family: str) -> str:
    """One matplotlib colour per family, the same in every figure of every report."""
    if family in _COLOR_ORDER:
        return f"C{_COLOR_ORDER.index(family)}"
    return f"C{len(_COLOR_ORDER) + sum(map(ord, family)) % (10 - len(_COLOR_ORDER))}"


def plot_samples(runs: list[Run], out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    first: dict[str, Run] = {}
    for r in runs:
        if r.samples and r.family not in first:
            first[r.family] = r
    if not first:
        return None
    fig, axes = plt.subplots(1, len(first), figsize=(3.2 * len(first), 3.6), squeeze=False)
    for ax, (family, r) in zip(axes[0], sorted(first.items()), strict=True):
        ax.imshow(Image.open(r.samples), cmap="gray")
        ax.set_title(family)
        ax.axis("off")
    fig.tight_layout()
    path = out / "samples.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_fid_vs_time(runs: list[Run], out: Path, ext: str) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [r for r in runs if r.curve]
    finals = [r for r in runs if isinstance(r.metrics.get(f"val/fid_{ext}"), (int, float))]
    if not curves and not finals:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r in curves:
        c = family_color(r.family)
        t, f = zip(*r.curve, strict=True)
        ax.plot(
            t,
            f,
            marker="o",
            ms=3,
            color=c,
            label=r.family if r.family not in ax.get_legend_handles_labels()[1] else None,
        )
    for r in finals:
        c = family_color(r.family)
        ax.scatter(
            [r.metrics.get("time/train_s", 0)],
            [r.metrics[f"val/fid_{ext}"]],
            marker="*",
            s=120,
            color=c,
            label=None if r.curve else r.family,
        )
    ax.set_xlabel("training time (s)")
    ax.set_ylabel(f"FID ({ext}), log scale")
    ax.set_yscale("log")
    ax.set_title("FID during training (dots) and final, full-sample FID (stars)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = out / "fid_vs_time.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_throughput(rows: list[dict[str, Any]], out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    header = "sampling img/s ↑"
    data = [(r["family"], r[header]) for r in rows if r.get(header)]
    if not data:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    names = [d[0] for d in data]
    means = [d[1][0] for d in data]
    errs = [d[1][1] or 0 for d in data]
    ax.bar(names, means, yerr=errs, color=[family_color(n) for n in names])
    ax.set_yscale("log")
    ax.set_ylabel("images / s (log scale)")
    ax.set_title("sampling throughput")
    for i, m in enumerate(means):
        ax.text(i, m, f"{m:.3g}", ha="center", va="bottom")
    fig.tight_layout()
    path = out / "throughput.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- the report --------------------------------------------------------------------------------------------------
def build_report(
    runs: list[Run], out: Path, title: str = "gensuite: the families side by side", command: str | None = None
) -> dict[str, Path]:
    """Write results.csv, the figures, report.md and report.html into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    ext = _extractor(runs)
    rows = aggregate(runs)
    cols = columns(ext)

    csv_path = out / "results.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["family", "runs", "parts"] + [h for h, _, _ in cols] + [f"{h} std" for h, _, _ in cols])
        for r in rows:
            means = ["" if r[h] is None else f"{r[h][0]:.6g}" for h, _, _ in cols]
            stds = ["" if r[h] is None or r[h][1] is None else f"{r[h][1]:.6g}" for h, _, _ in cols]
            writer.writerow([r["family"], r["runs"], r["parts"], *means, *stds])

    figures = {
        "samples": plot_samples(runs, out),
        "fid_vs_time": plot_fid_vs_time(runs, out, ext),
        "throughput": plot_throughput(rows, out),
    }
    data = sorted({str(r.metrics.get("run/data", "?")) for r in runs})
    floor = next((r["floor"] for r in rows if r.get("floor") is not None), None)
    n = next((r.metrics.get("eval/n_samples") for r in runs if r.metrics.get("eval/n_samples")), None)

    header = ["family", "runs"] + [h for h, _, _ in cols]
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        table.append("| " + " | ".join([r["family"], str(r["runs"])] + [_cell(r[h], f) for h, _, f in cols]) + " |")
    notes = [
        f"Data: {', '.join(data)}. Features for FID/KID/precision/recall: `{ext}`"
        + (f"; FID floor (real vs real, same N): {floor:.3f}" if floor is not None else "")
        + (f"; {n} samples per model, fixed seed." if n else "."),
        "Mean ± std over seeds where several ran; a blank cell means the family has no such number "
        "(e.g. bits/dim for a GAN).",
        "Parts: " + "; ".join(f"{r['family']}: {r['parts']}" for r in rows if r["parts"]),
    ]
    if command:
        notes.append(f"Reproduce: `{command}`")
    md = [
        f"# {title}",
        "",
        f"_{datetime.now():%Y-%m-%d %H:%M}, {len(runs)} runs_",
        "",
        *table,
        "",
        *[f"- {x}" for x in notes],
        "",
    ]
    labels = {
        "samples": "Samples (one grid per family)",
        "fid_vs_time": "FID against training time",
        "throughput": "Sampling throughput",
    }
    for key, path in figures.items():
        if path is not None:
            md += [f"## {labels[key]}", "", f"![{labels[key]}]({path.name})", ""]
    md_path = out / "report.md"
    md_path.write_text("\n".join(md))

    html_path = out / "report.html"
    html_path.write_text(_html(title, header, rows, cols, notes, figures, labels))
    return {
        "report.md": md_path,
        "report.html": html_path,
        "results.csv": csv_path,
        **{k: v for k, v in figures.items() if v is not None},
    }


def _html(title, header, rows, cols, notes, figures, labels) -> str:
    def img(path: Path) -> str:
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()

    th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    trs = []
    for r in rows:
        cells = [r["family"], str(r["runs"])] + [_cell(r[h], f) for h, _, f in cols]
        trs.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    figs = "".join(
        f"<h2>{html.escape(labels[k])}</h2><img alt='{html.escape(labels[k])}' src='{img(p)}'>"
        for k, p in figures.items()
        if p is not None
    )
    items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}img{{max-width:100%}}</style></head>
<body><h1>{html.escape(title)}</h1><table><tr>{th}</tr>{"".join(trs)}</table><ul>{items}</ul>{figs}</body></html>
"""


# -- running the comparison ------------------------------------------------------------------------------------
def _hms(seconds: float) -> str:
    """Seconds as Lightning's time string ``DD:HH:MM:SS``."""
    s = max(1, int(round(float(seconds))))
    return f"{s // 86400:02d}:{s % 86400 // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def run_families(cfg: DictConfig, out: Path) -> tuple[Path, str]:
    """Train every family (x seeds) as one Hydra multirun of train.py into ``out/runs``."""
    families = list(cfg.families)
    if not families:
        raise ConfigError("families is empty", fix="families=[vae,gan,diffusion,transformer]")
    seeds = list(range(1, int(cfg.seeds) + 1))
    if not seeds:
        raise ConfigError(f"seeds must be >= 1, got {cfg.seeds}", fix="seeds=1")
    args = [
        "-m",
        f"model={','.join(families)}",
        f"seed={','.join(map(str, seeds))}",
        f"data={cfg.data}",
        f"hydra.sweep.dir={out / 'runs'}",
        # the equal budget is wall-clock time: no epoch or step limit may stop a family first
        f"trainer.max_time={cfg.max_time}",
        "trainer.max_epochs=-1",
        "trainer.max_steps=-1",
        f"callbacks.evaluation.every_n_seconds={cfg.eval_every_n_seconds}",
        # validation (where the evaluation runs) on the same clock, whatever a family's epoch length or preset
        f"trainer.val_check_interval={_hms(cfg.eval_every_n_seconds)}",
        "trainer.check_val_every_n_epoch=1",
        f"metrics.features={cfg.metrics.features}",
        "callbacks.progress_bar=null",
        # everything the comparison writes stays under its out (GENSUITE_CACHE_DIR: a cache shared on purpose)
        *([] if os.environ.get("GENSUITE_CACHE_DIR") else [f"paths.cache_dir={out / 'cache'}"]),
        *list(cfg.overrides or []),
    ]
    command = "python -m gensuite.train " + " ".join(args)
    print(f"[gensuite] compare: {command}", flush=True)
    proc = subprocess.run([sys.executable, "-m", "gensuite.train", *args])
    if proc.returncode != 0:
        raise DataError(
            f"the comparison runs failed (exit {proc.returncode}); finished runs are in {out / 'runs'}",
            fix=f"rerun the report on what finished: python compare.py runs={out / 'runs'}",
        )
    return out / "runs", command


def compare(cfg: DictConfig) -> dict[str, Path]:
    # relative to where it is started (as train.py's logs/), so an installed suite works from any folder
    out = Path(cfg.out) if cfg.get("out") else Path("logs") / "compare" / f"{datetime.now():%Y-%m-%d_%H-%M-%S}"
    out = out.resolve()
    if cfg.get("runs"):
        folder, command = Path(str(cfg.runs)), None
        if not folder.is_dir():
            raise DataError(f"runs={folder} is not a folder", fix="give a multirun folder: runs=logs/multiruns/<time>")
    else:
        folder, command = run_families(cfg, out)
    paths = build_report(read_runs(folder), out, command=command)
    print(f"[gensuite] report: {paths['report.md']}\n[gensuite] html:   {paths['report.html']}")
    return paths


if __name__ == "__main__":  # python -m gensuite.compare [overrides]: the same as the checkout's compare.py
    from gensuite.entry import compare as main

    main()
