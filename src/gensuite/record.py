"""The run record: the flat keys of ``metrics.json``, how it is collected, written and read, and its printed summary.

One vocabulary for every family and every command: `gensuite.train` and `gensuite.eval` write the record,
`gensuite.compare` reads it, the evaluator and the families fill their keys in from here. A key a run cannot fill
is absent, never zero. Nothing here imports torch or Lightning, so reading and comparing runs starts in a second
(`tests/test_layers.py` checks it): the trainer and the model `collect_metrics` reads are duck-typed.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from gensuite.safe_files import write_text_atomic

# -- the run: what was trained, how long ------------------------------------------------------------------------
TRAIN_SECONDS_KEY = "time/train_s"  # training batches only (`gensuite.callbacks.clock.TrainingClock`)
ELAPSED_KEY = "time/train_elapsed_s"  # training seconds at each evaluation during fit (FID against time)
# budget points (`gensuite.callbacks.evaluation.BudgetPoints`): <run>/budget_points/budget_<s>s.json, the metrics
# at each, and checkpoints/budget_<s>s.ckpt, the model there
BUDGET_DIR = "budget_points"
BUDGET_SECONDS_KEY = "budget/seconds"  # the budget point (training seconds) a budget file is for
FIT_EVAL_SECONDS_KEY = "time/fit_eval_s"  # evaluations during fit, kept off time/train_s
STEPS_KEY = "train/global_step"
EPOCHS_KEY = "train/epochs"
STEPS_PER_S_KEY = "time/train_steps_per_s"  # optimisation steps per second of training (what a budget bought)
PARAMETERS_KEY = "model/parameters"
FAMILY_KEY, DATA_KEY, PARTS_KEY, SEED_KEY = "run/family", "run/data", "run/parts", "run/seed"
LIKELIHOOD_KIND_KEY = "run/likelihood"  # exact | upper bound | estimate, where the family has a likelihood

# -- the evaluation: what was measured, how ---------------------------------------------------------------------
SPACES = ("classifier", "ssl", "inception")  # the feature spaces, in the order a run reports them

# What an evaluation reports, declared once (compare.py builds its tables from these, never from spelt-out keys).
# Per feature space: name -> (label, higher is better); the key is `space_key(name, space)`, e.g. val/fid_ssl.
SPACE_METRICS = {
    "fid": ("FID", False),
    "kid": ("KID", False),
    "precision": ("precision", True),
    "recall": ("recall", True),
    "density": ("density", True),
    "coverage": ("coverage", True),
    "copy_rate": ("copy rate", False),
    "is": ("IS", True),
}
LIKELIHOOD_KEY = "val/nll_bpd"  # bits per dimension of the data as stored, where a family has a likelihood
CLASS_COVERAGE_KEY = "val/coverage_classes"  # classes the samples cover (from the classifier space)
SAMPLING_SPEED_KEY = "time/sample_images_per_s"  # images per second while sampling the evaluation's samples
HEADLINE_SPACE_KEY = "eval/features"  # the headline space (the first one)
SPACES_KEY = "eval/feature_spaces"  # every space of the evaluation, comma-separated, headline first
N_SAMPLES_KEY = "eval/n_samples"
NOTES_KEY = "eval/notes"  # what the evaluation could not do, " | "-separated
CKPT_PATH_KEY = "eval/ckpt_path"  # eval.py: the checkpoint scored
SAMPLES_PATH_KEY, EVAL_DATA_KEY = "eval/samples_path", "eval/data"  # eval.py samples=: the file, the reference data

#: the prefixes of the measured numbers (logged by Lightning, shown in the summary)
MEASURED = ("val/", "features/", "time/")


def space_key(metric: str, space: str, variant: str = "") -> str:
    """The key of ``metric`` in ``space``: ``val/fid_ssl``; a variant: ``val/fid_ssl_floor``, ``..._train``."""
    return f"val/{metric}_{space}" + (f"_{variant}" if variant else "")


#: sample metrics measured against the held-out test reference (or its threshold): they report, never choose
_HELD_OUT = re.compile(r"^val/(fid|kid|precision|recall|density|coverage|copy_rate)_(?!.*_(val|train)$)")


def selects_on_test(key: str | None) -> bool:
    """Whether a monitored / optimised metric ``key`` is measured against the held-out test split."""
    return bool(key) and bool(_HELD_OUT.match(str(key)))


def collect_metrics(trainer, model) -> dict[str, Any]:
    """The flat metric dict of a finished fit or validate (what goes into metrics.json and the hparams tab).

    ``trainer`` is a Lightning trainer: its finite logged numbers under `MEASURED`, its step and epoch, and what
    each callback that adds to the record says (a ``record_entries()`` method: the training clock, the
    evaluation). ``model``: its parameter count and, where it has them, ``eval_info()`` and ``sampling_info()``.
    """
    metrics: dict[str, Any] = {}
    for k, v in trainer.callback_metrics.items():
        if k.startswith(MEASURED):
            value = float(v)
            if math.isfinite(value):
                metrics[k] = value
    for cb in trainer.callbacks:
        entries = getattr(cb, "record_entries", None)
        if callable(entries):
            metrics.update(entries())
    info = getattr(model, "eval_info", None)
    if callable(info):  # how the family made its samples, e.g. {"eval/sampler": "dpm_solver-20"} (diffusion)
        metrics.update(info())
    if hasattr(model, "sampling_info"):  # the sampling knobs' values (sampling.temperature=0.8 of eval.py, ...)
        metrics.update(model.sampling_info())
    metrics[PARAMETERS_KEY] = sum(p.numel() for p in model.parameters())
    metrics[STEPS_KEY] = trainer.global_step
    metrics[EPOCHS_KEY] = trainer.current_epoch
    if metrics.get(TRAIN_SECONDS_KEY):
        metrics[STEPS_PER_S_KEY] = trainer.global_step / metrics[TRAIN_SECONDS_KEY]
    return metrics


def write_record(path: Path, metrics: dict[str, Any], setting: str, root: Path | None = None) -> None:
    """``metrics`` as JSON at ``path``, written beside it and renamed over it, never through a link
    (`gensuite.safe_files.write_text_atomic`; ``setting`` names what chose the path, for its errors)."""
    write_text_atomic(path, json.dumps(metrics, indent=2, sort_keys=True, default=str) + "\n", setting, root)


def read_record(path: Path) -> dict[str, Any]:
    """The flat dict of a ``metrics.json`` (or an ``eval-*.json``)."""
    return json.loads(Path(path).read_text())


def print_summary(metrics: dict[str, Any], out_dir: Path) -> None:
    """The measured numbers as a table, then where the run's outputs are and the command to sample more."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="final evaluation", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k in sorted(metrics):
        v = metrics[k]
        if k.startswith(MEASURED):
            table.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    console = Console(width=100)
    console.print(table)
    last = out_dir / "checkpoints" / "last.ckpt"
    lines = [f"run folder   {out_dir}"]
    if last.is_file():
        lines.append(f"checkpoints  {last} (and the best by the monitored metric)")
    else:  # trainer.fast_dev_run (debug=fdr) writes none
        lines.append(f"checkpoints  no last.ckpt in {last.parent} (a trainer.fast_dev_run writes none)")
    lines += [f"samples      {out_dir / 'samples.png'}", f"metrics      {out_dir / 'metrics.json'}"]
    if (out_dir / "csv" / "metrics.csv").is_file():
        lines.append(f"csv          {out_dir / 'csv' / 'metrics.csv'} (pandas.read_csv)")
    if (out_dir / "tensorboard").is_dir():
        lines.append(f"tensorboard  tensorboard --logdir {out_dir.parent}")
    if last.is_file():
        entry = "sample.py" if Path("sample.py").is_file() else "-m gensuite sample"  # a checkout, or an install
        lines.append(f"sample more  python {entry} ckpt_path={last} n=64")
    console.print("\n".join(lines), highlight=False)


def budget_stem(seconds: float) -> str:
    """The file name (without suffix) of a budget point: ``budget_60s``, ``budget_7.5s``."""
    return f"budget_{float(seconds):g}s"
