"""The results file of `benchmarks.peers` and the tables made from it.

``peers.jsonl``: one JSON object a line, one line per family x side x variant x seed of each training (tuning
trials and final rows alike), appended and flushed as each training's variants are scored, so that a stopped run
keeps what it finished and a rerun skips every training whose key (`training_key`) is already in the file.
Choices are made on the validation key only (`measure.SELECT`); the held-out numbers are only reported.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from pathlib import Path

from benchmarks.peers.measure import SELECT

# what makes two trainings the same: a rerun with all of these equal reuses the rows instead of training again
KEY_FIELDS = ("stage", "family", "side", "seed", "budget_s", "n", "settings", "fingerprint")


def training_key(row: dict) -> str:
    return json.dumps([row.get(k) for k in KEY_FIELDS], sort_keys=True)


def read_rows(path: Path) -> list[dict]:
    """The rows of ``path`` (none if there is no file; a last line cut off by a kill is ignored)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def append_rows(path: Path, rows: list[dict]) -> None:
    """Append ``rows`` to ``path`` and flush them to disk before returning."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in rows)
        f.flush()
        os.fsync(f.fileno())


def by_training(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows grouped by `training_key`, in file order."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[training_key(r)].append(r)
    return dict(groups)


def modality(family: str) -> str:
    return "text" if family == "text" else "image"


def score(training: list[dict], key: str) -> float:
    """A training's validation score: its best variant's ``key`` (lower is better; NaN where none has it)."""
    values = [r["metrics"].get(key, math.nan) for r in training]
    finite = [v for v in values if math.isfinite(v)]
    return min(finite) if finite else math.nan


def choose(trainings: list[list[dict]], key: str) -> int:
    """The index of the training with the lowest validation score ``key`` (ties: the earlier). Only ``key`` is
    read: a training with a better held-out score but a worse validation score is not chosen."""
    if key not in SELECT.values():
        raise ValueError(f"choices are made on a validation key ({', '.join(SELECT.values())}), not {key!r}")
    scores = [score(t, key) for t in trainings]
    finite = [i for i, s in enumerate(scores) if math.isfinite(s)]
    if not finite:
        raise ValueError(f"no training has a finite {key}")
    return min(finite, key=lambda i: scores[i])


# -- statistics: the suite's own, over seeds --------------------------------------------------------------------
def estimate(values: list[float], key: str):
    """Mean and 95 % interval over seeds, inside the number's range (FID on the log scale): `compare.stats`."""
    from gensuite.compare.columns import bounds
    from gensuite.compare.stats import estimate as over_seeds

    lower, upper = (0.0, None) if key.startswith(("bpb", "time", "sample")) else bounds(key)
    return over_seeds(values, lower, upper)


def floor_ratio(peer: list[float], suite: list[float], floor: float) -> tuple[float, tuple[float, float] | None]:
    """How many times closer to the floor the suite is than the peer: (peer FID - floor) / (suite FID - floor), as
    the ratio of the geometric means over seeds, with Welch's 95 % interval of the difference of the logs mapped
    back (so it stays positive). NaN (no interval) where a value is at or under the floor."""
    from gensuite.compare.stats import welch

    if not peer or not suite or min(peer + suite) <= floor:
        return math.nan, None
    d = welch([math.log(v - floor) for v in peer], [math.log(v - floor) for v in suite])
    return math.exp(d.diff), None if d.interval is None else (math.exp(d.interval[0]), math.exp(d.interval[1]))


# -- the tables -------------------------------------------------------------------------------------------------
def cell(values: list[float], key: str, fmt: str = ".3f") -> str:
    from gensuite.compare.report import cell as shown

    return shown(estimate(values, key), fmt)


def ratio_cell(ratio: tuple[float, tuple[float, float] | None]) -> str:
    value, interval = ratio
    if not math.isfinite(value):
        return "-"
    return f"{value:.2f}" + (f" [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else " (one seed)")


def markdown(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def changed(settings: dict, base: dict) -> str:
    """The settings that differ from ``base`` (the trial-0 ones), as ``key=value``; ``default`` if none."""
    diff = [f"{k}={v}" for k, v in settings.items() if base.get(k) != v]
    return ", ".join(diff + [f"{k} unset" for k in base if k not in settings]) or "default"


def tuning_table(rows: list[dict]) -> list[str]:
    header = ["family", "side", "trial", "settings", "budget s", "n", "best variant", "val score (chooses)",
              "held-out (reported)", "chosen"]  # fmt: skip
    lines = []
    for (family, side), trainings in _groups([r for r in rows if r["stage"] == "tune"], ("family", "side")).items():
        key = SELECT[modality(family)]
        test = key.replace("_val", "") if key.startswith("val/") else "bpb_test"
        trainings = sorted(trainings, key=lambda t: t[0]["trial"])
        best = choose(trainings, key)
        base = trainings[0][0]["settings"]
        for i, t in enumerate(trainings):
            top = min(t, key=lambda r: r["metrics"].get(key, math.inf))
            lines.append([family, side, str(t[0]["trial"]), changed(t[0]["settings"], base), f"{t[0]['budget_s']:.0f}",
                          str(t[0]["n"] or "-"), top["variant"], f"{top['metrics'].get(key, math.nan):.3f}",
                          f"{top['metrics'].get(test, math.nan):.3f}", "yes" if i == best else ""])  # fmt: skip
    return markdown(header, lines)


def _groups(rows: list[dict], fields: tuple[str, ...]) -> dict[tuple, list[list[dict]]]:
    """Trainings (lists of rows) grouped by ``fields`` of their first row, in file order."""
    out: dict[tuple, list[list[dict]]] = defaultdict(list)
    for training in by_training(rows).values():
        out[tuple(training[0][f] for f in fields)].append(training)
    return dict(out)


def _lines(rows: list[dict]) -> dict[tuple, list[dict]]:
    """Final rows grouped into table lines: the same family, side, label, settings, variant, budget and n; one row
    per seed."""
    out: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if r["stage"] == "final":
            settings = json.dumps(r["settings"], sort_keys=True)
            out[r["family"], r["side"], r["config"], settings, r["variant"], r["budget_s"], r["n"]].append(r)
    return dict(out)


IMAGE_COLUMNS = (
    ("val/fid_classifier", ".2f"),
    ("val/fid_ssl", ".3f"),
    ("val/fid_classifier_val", ".2f"),
    ("val/precision_classifier", ".3f"),
    ("val/recall_classifier", ".3f"),
    ("val/coverage_classes", ".1f"),
)


def image_table(rows: list[dict]) -> list[str]:
    header = ["family", "side", "implementation", "variant", "seeds", "FID classifier (held-out)", "FID ssl (held-out)",
              "FID classifier (val)", "precision", "recall", "classes", "closer to floor, classifier",
              "closer to floor, ssl", "train s", "steps", "params", "sampling s/img"]  # fmt: skip
    lines = _lines([r for r in rows if modality(r["family"]) == "image"])
    out = []
    for (family, side, label, _, variant, budget, n), seeds in lines.items():
        suite = [s for k, s in lines.items() if k[:3] == (family, "suite", label) and k[5:] == (budget, n)]
        ratios = []
        for space in ("classifier", "ssl"):
            key, floor = f"val/fid_{space}", seeds[0]["metrics"].get(f"val/fid_{space}_floor", math.nan)
            ratio = (math.nan, None)
            if side == "peer" and suite:
                ratio = floor_ratio(_values(seeds, key), _values(suite[0], key), floor)
            ratios.append(ratio_cell(ratio) if side == "peer" else "1 (the suite)")
        out.append([family, side, seeds[0]["implementation"], variant, str(len(seeds)),
                    *(cell(_values(seeds, k), k, f) for k, f in IMAGE_COLUMNS), *ratios,
                    *_facts(seeds)])  # fmt: skip
    return markdown(header, out)


def text_table(rows: list[dict]) -> list[str]:
    header = ["side", "implementation", "configuration", "seeds", "bits/byte held-out topics",
              "bits/byte validation slice", "train s", "steps", "params", "sampling s/img"]  # fmt: skip
    out = []
    for (_, side, label, _, _, _, _), seeds in _lines([r for r in rows if r["family"] == "text"]).items():
        out.append([side, seeds[0]["implementation"], label, str(len(seeds)),
                    cell(_values(seeds, "bpb_test"), "bpb_test"), cell(_values(seeds, "bpb_val"), "bpb_val"),
                    *_facts(seeds)])  # fmt: skip
    return markdown(header, out)


def _values(rows: list[dict], key: str) -> list[float]:
    return [r["metrics"][key] for r in rows if key in r["metrics"]]


def _facts(rows: list[dict]) -> list[str]:
    def mean(key):
        values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
        return sum(values) / len(values) if values else math.nan

    per_image = mean("sample_s_per_image")
    return [f"{mean('train_s'):.0f}", f"{mean('steps'):.0f}", f"{mean('parameters') / 1e6:.2f} M",
            "-" if math.isnan(per_image) else f"{per_image:.4f}"]  # fmt: skip


def render(rows: list[dict], sources: dict, header: list[str]) -> str:
    """``peers.md``: how it was made, the peers' sources, the tuning trials and the final tables."""
    parts = [*header, ""]
    parts += ["## Where each peer setting comes from", ""]
    for family, table in sources.items():
        parts += [f"**{family}**", "", *markdown(["setting", "source"], [[k, v] for k, v in table.items()]), ""]
    parts += ["## Tuning trials (one seed, shorter budget; chosen on the validation score only)", ""]
    parts += [*tuning_table(rows), "", "## Images: held-out test split, 95 % intervals over seeds", ""]
    parts += [*image_table(rows), "", "## Text: bits per byte, 95 % intervals over seeds", "", *text_table(rows), ""]
    return "\n".join(parts)
