"""Reading finished runs: each run folder's ``metrics.json``, its composed config, its FID-against-time curve (from
the TensorBoard events), its budget points (``budget_points/budget_<s>s.json``, the full evaluation at each point
of ``budgets=``) and any trade-off curve ``eval.py sweep=...`` wrote beside it (``sweep-<knob>/sweep.csv``, with
the full evaluation of each knob value in ``<knob>=<value>.json``)."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from gensuite.compare.columns import fid, spaces_of
from gensuite.errors import DataError
from gensuite.record import ELAPSED_KEY, FAMILY_KEY, SAMPLING_SPEED_KEY, read_record, space_key


@dataclass
class Run:
    """One finished run folder: its metrics, config and pictures."""

    path: Path
    metrics: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    curve: list[tuple[float, float]] = field(default_factory=list)  # (training seconds, FID) during training
    budgets: dict[float, dict[str, Any]] = field(default_factory=dict)  # budget seconds -> the metrics there

    def at(self, seconds: float) -> Run:
        """This run as it stood at the budget point ``seconds``: its metrics there, with the run's own keys
        (family, data, seed) from ``metrics.json``."""
        own = {k: v for k, v in self.metrics.items() if k.startswith("run/")}
        return Run(self.path, {**self.budgets[seconds], **own}, self.config)

    @property
    def family(self) -> str:
        return str(self.metrics.get(FAMILY_KEY) or self.config.get("model", {}).get("_target_", "?"))

    @property
    def samples(self) -> Path | None:
        p = self.path / "samples.png"
        return p if p.is_file() else None

    @property
    def checkpoint(self) -> Path | None:
        p = self.path / "checkpoints" / "last.ckpt"
        return p if p.is_file() else None

    def sweeps(self) -> list[Sweep]:
        """The trade-off curves eval.py wrote for this run (``sweep-<knob>/``)."""
        return [read_sweep(d) for d in sorted(self.path.glob("sweep-*")) if (d / "sweep.csv").is_file()]

    def has_sweep(self, knob: str) -> bool:
        return (self.path / f"sweep-{knob}" / "sweep.csv").is_file()


@dataclass
class Sweep:
    """One trade-off curve: the knob, the rows of ``sweep.csv`` and its plot."""

    folder: Path
    knob: str
    rows: list[dict[str, str]]

    @property
    def plot(self) -> Path | None:
        p = self.folder / "sweep.png"
        return p if p.is_file() else None

    def points(self) -> list[tuple[str, dict[str, Any]]]:
        """Each knob value as ``sweep.csv`` writes it, with its evaluation: the ``<knob>=<value>.json`` eval.py
        wrote (every feature space), or, where that file is gone, the FID and speed of the csv row (its space)."""
        out = []
        for row in self.rows:
            value = row.get(self.knob, "")
            record = self.folder / f"{self.knob}={value}.json"
            if record.is_file():
                out.append((value, read_record(record)))
                continue
            from_row = {space_key("fid", row.get("features") or "classifier"): row.get("fid"),
                        SAMPLING_SPEED_KEY: row.get("images/s")}  # fmt: skip
            out.append((value, {k: float(v) for k, v in from_row.items() if v not in (None, "")}))
        return out


def read_sweep(folder: Path) -> Sweep:
    with (folder / "sweep.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    return Sweep(folder, folder.name.removeprefix("sweep-"), rows)


def read_runs(folder: Path) -> list[Run]:
    """Every run under ``folder`` (any depth) that finished: it has a ``metrics.json``."""
    runs = []
    for metrics_file in sorted(folder.rglob("metrics.json")):
        path = metrics_file.parent
        cfg_file = path / ".hydra" / "config.yaml"
        config = OmegaConf.to_container(OmegaConf.load(cfg_file), resolve=False) if cfg_file.is_file() else {}
        metrics = read_record(metrics_file)
        runs.append(Run(path, metrics, config, fid_curve(path, spaces_of([metrics])[0]), read_budgets(path)))
    if not runs:
        raise DataError(
            f"runs={folder}: no finished run (no metrics.json) under it",
            fix="point runs= at a comparison's runs folder (logs/compare/<time>/runs) or leave it out to train",
        )
    return runs


def read_budgets(path: Path) -> dict[float, dict[str, Any]]:
    """The metrics at each budget point of a run, by budget seconds (`gensuite.callbacks.evaluation.BudgetPoints`)."""
    from gensuite.record import BUDGET_DIR, BUDGET_SECONDS_KEY

    out = {}
    for f in sorted((path / BUDGET_DIR).glob("budget_*s.json")):
        metrics = read_record(f)
        out[float(metrics[BUDGET_SECONDS_KEY])] = metrics
    return dict(sorted(out.items()))


def fid_curve(path: Path, space: str) -> list[tuple[float, float]]:
    """FID in ``space`` during training against training seconds, from the run's TensorBoard events."""
    events = path / "tensorboard"
    if not events.is_dir():
        return []
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
    logging.getLogger("tensorboard").setLevel(logging.WARNING)  # not a line per event file it moves on to
    acc.Reload()
    tags = set(acc.Tags().get("scalars", []))
    if fid(space).key not in tags or ELAPSED_KEY not in tags:
        return []
    elapsed = {e.step: e.value for e in acc.Scalars(ELAPSED_KEY)}
    return [(elapsed[e.step], e.value) for e in acc.Scalars(fid(space).key) if e.step in elapsed]


def by_family(runs: list[Run]) -> dict[str, list[Run]]:
    """The runs of each family, families in the comparison's order."""
    from gensuite.compare.columns import known_families

    order = known_families()
    groups: dict[str, list[Run]] = {}
    for r in sorted(runs, key=lambda r: (order.index(r.family) if r.family in order else len(order), r.family)):
        groups.setdefault(r.family, []).append(r)
    return groups
