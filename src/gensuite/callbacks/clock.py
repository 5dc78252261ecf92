"""A training budget that counts training only: ``trainer.max_time`` measured on the suite's own clock.

Lightning's `Timer` measures wall time from the start of ``fit``, so validation passes (a diffusion bound, a
transformer's validation loss), sample evaluations and checkpoint writes all eat the budget, and a family that is
slow to *measure* gets less time to *train*. `TrainingClock` adds up, per training batch, the time from fetching the
batch to the end of its step (forward, backward, optimiser, EMA update, logging); time spent between batches in
validation or in writing a checkpoint is left out. It stops the run at the end of the batch that reaches the
budget (every DDP rank stops together: rank 0 decides), and its elapsed time is part of every checkpoint, so a
resumed run goes on with what is left.

``time/train_s`` in ``metrics.json`` is this clock's reading: the training seconds that an "equal budget" means.
"""

from __future__ import annotations

import time
from datetime import timedelta

import lightning as L

from gensuite.errors import ConfigError
from gensuite.record import TRAIN_SECONDS_KEY


def parse_duration(value) -> float | None:
    """``"DD:HH:MM:SS"`` (Lightning's ``max_time`` spelling), a number of seconds, a timedelta, or a dict of
    timedelta fields -> seconds; None: no limit."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, dict):
        return timedelta(**value).total_seconds()
    parts = str(value).split(":")
    try:
        if len(parts) != 4:
            raise ValueError
        days, hours, minutes, seconds = (float(p) for p in parts)
    except ValueError:
        raise ConfigError(
            f"trainer.max_time={value!r} is not a duration",
            keys=("max_time",),
            fix='trainer.max_time="00:00:10:00" (DD:HH:MM:SS), or trainer.max_time=null for no limit',
        ) from None
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds).total_seconds()


class TrainingClock(L.Callback):
    """Stops training after ``duration`` seconds of training batches (see the module's docstring)."""

    def __init__(self, duration=None):
        self.duration = parse_duration(duration)
        self.elapsed = 0.0  # training seconds so far (restored on resume)
        self.shared_elapsed = 0.0  # rank 0's `elapsed` at the end of the last batch
        self._batch_start: float | None = None
        self._since: float | None = None  # end of the last batch, if nothing but fetching happened since

    def time_elapsed(self) -> float:
        """Training seconds so far, counting the batch in progress."""
        running = time.perf_counter() - self._batch_start if self._batch_start is not None else 0.0
        return self.elapsed + running

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._since = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._since is not None:  # fetching this batch is training time
            self.elapsed += now - self._since
        self._batch_start, self._since = now, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._batch_start is not None:
            self.elapsed += now - self._batch_start
        self._batch_start, self._since = None, now
        if self.duration is not None:
            # rank 0's reading for every rank: the stop, and a time-based schedule (`progress`), agree across ranks
            self.shared_elapsed = float(trainer.strategy.broadcast(self.elapsed, src=0))
            if self.shared_elapsed >= self.duration:
                trainer.should_stop = True

    def progress(self) -> float | None:
        """The fraction of the budget spent at the end of the last training batch (rank 0's clock), 0 to 1;
        None without a budget."""
        if self.duration is None:
            return None
        return min(1.0, self.shared_elapsed / self.duration) if self.duration > 0 else 1.0

    def record_entries(self) -> dict:
        """What this clock adds to the run record (`gensuite.record.collect_metrics`): the training seconds."""
        return {TRAIN_SECONDS_KEY: self.time_elapsed()}

    # checkpoint writes (ModelCheckpoint runs after this callback) and validation are not training time
    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self._since = None

    def on_validation_start(self, trainer, pl_module) -> None:
        self._since = None

    def state_dict(self) -> dict:
        return {"elapsed": self.elapsed}

    def load_state_dict(self, state_dict: dict) -> None:
        self.elapsed = self.shared_elapsed = float(state_dict.get("elapsed", 0.0))
