"""The families side by side: ``python compare.py`` trains one run per family (and seed) on the same data under
one equal budget — or, given ``runs=<folder>``, reads finished runs — and writes ``report.md``, ``report.html``
(static, images embedded: opens offline), ``results.csv`` and the figures it shows.

The runs are a Hydra multirun of ``train.py`` (``-m model=vae,gan,... seed=1,2``), so every number in the report is
what ``metrics.json`` of a run says, and any run can be opened on its own in TensorBoard.

One module per job: `launch` (the runs and the curves), `runs` (reading run folders), `columns` (which numbers,
from the evaluator's and the families' declarations), `stats` (intervals, Welch, Kendall, Pareto), `summary` (the
runs per family), `claims` (the common wisdom against the measurements), `figures` and `report` (rendering).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gensuite.compare.columns import family_color
from gensuite.compare.report import build_report
from gensuite.compare.runner import run_curves, run_families
from gensuite.compare.runs import Run, read_runs
from gensuite.errors import DataError

__all__ = ["Run", "build_report", "compare", "family_color", "read_runs", "run_families"]


def compare(cfg: DictConfig) -> dict[str, Path]:
    # relative to where it is started (as train.py's logs/), so an installed suite works from any folder
    out = Path(cfg.out) if cfg.get("out") else Path("logs") / "compare" / f"{datetime.now():%Y-%m-%d_%H-%M-%S}"
    out = out.resolve()
    if cfg.get("runs"):
        folder, command = Path(str(cfg.runs)), None
        if not folder.is_dir():
            raise DataError(
                f"runs={folder} is not a folder", fix="give a comparison's runs: runs=logs/compare/<time>/runs"
            )
    else:
        folder, command = run_families(cfg, out)
    runs = read_runs(folder)
    if cfg.get("curves"):
        for note in run_curves(runs, OmegaConf.to_container(cfg.get("curve_args") or {})):
            print(f"[gensuite] compare: {note}")
        runs = read_runs(folder)
    claims = OmegaConf.to_container(cfg.claims) if cfg.get("claims") is not None else None
    paths = build_report(runs, out, command=command, claims=claims)
    print(f"[gensuite] report: {paths['report.md']}\n[gensuite] html:   {paths['report.html']}")
    return paths
