"""The run's checkpoints: a resumed run writes and deletes only inside its own folder, and ``last.ckpt`` is always
the state at the end of training.

A checkpoint's callback states are plain data, so ``weights_only=True`` loads them; but Lightning's
`ModelCheckpoint` takes the paths in its state (``last_model_path``, ``best_k_models``...) for files of its own and,
after its next save, deletes the "previous" one recursively. Lightning 2.6.6 trusts those paths when the stored
``dirpath`` equals its own *or is absent*, and guards deletion outside its folder only for the ``file`` protocol
(fsspec's ``local://`` is the same disk under another name, and ``<dir>/../..`` starts with ``<dir>``). So a file
planted in a shared log folder could delete any folder the user can write. `confine_states` rebuilds every
path-valued field of every callback state from the new run's own folders before any callback reads its state;
`RunCheckpoint` also saves ``last.ckpt`` at the last step when its step interval does not divide the run.
"""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint

from gensuite import lightning_compat
from gensuite.errors import ConfigError

#: fields of `ModelCheckpoint`'s state that hold one path, and the one that holds paths as keys
_CHECKPOINT_PATHS = ("best_model_path", "kth_best_model_path", "last_model_path")
_CHECKPOINT_PATH_KEYS = "best_k_models"


def _real(path: str) -> str:
    return os.path.realpath(os.path.abspath(path))


def inside(path: Any, folder: str) -> str | None:
    """``path`` rebuilt as ``<folder>/<its file name>`` if it names a file directly in ``folder``, else None.

    Refused: anything not a plain local path (any ``scheme://``, whatever fsspec alias it names), a ``..`` or
    ``.`` component, a file in another folder (also one reached through a symbolic link), and a name that is itself
    a link or a folder on disk."""
    if not isinstance(path, str) or not path or "://" in path or "\x00" in path:
        return None
    parts = path.replace("\\", "/").split("/")
    if any(p in ("..", ".") for p in parts):
        return None
    name = parts[-1]
    if not name or _real(os.path.dirname(path) or ".") != _real(folder):
        return None
    rebuilt = os.path.join(folder, name)
    if os.path.islink(rebuilt) or os.path.isdir(rebuilt):
        return None
    return rebuilt


def _confine_checkpoint_state(state: dict, dirpath: str) -> list[str]:
    """`ModelCheckpoint`'s state with its paths rebuilt from ``dirpath``; returns what was dropped."""
    dropped = []
    stored_dir = state.get("dirpath")
    same = isinstance(stored_dir, str) and inside(os.path.join(stored_dir, "x"), dirpath) is not None
    if not same:
        # another run's folder (or none stated): Lightning then keeps only best_model_path, which must be ours too
        state["dirpath"] = stored_dir if isinstance(stored_dir, str) and stored_dir != dirpath else "<another folder>"
    else:
        state["dirpath"] = dirpath
    for key in _CHECKPOINT_PATHS:
        if key in state and state[key]:
            rebuilt = inside(state[key], dirpath) if same or key == "best_model_path" else None
            if rebuilt is None:
                dropped.append(f"{key}={state[key]!r}")
            state[key] = rebuilt or ""
    best = state.get(_CHECKPOINT_PATH_KEYS)
    if isinstance(best, dict) or best is not None:
        kept = {}
        for path, score in best.items() if isinstance(best, dict) else []:
            rebuilt = inside(path, dirpath) if same else None
            if rebuilt is None:
                dropped.append(f"{_CHECKPOINT_PATH_KEYS}[{path!r}]")
            else:
                kept[rebuilt] = score
        if not isinstance(best, dict):
            dropped.append(f"{_CHECKPOINT_PATH_KEYS} (not a mapping)")
        state[_CHECKPOINT_PATH_KEYS] = kept
    return dropped


def foreign_paths(checkpoint: dict) -> list[str]:
    """The path-valued fields of a checkpoint's `ModelCheckpoint` states that Lightning itself never writes: a
    missing or odd ``dirpath``, or a path that is not a file name joined to the state's own ``dirpath`` (another
    folder, ``..``, any ``scheme://``). A state Lightning wrote — also another run's, in its own folder — has none;
    a crafted one is refused before training (`gensuite.train.resolve_ckpt_path`)."""
    found = []
    for key, state in (checkpoint.get("callbacks") or {}).items():
        if not str(key).startswith("ModelCheckpoint") or not isinstance(state, dict):
            continue
        folder = state.get("dirpath")
        if not isinstance(folder, str) or "://" in folder or ".." in folder.replace("\\", "/").split("/"):
            found.append(f"{key}: dirpath={folder!r}")
            continue
        best = state.get(_CHECKPOINT_PATH_KEYS) or {}
        paths = [(k, state.get(k)) for k in _CHECKPOINT_PATHS]
        paths += [(f"{_CHECKPOINT_PATH_KEYS}[...]", p) for p in (best if isinstance(best, dict) else {"?": 0})]
        for field, path in paths:
            if path in (None, ""):
                continue
            plain = isinstance(path, str) and "://" not in path and not {".", ".."} & set(path.split("/"))
            if not plain or os.path.dirname(path) != folder.rstrip("/"):
                found.append(f"{key}: {field}={path!r} (dirpath {folder!r})")
    return found


def _looks_like_path_key(key: Any) -> bool:
    k = str(key).lower()
    return k.endswith(("path", "dir", "dirpath", "file", "filename")) or "path" in k


def _confine_other_state(state: Any, folders: list[str], where: str) -> list[str]:
    """Any other callback's state: a text field named like a path must name a file in one of ``folders``."""
    dropped = []
    if isinstance(state, dict):
        for key, value in list(state.items()):
            if isinstance(value, str) and value and _looks_like_path_key(key):
                if not any(inside(value, f) for f in folders):
                    dropped.append(f"{where}.{key}={value!r}")
                    state[key] = ""
            elif isinstance(value, dict):
                dropped += _confine_other_state(value, folders, f"{where}.{key}")
    return dropped


def confine_states(checkpoint: dict, callbacks: list, run_dir: str) -> list[str]:
    """Rebuild every path-valued field of ``checkpoint["callbacks"]`` from this run's folders (``run_dir`` and the
    ``dirpath`` of each checkpoint callback), in place, before any callback loads its state. Returns the fields
    dropped (named for a warning)."""
    states = checkpoint.get("callbacks")
    if not isinstance(states, dict):
        checkpoint["callbacks"] = {}
        return ["callbacks (not a mapping)"] if states is not None else []
    by_key = {cb.state_key: cb for cb in callbacks}
    folders = [run_dir, *(cb.dirpath for cb in callbacks if isinstance(cb, ModelCheckpoint) and cb.dirpath)]
    dropped = []
    for key, state in list(states.items()):
        owner = by_key.get(key)
        if not isinstance(state, dict):
            del states[key]
            dropped.append(f"{key} (not a mapping)")
        elif isinstance(owner, ModelCheckpoint) and owner.dirpath:
            dropped += [f"{key}: {d}" for d in _confine_checkpoint_state(state, owner.dirpath)]
        elif owner is None and str(key).startswith("ModelCheckpoint"):
            del states[key]  # no callback of this run reads it
        else:
            dropped += _confine_other_state(state, folders, str(key))
    return dropped


class RunCheckpoint(ModelCheckpoint):
    """Lightning's `ModelCheckpoint` (same settings, same state key, so older checkpoints resume) that also writes
    ``last.ckpt`` at the end of training when the last step was not saved (``every_n_train_steps=5`` on a
    124-step run: without it ``last.ckpt`` would hold step 120 while the final evaluation measures step 124)."""

    def __init__(self, *args, every_n_train_steps: int | None = None, every_n_epochs: int | None = None, **kwargs):
        if every_n_train_steps and every_n_epochs:
            raise ConfigError(
                f"every_n_train_steps={every_n_train_steps} and every_n_epochs={every_n_epochs}: checkpoints are "
                "written at one kind of interval",
                keys=("every_n_train_steps", "every_n_epochs"),
                fix="set one of them: every_n_train_steps alone turns the epoch interval off by itself",
            )
        super().__init__(*args, every_n_train_steps=every_n_train_steps, every_n_epochs=every_n_epochs, **kwargs)

    @property
    def state_key(self) -> str:
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        # the last epoch's end: after the model's own epoch-end work (the VAE's fitted prior...) and Lightning's
        # own saves at this step, before weight averaging puts its average into the model at train end (the
        # checkpoint then still holds the raw and the averaged weights, as every other one does)
        if _fit_ends(trainer):
            self._save_final(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        super().on_train_end(trainer, pl_module)
        self._save_final(trainer)  # a fit that ended outside an epoch end (its last epoch interrupted otherwise)

    def _save_final(self, trainer) -> None:
        done = lightning_compat.last_saved_step(self) == trainer.global_step
        if self.save_last and not trainer.fast_dev_run and trainer.global_step > 0 and not done:
            lightning_compat.save_last(self, trainer)


def _fit_ends(trainer) -> bool:
    """Whether the epoch just ended ends the fit: a stop was asked for (the training clock's budget, early
    stopping), the step budget is spent, or it was the last epoch."""
    if trainer.should_stop:
        return True
    if trainer.max_steps is not None and trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
        return True
    epochs = trainer.max_epochs
    return epochs is not None and epochs > 0 and trainer.current_epoch + 1 >= epochs
