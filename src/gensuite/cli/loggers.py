"""Where a run's numbers and messages go: the loggers under ``logger:`` and the console.

- `build_loggers`: every entry under ``logger:`` (TensorBoard and CSV by default; an entry set to null is off).
- `CSVLogger`: Lightning's, except that a run resumed into its own folder (``auto_resume=true`` of a requeued
  SLURM job keeps the folder) appends to ``csv/metrics.csv`` instead of deleting it.
- `tensorboard_writer`: the run's TensorBoard ``SummaryWriter``, or None (no TensorBoard logger, or
  ``fast_dev_run``, under which Lightning swaps every logger for a dummy).
- `route_library_logs`: Lightning's INFO lines printed once, through Hydra's handlers, without its tips.
"""

from __future__ import annotations

import logging
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from omegaconf import DictConfig

from gensuite import lightning_compat

# packages that give their logger a console handler of their own when imported
LIBRARY_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "torchmetrics")
# where Lightning's rank_zero_info records are made (the filter must sit on the logger that makes them)
RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
TIP_PREFIX = "💡 Tip:"


def build_loggers(cfg: DictConfig) -> list[Logger] | bool:
    """Every logger named under ``logger:`` (``logger.csv=null`` switches one off); False when none is left."""
    from gensuite.cli.config import instantiate_checked

    node = cfg.get("logger")
    if not node:
        return False
    return [instantiate_checked(cfg, f"logger.{name}") for name, entry in node.items() if entry is not None] or False


def tensorboard_writer(trainer) -> Any | None:
    """The ``SummaryWriter`` of the run's TensorBoard logger (rank 0), else None."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            writer = logger.experiment
            return None if lightning_compat.is_dummy_experiment(writer) else writer  # the dummy: ranks other than 0
    return None


class CSVLogger(LightningCSVLogger):
    """Scalars as one CSV file, ``<save_dir>/<name>/<version>/metrics.csv``: a row per logging step, a column per
    metric (``step``, ``epoch``, ``train/loss``, ``val/fid_classifier``...; empty where not logged that step).

    >>> import pandas as pd  # doctest: +SKIP
    >>> pd.read_csv("logs/runs/vae-mnist5k/<time>/csv/metrics.csv").dropna(subset=["val/loss"])  # doctest: +SKIP
    """

    @property
    @rank_zero_experiment  # as Lightning's own: the other ranks get a dummy
    def experiment(self) -> ExperimentWriter:
        return lightning_compat.appending_csv_experiment(self)  # appends to an existing metrics.csv


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(TIP_PREFIX)


def route_library_logs() -> None:
    """Call once the entry's logging is configured (inside ``@hydra.main``).

    On import, ``lightning`` gives its logger a console handler of its own (``INFO: ...``) and still propagates to
    the root logger, where Hydra's job logging prints every record again: each line came out twice. (Whether
    ``lightning.pytorch`` adds a second handler depends on whether it was imported before Hydra configured
    logging: the command-line check imports it when an override names a trainer argument.) With the root logger
    handled, those private handlers go: each record is printed once by Hydra's console handler and kept in the run
    folder's ``train.log``. Without root handlers nothing changes (each record already reaches one handler).

    Lightning 2.6 advertises its cloud services at INFO level on every run ("💡 Tip: ..."), with no setting to
    turn it off: those records are dropped where they are made.
    """
    import lightning  # noqa: F401  (its import adds the handler taken off here)
    import lightning_utilities.core.rank_zero as rank_zero

    if logging.getLogger().handlers:
        for name in LIBRARY_LOGGERS:
            lib = logging.getLogger(name)
            for handler in list(lib.handlers):
                if type(handler) is logging.StreamHandler:  # a console handler (not a file someone added)
                    lib.removeHandler(handler)
            lib.propagate = True
    for lib in {*(logging.getLogger(n) for n in RANK_ZERO_LOGGERS), rank_zero.log}:
        if not any(isinstance(f, _DropTips) for f in lib.filters):
            lib.addFilter(_DropTips())
