"""Writes what a checkpoint needs beyond Lightning's own state: the composed config and the RNG states."""

from __future__ import annotations

import random

import lightning as L
import numpy as np
import torch


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

    With the RNG restored, a run resumed from an epoch-end checkpoint draws the same shuffles and noise as an
    uninterrupted run would.
    """

    def __init__(self, config: dict):
        self.config = config
        self._pending_rng: dict | None = None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["gensuite"] = {
            "config": self.config,
            "family": getattr(pl_module, "family", None),
            "format": 1,
        }
        checkpoint["gensuite_rng"] = _rng_state()

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        # applied when training starts, after the sanity-check validation (which draws noise) has run
        self._pending_rng = checkpoint.get("gensuite_rng")

    def on_train_start(self, trainer, pl_module) -> None:
        if self._pending_rng is not None:
            _set_rng_state(self._pending_rng)
            self._pending_rng = None
