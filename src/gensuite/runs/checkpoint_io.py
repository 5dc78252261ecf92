"""Checkpoint files written atomically in their own folder, so that a kill never leaves a truncated ``last.ckpt``.

Lightning's `TorchCheckpointIO` writes through an fsspec transaction whose temporary file lives in the system's
temporary directory; when that is another filesystem than the run (node-local ``/tmp``, runs on shared storage),
the final step is a copy, and a kill during it leaves a truncated file and a leaked temporary one. Here the
temporary file is created beside the target, flushed and fsynced, then `os.replace`d over it (atomic on POSIX
within one filesystem), and the folder is fsynced so the rename survives a crash. Any failure removes the
temporary file; a full disk says so and leaves the previous checkpoint intact. A symbolic link standing at the
checkpoint's name (or at ``checkpoints/`` in the run folder) is refused, not replaced (`gensuite.safe_files`).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from gensuite.errors import CheckpointError
from gensuite.safe_files import atomic_writer

TMP_SUFFIX = ".ckpt-tmp"


def atomic_save(obj: Any, path: str | os.PathLike, root: str | os.PathLike | None = None) -> None:
    """``torch.save(obj, path)``, all or nothing; a link at ``path`` (or at a folder of it below ``root``, the
    run folder) is a `ConfigError` naming it."""
    target = Path(path)
    try:
        # private (0o600) as before; the writer's pid is in the temporary's name, so a later run removes only
        # the leftovers of dead writers (remove_stale_temporaries)
        with atomic_writer(target, "hydra.run.dir", root, private=True, suffix=TMP_SUFFIX) as f:
            torch.save(obj, f)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CheckpointError(
                f"the disk is full: cannot write the checkpoint {target} ({err.strerror}); the previous checkpoint "
                "is intact",
                fix="free space on that filesystem (or point paths.log_dir elsewhere), then resume: ckpt_path=last",
            ) from err
        raise


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

    ``root``: the run folder, below which no folder of a checkpoint may be a link. ``roots``: the folders this run
    owns (its run folder, its checkpoint folders). Removing a checkpoint (an older top-k or ``last.ckpt``) unlinks
    one regular file inside one of them and nothing else: no other filesystem protocol, no folder, no link, never
    recursively — Lightning's own removal is a recursive ``rm`` of whatever path its callback state holds."""

    def __init__(self, root: str | os.PathLike | None = None, roots: list[str | os.PathLike] | None = None):
        super().__init__()
        self.root = root
        self.roots = [os.path.realpath(r) for r in ([root] if root else []) + list(roots or [])]

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
        atomic_save(checkpoint, path, self.root)
