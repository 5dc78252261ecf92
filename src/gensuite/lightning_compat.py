"""The one place where the suite reaches Lightning's (and TensorBoard's) members that are not their documented API,
because no public way does the job. Each function names the version it was checked against and has a test
(``tests/test_lightning_compat.py``; ``tests/test_exact_resume.py`` for the restart repair) that fails loudly when
an upgrade changes what it relies on. `gensuite.callbacks.ema.EMA` extends Lightning's `EMAWeightAveraging` and
reads its attributes (``_average_model``, ``_device``, ``_use_buffers``, ``_kwargs``); the same test checks them.
"""

from __future__ import annotations

import lightning as L

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
