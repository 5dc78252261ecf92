"""Checkpoint files written atomically in their own folder, so that a kill never leaves a truncated ``last.ckpt``.

Lightning's `TorchCheckpointIO` writes through an fsspec transaction whose temporary file lives in the system's
temporary directory; when that is another filesystem than the run (node-local ``/tmp``, runs on shared storage),
the final step is a copy, and a kill during it leaves a truncated file and a leaked temporary one. Here the
temporary file is created beside the target, flushed and fsynced, then `os.replace`d over it (atomic on POSIX
within one filesystem), and the folder is fsynced so the rename survives a crash. Any failure removes the
temporary file; a full disk says so and leaves the previous checkpoint intact.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from gensuite.errors import CheckpointError

TMP_SUFFIX = ".ckpt-tmp"


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)``, all or nothing."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # the writer's pid is in the name, so a later run removes only the leftovers of dead writers
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=TMP_SUFFIX, dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CheckpointError(
                f"the disk is full: cannot write the checkpoint {target} ({err.strerror}); the previous checkpoint "
                "is intact",
                fix="free space on that filesystem (or point paths.log_dir elsewhere), then resume: ckpt_path=last",
            ) from err
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Temporary files that a killed save left in ``folder`` (kill -9 runs no cleanup), of writers no longer
    alive on this host: removed, and returned."""
    found = []
    for p in sorted(Path(folder).glob(f".*{TMP_SUFFIX}")) if Path(folder).is_dir() else []:
        parts = p.name.split(".")
        pid = int(parts[-3]) if len(parts) >= 4 and parts[-3].isdigit() else None
        if pid is None or not _alive(pid):
            p.unlink(missing_ok=True)
            found.append(p)
    return found


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with `atomic_save` (loading is Lightning's, ``weights_only`` as the trainer asks).

    ``roots``: the folders this run owns (its run folder, its checkpoint folders). Removing a checkpoint (an
    older top-k or ``last.ckpt``) unlinks one regular file inside one of them and nothing else: no other
    filesystem protocol, no folder, no link, never recursively — Lightning's own removal is a recursive ``rm`` of
    whatever path its callback state holds."""

    def __init__(self, roots: list[str | os.PathLike] | None = None):
        super().__init__()
        self.roots = [os.path.realpath(r) for r in roots or []]

    def remove_checkpoint(self, path) -> None:
        text = str(path)
        real = os.path.realpath(text)
        owned = "://" not in text and any(os.path.dirname(real) == r or real.startswith(r + os.sep) for r in self.roots)
        if not owned or os.path.islink(text) or not os.path.isfile(text):
            print(f"[gensuite] warning: not removing {text}: not a checkpoint file in this run's folders", flush=True)
            return
        os.unlink(text)

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("storage_options are not supported by AtomicCheckpointIO")
        atomic_save(checkpoint, path)
