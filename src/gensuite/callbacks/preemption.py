"""A checkpoint on SIGTERM / Ctrl-C (pre-emption), never on a run's own failure.

Lightning's `OnExceptionCheckpoint` saves on *any* exception. A NaN loss is an exception too, and the weights at that
point may already be poisoned: saving them over a good checkpoint would lose the run. This subclass saves only for
interruptions (SIGTERM, which Lightning raises as `SIGTERMException`, and KeyboardInterrupt), into
``interrupted.ckpt`` beside ``last.ckpt``; ``ckpt_path=last`` resumes from whichever of the two is newer.
"""

from __future__ import annotations

from lightning.pytorch.callbacks import OnExceptionCheckpoint


class PreemptionCheckpoint(OnExceptionCheckpoint):
    def __init__(self, dirpath: str, filename: str = "interrupted"):
        super().__init__(dirpath, filename)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, (SystemExit, KeyboardInterrupt)):  # SIGTERMException is a SystemExit
            super().on_exception(trainer, pl_module, exception)
            print(f"[gensuite] interrupted: checkpoint written to {self.ckpt_path}; resume with ckpt_path=last")
