"""A checkpoint on SIGTERM / Ctrl-C (pre-emption), never on a run's own failure.

Lightning's `OnExceptionCheckpoint` saves on *any* exception. A NaN loss is an exception too, and the weights at that
point may already be poisoned: saving them over a good checkpoint would lose the run. (Its presence also makes
``fit(ckpt_path=None)`` resume from "last" on its own, which would break the meaning of ``ckpt_path=null``.) This
callback saves only for interruptions — SIGTERM, which Lightning raises as `SIGTERMException`, and
KeyboardInterrupt — into ``interrupted.ckpt`` beside ``last.ckpt``; ``ckpt_path=last`` resumes from whichever of
the two is newer.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L


class PreemptionCheckpoint(L.Callback):
    def __init__(self, dirpath: str, filename: str = "interrupted"):
        self.path = Path(dirpath) / f"{filename}.ckpt"

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if trainer.fast_dev_run:  # a fast_dev_run writes no checkpoint, as Lightning's own callbacks
            return
        if isinstance(exception, (SystemExit, KeyboardInterrupt)):  # SIGTERMException is a SystemExit
            trainer.save_checkpoint(self.path)
            if trainer.is_global_zero:
                print(f"[gensuite] interrupted: checkpoint written to {self.path}; resume with ckpt_path=last")
