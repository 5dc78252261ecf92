"""The one place where the suite works around Lightning's behaviour through members that are not its documented
API. Each function names the Lightning version it was checked against and has a test
(``tests/test_exact_resume.py``) that fails loudly when an upgrade changes what it relies on.
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
