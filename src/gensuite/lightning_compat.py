"""The one place where the suite reaches Lightning's, torch's and TensorBoard's members that are not their documented
API, because no public way does the job (Hydra's: `gensuite.hydra_compat`). Each function names the version it was
checked against and has a test (``tests/test_lightning_compat.py``; ``tests/test_exact_resume.py`` for the restart
repair) that fails loudly when an upgrade changes what it relies on. ``tests/test_private_members.py`` checks that
no other module of the suite reaches a private member of these libraries.
"""

from __future__ import annotations

import csv
import os
from typing import Any

import lightning as L
import torch
from lightning.fabric.loggers.logger import _DummyExperiment
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from torch.optim.swa_utils import AveragedModel

CHECKED_WITH = "2.6.6"


def repair_restart_after_last_batch(trainer: L.Trainer) -> bool:
    """Lightning 2.6.6: a run resumed from a checkpoint written on the *last* training batch of an epoch (an
    ``every_n_train_steps`` checkpoint that lands there, or one written by SIGTERM there) moves on to the next
    epoch but keeps the fit loop's "restarted mid-epoch" stage. That next epoch then never counts as started (its
    ``on_train_epoch_start`` hooks are skipped, its ``ready`` / ``started`` counters are not incremented), so every
    checkpoint written during it says that the epoch was already finished — and a run resumed from one of those
    trains the epoch a second time (measured: 200 steps instead of 150 after two resumes).

    Called at ``on_train_start`` (after the fit loop has restored and reset its counters, before the epoch
    starts): the stage is cleared so that the epoch starts like any other. Returns whether it had to."""
    fit = trainer.fit_loop
    current = fit.epoch_progress.current
    if fit.restarted_mid_epoch and current.started == current.processed:
        fit.reset_restart_stage()
        return True
    return False


def _no_count() -> None:
    """Stands in for Lightning's step-counting hooks around an optimiser step that must not count."""


def step_uncounted(opt) -> None:
    """``opt.step()`` of a `LightningOptimizer` in manual optimisation without advancing ``trainer.global_step``.

    Lightning 2.6.6: the manual-optimisation loop counts a step through two hooks it sets on each
    `LightningOptimizer` (``_on_before_step`` / ``_on_after_step``); the step itself goes through the strategy and
    the precision plugin (gradient scaling, DDP) as usual. The GAN's discriminator steps use it: only generator
    updates are training steps (``trainer.max_steps``, checkpoints and schedules count those)."""
    hooks = opt._on_before_step, opt._on_after_step
    opt._on_before_step = opt._on_after_step = _no_count
    try:
        opt.step()
    finally:
        opt._on_before_step, opt._on_after_step = hooks


def file_writer(writer):
    """The event-file writer of a `SummaryWriter`, for summaries that only exist as protobufs (the hparams tab).

    torch 2.x: ``SummaryWriter._get_file_writer()``; `SummaryWriter.add_hparams` would write them into a new
    sub-run folder of its own instead of the run's event file."""
    return writer._get_file_writer()


def last_saved_step(checkpoint) -> int:
    """The global step of the last checkpoint a `ModelCheckpoint` wrote (Lightning 2.6.6:
    ``_last_global_step_saved``; 0 before any)."""
    return checkpoint._last_global_step_saved


def save_last(checkpoint, trainer: L.Trainer) -> None:
    """Make a `ModelCheckpoint` write its ``last.ckpt`` now, as it does at its own intervals (Lightning 2.6.6:
    ``_save_last_checkpoint(trainer, _monitor_candidates(trainer))``; it also moves ``last_model_path``)."""
    checkpoint._save_last_checkpoint(trainer, checkpoint._monitor_candidates(trainer))


# -- weight averaging (gensuite.callbacks.ema) ---------------------------------------------------------------------
def averaged_model(callback) -> AveragedModel | None:
    """The `AveragedModel` of a Lightning `WeightAveraging` callback (Lightning 2.6.6: ``_average_model``; None
    before its ``setup`` for fit)."""
    return callback._average_model


def average_only(callback, module: torch.nn.Module, device: torch.device) -> None:
    """Make a `WeightAveraging` callback average ``module`` (a sub-module of the LightningModule) rather than the
    whole LightningModule: the `AveragedModel` its ``setup`` builds, of ``module`` instead (Lightning 2.6.6: its
    ``_device`` or else ``device``, its ``_use_buffers`` and ``_kwargs``, into ``_average_model``)."""
    callback._average_model = AveragedModel(
        model=module, device=callback._device or device, use_buffers=callback._use_buffers, **callback._kwargs
    )


# -- loggers (gensuite.cli.loggers) ------------------------------------------------------------------------------------
def is_dummy_experiment(experiment: Any) -> bool:
    """Whether a logger's ``experiment`` is the stand-in Lightning hands ranks other than 0 (and ``fast_dev_run``)
    (Lightning 2.6.6: ``lightning.fabric.loggers.logger._DummyExperiment``)."""
    return isinstance(experiment, _DummyExperiment)


class AppendingCSVWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing ``metrics.csv`` when it starts; this one keeps its rows and its
    header (new columns still rewrite the header, as Lightning does). Lightning 2.6.6: the deletion is
    ``ExperimentWriter._check_log_dir_exists``, called from its ``__init__``; ``_fs`` is its file system."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = list(next(csv.reader(file), []))


def appending_csv_experiment(logger) -> ExperimentWriter:
    """A `CSVLogger`'s ``experiment`` as an `AppendingCSVWriter`, made once (Lightning 2.6.6: kept in the logger's
    ``_experiment``, as its own property does)."""
    if logger._experiment is None:
        os.makedirs(logger.root_dir, exist_ok=True)
        logger._experiment = AppendingCSVWriter(log_dir=logger.log_dir)
    return logger._experiment


# -- torch ---------------------------------------------------------------------------------------------------------
def is_batch_norm(module: torch.nn.Module) -> bool:
    """Whether ``module`` normalises over the batch: any batch norm of torch (1d/2d/3d, lazy, sync, quantised) or of
    Lightning (the ``_BatchNormXd`` that ``sync_batchnorm`` reverts to), not instance / group / layer norm (torch
    2.x: their common base ``torch.nn.modules.batchnorm._BatchNorm``)."""
    return isinstance(module, torch.nn.modules.batchnorm._BatchNorm)


#: a torch LR scheduler's own bookkeeping in its ``state_dict`` (torch 2.x), not settings of the schedule
SCHEDULER_BOOKKEEPING = frozenset({"base_lrs", "last_epoch", "_step_count", "_last_lr"})


def set_last_lr(scheduler, lrs: list[float]) -> None:
    """What a torch LR scheduler reports as its last learning rates (``get_last_lr()``, and through it Lightning's
    `LearningRateMonitor`), until its next step (torch 2.x: ``_last_lr``)."""
    scheduler._last_lr = list(lrs)
