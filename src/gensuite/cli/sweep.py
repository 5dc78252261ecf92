"""Trade-off curves: ``python eval.py ckpt_path=X sweep=sampling.temperature=0.6,0.8,1.0`` (any one sampling knob,
or ``sampler=ddim sweep=sampler.steps=4,8,16,32``) evaluates the checkpoint once per value, with the same seed and
so the same noise for every value, and writes a table and a plot of FID, precision and recall against the knob:
the fidelity/diversity trade-off of truncation (Brock et al. 2019), temperature, guidance (Ho & Salimans 2022)
and sampler steps, measured rather than eyeballed.

Files, in ``out`` (default ``<run folder>/sweep-<knob>/``): one ``<knob>=<value>.json`` per value (what ``eval.py``
writes), ``sweep.csv``, ``sweep.md`` and ``sweep.png``.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf, open_dict

from gensuite.errors import ConfigError
from gensuite.safe_files import refuse_link, write_bytes_atomic, write_text_atomic

FIX = "e.g. sweep=sampling.temperature=0.6,0.8,1.0, or sampler=ddim sweep=sampler.steps=4,8,16"


def quote_sweep(argv: list[str]) -> list[str]:
    """``sweep=sampling.temperature=0.6,0.8`` as typed is no Hydra override (a second ``=``, commas that Hydra
    reads as a multirun sweep): the entry quotes its value before Hydra parses the command line."""
    return [f"sweep='{a[6:]}'" if a.startswith("sweep=") and a[6:7] not in ("'", '"') else a for a in argv]


def parse_sweep(text: str) -> tuple[str, list[Any]]:
    """``"sampling.temperature=0.6,0.8"`` -> ``("sampling.temperature", [0.6, 0.8])`` (values read as YAML)."""
    key, eq, values = str(text).partition("=")
    key = key.strip()
    vals = [yaml.safe_load(v) for v in values.split(",") if v.strip()]
    if not eq or not re.fullmatch(r"(sampling|sampler)\.\w+", key):
        raise ConfigError(
            f"sweep={text}: expected <knob>=<value>,<value>,... over one sampling.<knob> or sampler.<setting>",
            keys=("sweep",),
            fix=FIX,
        )
    if len(vals) < 2:
        raise ConfigError(f"sweep={text}: a curve needs at least two values", keys=("sweep",), fix=FIX)
    return key, vals


def run_sweep(cfg: DictConfig, evaluate: Callable[[DictConfig], dict[str, Any]]) -> list[dict[str, Any]]:
    """Evaluate ``cfg.ckpt_path`` at each value of ``cfg.sweep`` with ``evaluate`` (eval.py's); returns the rows."""
    key, values = parse_sweep(cfg.sweep)
    if key.startswith("sampler.") and cfg.get("sampler") is None:
        raise ConfigError(
            f"sweep={cfg.sweep} changes a sampler setting, but no sampler= was chosen",
            keys=("sweep", "sampler"),
            fix=f"name the sampler too: sampler=ddim sweep={cfg.sweep}",
        )
    ckpt = Path(cfg.ckpt_path)
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    out = Path(cfg.out) if cfg.get("out") else run_dir / f"sweep-{key}"
    refuse_link(out, "out", None if cfg.get("out") else run_dir, "the sweep")  # each file is checked as written
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for value in values:
        one = OmegaConf.create(OmegaConf.to_container(cfg))
        with open_dict(one):
            one.sweep = None
            one.out = str(out / f"{key}={value}.json")
            OmegaConf.update(one, key, value, force_add=True)
        print(f"[gensuite] sweep: {key}={value}")
        rows.append(row_of(key, value, evaluate(one)))
    write(out, key, rows)
    return rows


def row_of(key: str, value: Any, metrics: dict[str, Any]) -> dict[str, Any]:
    """The curve's numbers from one evaluation (in its feature space, e.g. ``classifier``)."""
    ex = str(metrics.get("eval/features", "classifier")).split(",")[0]
    row: dict[str, Any] = {key: value}
    for name in ("fid", "fid_lo", "fid_hi", "precision", "recall", "density", "coverage", "copy_rate"):
        metric = name.replace("fid_", f"fid_{ex}_") if name.startswith("fid_") else f"{name}_{ex}"
        if f"val/{metric}" in metrics:
            row[name] = metrics[f"val/{metric}"]
    row["fid_floor"] = metrics.get(f"val/fid_{ex}_floor")
    row["images/s"] = metrics.get("time/sample_images_per_s")
    row["features"] = ex
    return row


def write(out: Path, key: str, rows: list[dict[str, Any]]) -> None:
    columns = [c for c in rows[0] if any(r.get(c) is not None for r in rows)]
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(out / "sweep.csv", table.getvalue(), "out")

    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    write_text_atomic(out / "sweep.md", "\n".join(lines) + "\n", "out")
    print("\n".join(lines))
    plot(out / "sweep.png", key, rows)
    print(f"[gensuite] sweep written to {out} (sweep.csv, sweep.md, sweep.png)")


def plot(path: Path, key: str, rows: list[dict[str, Any]]) -> None:
    """FID (with its bootstrap interval) on the left axis, precision and recall on the right, against the knob."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    numeric = all(isinstance(r[key], int | float) and not isinstance(r[key], bool) for r in rows)
    xs = [r[key] if numeric else i for i, r in enumerate(rows)]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    fid = [r.get("fid", float("nan")) for r in rows]
    ax.plot(xs, fid, "o-", color="tab:red", label="FID")
    if all("fid_lo" in r and "fid_hi" in r for r in rows):
        ax.fill_between(xs, [r["fid_lo"] for r in rows], [r["fid_hi"] for r in rows], color="tab:red", alpha=0.15)
    ax.set_xlabel(key)
    ax.set_ylabel(f"FID ({rows[0]['features']} features) ↓", color="tab:red")
    if not numeric:
        ax.set_xticks(xs, [str(r[key]) for r in rows])
    right = ax.twinx()
    for name, colour in (("precision", "tab:blue"), ("recall", "tab:green")):
        if all(name in r for r in rows):
            right.plot(xs, [r[name] for r in rows], "s--", color=colour, label=name)
    right.set_ylim(0, 1)
    right.set_ylabel("precision / recall ↑")
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="best", fontsize=8)
    ax.set_title(f"trade-off of {key}")
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format="png")
    plt.close(fig)
    write_bytes_atomic(path, image.getvalue(), "out")
