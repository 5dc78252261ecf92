"""One run per folder: a lock file, ``<run folder>/.gensuite.lock``, held by the process that trains into it.

Two trainings started into one ``hydra.run.dir`` used to both exit 0 and leave a mix of their files. The first
now holds the lock; the second stops with a `ConfigError` (exit 2) naming the holder.

- The lock is ``fcntl.flock`` on the file: the kernel drops it when the holder dies, even by ``kill -9``, so
  a dead run never blocks the folder and two processes can never both hold it (no pid guessing, no race). The
  file also holds the holder's pid, host and start time, for the message.
- A clean end (return, error, SIGTERM -> SystemExit) removes the file (`release_all`, also run at exit). A
  file still there with nobody holding its flock was left by a killed run: the next run takes it over and says so
  in one line.
- Only the global rank 0 takes it: Lightning's DDP relaunch starts ranks > 0 of the same run into rank 0's folder
  (with ``LOCAL_RANK`` / ``NODE_RANK`` set), torchrun sets ``RANK``, srun ``SLURM_PROCID``.
- Re-entrant within a process: the Hydra callback (`gensuite.cli.hydra_hooks.OutputDirCheck`) takes it before
  Hydra writes ``.hydra/`` and ``train.log`` into the folder, then `gensuite.train.prepare_output_dir` finds it
  already held.
- Never through a link: the file is created with ``O_CREAT | O_EXCL`` or opened with ``O_NOFOLLOW``; a link
  planted at its name is a `ConfigError` and is left as found (`gensuite.safe_files.open_new_or_own`).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import functools
import json
import os
import socket
import time
import warnings
from datetime import datetime
from pathlib import Path

from gensuite.errors import ConfigError
from gensuite.safe_files import open_new_or_own

LOCK_NAME = ".gensuite.lock"
# after a kill -9, forked DataLoader workers share the dead holder's open file (and its flock) until they notice
# their parent is gone (PyTorch checks every 5 s): wait that long before calling the folder busy
ORPHAN_WAIT_S = 12.0
_RANK_VARS = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK")
_held: dict[str, int] = {}  # lock file path -> open fd holding its flock


def is_global_rank_zero() -> bool:
    """True unless a launcher marked this process as a rank > 0 (any of the usual rank variables non-zero)."""
    return all(os.environ.get(var, "0") in ("", "0") for var in _RANK_VARS)


def _info() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": datetime.now().isoformat(timespec="seconds")}


def _read(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 4096).decode(errors="replace").strip()
        return json.loads(text) if text else {}
    except (OSError, ValueError):
        return {"pid": "?", "host": "?"}  # unreadable or half-written: still somebody's lock


def _alive_here(info: dict) -> bool:
    """Whether the recorded holder is a live process on this host (unknown hosts count as alive)."""
    if info.get("host") != socket.gethostname() or not isinstance(info.get("pid"), int):
        return True
    try:
        os.kill(info["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # somebody else's live process
        return True
    return True


def _busy(folder: Path, info: dict) -> ConfigError:
    return ConfigError(
        f"the run folder {folder} is in use by another training (pid {info.get('pid', '?')} on host "
        f"{info.get('host', '?')}, started {info.get('started', '?')}); two runs in one folder would mix their "
        "config, checkpoints and logs",
        fix="train into another folder (hydra.run.dir=<another dir>), or wait until that run ends and then "
        "resume it here with ckpt_path=last",
    )


def hold_run_folder(folder: str | os.PathLike) -> None:
    """Take the lock of ``folder`` (which exists) for this process; `ConfigError` if another live run holds it.

    Nothing for ranks > 0, and nothing if this process holds it already."""
    if not is_global_rank_zero():
        return
    folder = Path(folder).resolve()
    path = folder / LOCK_NAME
    if str(path) in _held:
        return
    deadline = time.monotonic() + ORPHAN_WAIT_S
    while True:
        fd = _open(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            # the holder is dead (its orphaned workers hold the flock for a moment), or has not written its
            # pid yet: look again shortly
            if (not holder or not _alive_here(holder)) and time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            raise _busy(folder, holder) from None
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            return _hold_without_flock(folder, path)
        try:  # a holder that released meanwhile unlinked this file: lock the one now at the path instead
            same = os.path.samestat(os.fstat(fd), os.lstat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    previous = _read(fd)
    _write(fd)
    _held[str(path)] = fd
    if previous:
        print(
            f"[gensuite] warning: took over the lock of {folder} left by pid {previous.get('pid', '?')} on "
            f"{previous.get('host', '?')} (started {previous.get('started', '?')}), which ended without "
            "releasing it (killed?)",
            flush=True,
        )


def _open(path: Path) -> int:
    """The lock file's fd, never through a link (not inherited by exec'd children: O_CLOEXEC)."""
    return open_new_or_own(path, "hydra.run.dir", "the run-folder lock")


def _write(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(_info()) + "\n").encode())
    os.fsync(fd)


def _hold_without_flock(folder: Path, path: Path) -> None:
    """A filesystem without flock (e.g. Lustre mounted without ``-o flock``): judge by the recorded pid. This
    catches a live run on this host but is not race-free, and a run on another host always counts as alive."""
    fd = _open(path)
    holder = _read(fd)
    if holder and holder.get("pid") != os.getpid() and _alive_here(holder):
        os.close(fd)
        raise _busy(folder, holder)
    warnings.warn(f"no flock on the filesystem of {folder}: the run-folder lock only checks the pid", stacklevel=3)
    _write(fd)
    _held[str(path)] = fd


def release_all() -> None:
    """Remove and unlock every lock this process holds (a process trains one run at a time)."""
    for path, fd in list(_held.items()):
        del _held[path]
        with contextlib.suppress(OSError):  # unlink before unlocking: a waiting taker sees its file is gone
            if os.path.samestat(os.fstat(fd), os.lstat(path)):  # only our file: never what replaced it
                os.unlink(path)
        with contextlib.suppress(OSError):  # (not flock'ed without flock support)
            fcntl.flock(fd, fcntl.LOCK_UN)  # also for forked DataLoader workers sharing this open file
        os.close(fd)


atexit.register(release_all)


def releases_run_folder(fn):
    """Decorator of `gensuite.train.train`: the run folder's lock is released when the run ends, however."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        finally:
            release_all()

    return run
