"""Files the suite writes never follow a link that someone planted where an output goes.

A run folder or a sample bundle may be shared; a symbolic link left at an output's name (``metrics.json ->
~/.bashrc``, ``checkpoints -> /elsewhere``) would make a plain ``open(path, "w")`` write through it. So:

- Every output is written into a temporary file created beside it (``mkstemp``: ``O_CREAT | O_EXCL``, never
  through a link) and renamed over the name with `os.replace` (`atomic_writer`, `write_bytes_atomic`,
  `write_text_atomic`). A reader sees the old file or the whole new one, never half of it.
- Before that, a link at the name, or at a folder between the folder the user chose (``root``) and the name, is a
  `ConfigError` naming the link and where it points (`refuse_link`). The link is left as found: removing it would
  hide what happened, and `os.replace` would silently replace it.
- A training's run folder is checked before anything is written into it, Hydra's ``.hydra/`` and ``train.log``
  included (`check_run_folder`, over `RUN_FOLDER_NAMES`).
- Write probes use a fresh name opened with ``O_CREAT | O_EXCL | O_NOFOLLOW`` (`probe_writable`).

The folder the user names (``hydra.run.dir``, the folder of ``ckpt_path=``) may itself be reached through links
they made (``/work -> /mnt/work``): only links at and below it are refused.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from gensuite.errors import ConfigError

TMP_SUFFIX = ".tmp"
PROBE_NAME = ".write-test"

# What the suite and its libraries write into a training's run folder (relative names), checked before the
# first write: Hydra (.hydra/, train.log), gensuite.runs.lock, gensuite.train, the Evaluation callback, Lightning's
# ModelCheckpoint and loggers. The one list; `check_run_folder` also refuses links matching RUN_FOLDER_PATTERNS.
RUN_FOLDER_NAMES = (
    ".hydra",
    ".hydra/config.yaml",
    ".hydra/hydra.yaml",
    ".hydra/overrides.yaml",
    "train.log",
    ".gensuite.lock",
    PROBE_NAME,  # the probe's name before it took a unique one: a link there was planted
    "metrics.json",
    "samples.png",
    "samples.txt",
    "nearest_training_images.png",
    "checkpoints",
    "checkpoints/last.ckpt",
    "checkpoints/interrupted.ckpt",
    "tensorboard",
    "tensorboard/hparams.yaml",
    "csv",
    "csv/metrics.csv",
    "csv/hparams.yaml",
)
# the names that vary (a family's picture panels, eval.py's and sample.py's outputs, the best checkpoints, the
# TensorBoard event files): anything in the folders that the suite and its libraries own
RUN_FOLDER_PATTERNS = ("*.png", "*.txt", "*.json", "*.npz", ".hydra/*", "checkpoints/*", "tensorboard/*", "csv/*")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()  # once, at import: os.umask is process-wide and not thread-safe to read later


def _points_to(link: Path) -> str:
    try:
        return os.readlink(link)
    except OSError:
        return "?"


def find_link(path: str | os.PathLike, root: str | os.PathLike | None = None) -> Path | None:
    """The first symbolic link among ``path`` and its folders below ``root`` (outermost first), or None.

    Paths are compared lexically (``os.path.abspath``, no resolving), so ``root`` itself and the folders above it
    may be links."""
    target = Path(os.path.abspath(path))
    chain = [target]
    if root is not None:
        top = Path(os.path.abspath(root))
        if top in target.parents:
            for parent in target.parents:
                if parent == top:
                    break
                chain.append(parent)
    for p in reversed(chain):
        if p.is_symlink():
            return p
    return None


def link_error(link: Path, setting: str | None = None, what: str | None = None) -> ConfigError:
    """The one-screen error for a link found where an output goes (the link is left as found)."""
    elsewhere = f"write elsewhere: {setting}=<another path>" if setting else "write elsewhere"
    return ConfigError(
        f"{link} is a symbolic link (to {_points_to(link)}) where {what or 'an output'} is written; gensuite "
        "does not write through a link (it could overwrite a file elsewhere) and has left it as found",
        fix=f"remove the link (rm {link}) after checking who made it, or {elsewhere}",
    )


def refuse_link(
    path: str | os.PathLike,
    setting: str | None = None,
    root: str | os.PathLike | None = None,
    what: str | None = None,
) -> None:
    """`ConfigError` if ``path``, or a folder of it below ``root``, is a symbolic link. ``setting``: the option
    that chooses the place (``out``, ``hydra.run.dir``), for the fix."""
    link = find_link(path, root)
    if link is not None:
        raise link_error(link, setting, what)


def check_run_folder(folder: str | os.PathLike, setting: str = "hydra.run.dir") -> None:
    """Refuse a run folder that is a link, or that holds a link where the suite or its libraries will write."""
    folder = Path(os.path.abspath(folder))
    if folder.is_symlink():
        raise link_error(folder, setting, "the run folder")
    if not folder.is_dir():
        return
    found = [folder / name for name in RUN_FOLDER_NAMES]
    for pattern in RUN_FOLDER_PATTERNS:
        found += sorted(folder.glob(pattern))
    for path in found:
        link = find_link(path, folder)
        if link is not None:
            raise link_error(link, setting, f"the run's {link.relative_to(folder)}")


@contextlib.contextmanager
def atomic_writer(
    path: str | os.PathLike,
    setting: str | None = None,
    root: str | os.PathLike | None = None,
    *,
    durable: bool = True,
    private: bool = False,
    suffix: str = TMP_SUFFIX,
) -> Iterator[BinaryIO]:
    """``with atomic_writer(path) as f: f.write(...)``: a binary file object of a temporary file beside ``path``,
    renamed over ``path`` when the block ends (after ``fsync`` with ``durable``); removed if the block raises.

    A link at ``path`` (or a folder of it below ``root``) is refused before and again just before the rename.
    The file gets the permissions a plain ``open`` would (``0o666`` less the umask), ``0o600`` with ``private``.
    """
    target = Path(path)
    refuse_link(target, setting, root)
    target.parent.mkdir(parents=True, exist_ok=True)
    refuse_link(target, setting, root)  # mkdir followed no link below root, but one may stand there now
    # the writer's pid is in the name, so that leftovers of killed writers can be told apart
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=suffix, dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        if not private:
            os.chmod(tmp, 0o666 & ~_UMASK)
        refuse_link(target, setting, root)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:  # the rename itself survives a crash
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def write_bytes_atomic(
    path: str | os.PathLike, data: bytes, setting: str | None = None, root: str | os.PathLike | None = None
) -> Path:
    """``Path(path).write_bytes(data)``, all or nothing and never through a link (see `atomic_writer`)."""
    with atomic_writer(path, setting, root) as f:
        f.write(data)
    return Path(path)


def write_text_atomic(
    path: str | os.PathLike, text: str, setting: str | None = None, root: str | os.PathLike | None = None
) -> Path:
    """``Path(path).write_text(text)`` (UTF-8), all or nothing and never through a link."""
    return write_bytes_atomic(path, text.encode("utf-8"), setting, root)


def open_new_or_own(path: str | os.PathLike, setting: str | None = None, what: str | None = None) -> int:
    """A read-write fd of the regular file at ``path``, created if absent (``O_CREAT | O_EXCL``), never through a
    link (``O_NOFOLLOW``): a link there, or a file that is not a plain file of one name (a FIFO, a hard link to a
    file elsewhere), is a `ConfigError`. For files the suite keeps open and rewrites in place (the run lock)."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(10):
        try:
            return os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            pass
        try:
            fd = os.open(path, flags | os.O_NONBLOCK)
        except FileNotFoundError:  # removed in between: create it again
            continue
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise link_error(Path(os.path.abspath(path)), setting, what) from None
            raise
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            os.close(fd)
            kind = "a hard link to another file" if stat.S_ISREG(st.st_mode) else "not a plain file"
            raise ConfigError(
                f"{path} is {kind} where {what or 'an output'} is written; gensuite does not write into it",
                fix=f"remove it (rm {path}) after checking who made it"
                + (f", or write elsewhere: {setting}=<another path>" if setting else ""),
            )
        os.set_blocking(fd, True)
        return fd
    raise FileExistsError(errno.EEXIST, "created and removed repeatedly", str(path))


def probe_writable(folder: str | os.PathLike) -> None:
    """Create and remove a file of a fresh name in ``folder`` (``O_CREAT | O_EXCL | O_NOFOLLOW``: never another's
    file, never through a link); the `OSError` if that cannot be done."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(10):
        probe = Path(folder) / f"{PROBE_NAME}.{os.getpid()}.{secrets.token_hex(4)}"
        try:
            fd = os.open(probe, flags, 0o600)
        except FileExistsError:  # somebody's file of that name: leave it, take another name
            continue
        try:
            os.write(fd, b"ok")
        finally:
            os.close(fd)
            os.unlink(probe)
        return
    raise FileExistsError(errno.EEXIST, "no fresh probe name", str(folder))
