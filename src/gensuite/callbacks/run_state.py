"""Writes what a checkpoint needs beyond Lightning's own state: the composed config and the RNG states."""

from __future__ import annotations

import random

import lightning as L
import numpy as np
import torch

from gensuite.callbacks.checkpoint import confine_states
from gensuite.data.order import mark_trained, position, resume_position
from gensuite.lightning_compat import repair_restart_after_last_batch


def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        # numpy's state holds an ndarray, which weights_only loading refuses: store it as a tensor
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RunState(L.Callback):
    """Stores ``config`` (plain data) and ``family`` in every checkpoint, and restores RNG states on resume.

    With the RNG and the data order's position (`gensuite.data.order`) restored, a run resumed from any checkpoint
    (epoch end, mid-epoch, SIGTERM) trains on the same batches with the same noise as an uninterrupted run.
    """

    def __init__(self, config: dict):
        self.config = config
        self._pending_rng: dict | None = None
        self._training_rng: dict | None = None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["gensuite"] = {
            "config": self.config,
            "family": getattr(pl_module, "family", None),
            "format": 1,
        }
        checkpoint["gensuite_rng"] = _rng_state()
        checkpoint["gensuite_data_position"] = position(trainer)

    # validation draws noise too (a VAE's reparameterisation, diffusion's timesteps): the training stream of
    # random numbers is put back after it, so that when and how often a run validates (or whether a resumed run
    # repeats a validation) never changes the weights it trains
    def on_validation_start(self, trainer, pl_module) -> None:
        self._training_rng = _rng_state() if trainer.state.fn == "fit" else None

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._training_rng is not None:
            _set_rng_state(self._training_rng)
            self._training_rng = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # the data order's position counts trained batches; checkpoint callbacks run after this one
        mark_trained(trainer)

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        # every callback's state is rebuilt from this run's folders before any callback reads it
        # (gensuite.callbacks.checkpoint): a stored path never makes a callback write or delete elsewhere
        run_dir = str((self.config.get("paths") or {}).get("output_dir") or ".")
        dropped = confine_states(checkpoint, trainer.callbacks, run_dir)
        if dropped and trainer.is_global_zero:
            print(
                f"[gensuite] warning: the checkpoint's callback states named {len(dropped)} path(s) outside this run's "
                f"folder, ignored: {'; '.join(dropped[:4])}" + (" ..." if len(dropped) > 4 else ""),
                flush=True,
            )
        # applied when training starts, after the sanity-check validation (which draws noise) has run
        self._pending_rng = checkpoint.get("gensuite_rng")
        # called before the training loader is built: it is built at the saved position
        resume_position(trainer, checkpoint.get("gensuite_data_position"))

    def on_train_start(self, trainer, pl_module) -> None:
        repair_restart_after_last_batch(trainer)
        if self._pending_rng is not None:
            _set_rng_state(self._pending_rng)
            self._pending_rng = None
