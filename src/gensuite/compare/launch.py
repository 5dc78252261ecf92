"""Making the runs: every family × seed as one Hydra multirun of ``python -m gensuite train`` under one equal time
budget, into ``<out>/runs`` (with the feature networks cached in ``<out>/cache``); and, with ``curves=true``, one
``python -m gensuite eval ... sweep=...`` per family on its first seed's last checkpoint."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from omegaconf import DictConfig

from gensuite import registry
from gensuite.compare.runs import Run, by_family
from gensuite.errors import ConfigError, DataError


def hms(seconds: float) -> str:
    """Seconds as Lightning's time string ``DD:HH:MM:SS``."""
    s = max(1, int(round(float(seconds))))
    return f"{s // 86400:02d}:{s % 86400 // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def train_args(cfg: DictConfig, out: Path) -> list[str]:
    """The multirun's command line: families × seeds, the equal budget, validation on the same clock."""
    families = registry.chosen(cfg.families)
    seeds = list(range(1, int(cfg.seeds) + 1))
    if not seeds:
        raise ConfigError(f"seeds must be >= 1, got {cfg.seeds}", keys=("seeds",), fix="seeds=1")
    return [
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
        f"trainer.val_check_interval={hms(cfg.eval_every_n_seconds)}",
        "trainer.check_val_every_n_epoch=1",
        f"metrics.features={_features(cfg.metrics.features)}",
        "callbacks.progress_bar=null",
        # everything the comparison writes stays under its out (GENSUITE_CACHE_DIR: a cache shared on purpose)
        *([] if os.environ.get("GENSUITE_CACHE_DIR") else [f"paths.cache_dir={out / 'cache'}"]),
        *list(cfg.overrides or []),
    ]


def _features(features) -> str:
    """``metrics.features`` as one override value: a list becomes ``[a,b]``."""
    if isinstance(features, str):
        return features
    return "[" + ",".join(map(str, features)) + "]"


def run_families(cfg: DictConfig, out: Path) -> tuple[Path, str]:
    """Train every family (x seeds) as one Hydra multirun of train.py into ``out/runs``."""
    args = train_args(cfg, out)
    command = "python -m gensuite train " + " ".join(args)
    print(f"[gensuite] compare: {command}", flush=True)
    proc = subprocess.run([sys.executable, "-m", "gensuite", "train", *args])
    if proc.returncode != 0:
        raise DataError(
            f"the comparison runs failed (exit {proc.returncode}); finished runs are in {out / 'runs'}",
            fix=f"rerun the report on what finished: python compare.py runs={out / 'runs'}",
        )
    return out / "runs", command


def curve_command(run: Run, args: str) -> list[str]:
    """eval.py on the run's last checkpoint with the family's sweep arguments (``curve_args.<family>``)."""
    return [sys.executable, "-m", "gensuite", "eval", f"ckpt_path={run.checkpoint}", *shlex.split(args)]


def run_curves(runs: list[Run], curve_args: dict) -> list[str]:
    """One trade-off curve per family (first seed), unless its sweep folder is there already. Returns notes on
    the families that got none."""
    notes = []
    for family, group in by_family(runs).items():
        run, args = group[0], (curve_args or {}).get(family)
        if not args:
            notes.append(f"{family}: no curve_args.{family}, no curve")
            continue
        if run.checkpoint is None:
            notes.append(f"{family}: no checkpoints/last.ckpt in {run.path}, no curve")
            continue
        if run.sweeps():  # made before (a report re-rendered): reuse it
            continue
        cmd = curve_command(run, str(args))
        print(f"[gensuite] compare curve: {shlex.join(cmd[1:])}", flush=True)
        if subprocess.run(cmd).returncode != 0:
            notes.append(f"{family}: the sweep failed ({args})")
    return notes
