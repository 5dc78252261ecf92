"""A checkpoint file, before anything is built from it: read with ``torch.load(weights_only=True)`` inside the
limits of the README's "What is safe to load" (size, no compressed records, depth and size of its plain data, the
types of the entries the suite reads), and found: the newest intact ``last.ckpt`` / ``interrupted.ckpt`` of a run.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import torch

from gensuite.errors import CheckpointError

#: the largest checkpoint file read (bytes; ``GENSUITE_MAX_CHECKPOINT_BYTES``): its tensors are read as stored
MAX_CHECKPOINT_BYTES = 8 * 2**30
#: how deep and how large the plain data of a checkpoint (its config, its callback states) may be
MAX_DEPTH, MAX_NODES = 64, 200_000


def max_checkpoint_bytes() -> int:
    raw = os.environ.get("GENSUITE_MAX_CHECKPOINT_BYTES")
    if raw is None:
        return MAX_CHECKPOINT_BYTES
    try:
        return int(float(raw))
    except ValueError:
        raise CheckpointError(
            f"GENSUITE_MAX_CHECKPOINT_BYTES={raw!r} is not a number of bytes",
            fix="e.g. GENSUITE_MAX_CHECKPOINT_BYTES=16e9",
        ) from None


def _check_records(p: Path, path) -> None:
    """A torch checkpoint is a zip of stored (uncompressed) records: refuse any other container, a compressed
    record (torch inflates DEFLATE: 205 kB became 200 MB) and a total past `max_checkpoint_bytes`."""
    limit = max_checkpoint_bytes()
    size = p.stat().st_size
    fix = "only load checkpoints written by `python train.py`; a larger one: GENSUITE_MAX_CHECKPOINT_BYTES=<bytes>"
    if size > limit:
        raise CheckpointError(f"ckpt_path={path} is {size:,} bytes, over the limit of {limit:,}", fix=fix)
    try:
        with zipfile.ZipFile(p) as archive:
            records = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(
            f"ckpt_path={path} cannot be read as a checkpoint archive (torch.save's zip format): {type(err).__name__}",
            fix="the file is corrupt, truncated, of the legacy format, or not a PyTorch checkpoint; use another",
        ) from err
    packed = [r.filename for r in records if r.compress_type != zipfile.ZIP_STORED]
    if packed:
        raise CheckpointError(
            f"ckpt_path={path} holds compressed records ({packed[0]}{' ...' if len(packed) > 1 else ''}); torch.save "
            "writes none, and one compressed record can inflate a small file a thousandfold",
            fix=fix,
        )
    total = sum(r.file_size for r in records)
    if total > limit:
        raise CheckpointError(f"ckpt_path={path} declares {total:,} bytes of records, over {limit:,}", fix=fix)


def _check_plain(node, path, where: str) -> None:
    """Refuse plain data nested past `MAX_DEPTH` or larger than `MAX_NODES` (iteratively: no recursion limit)."""
    stack, count = [(node, 0)], 0
    while stack:
        value, depth = stack.pop()
        count += 1
        if depth > MAX_DEPTH or count > MAX_NODES:
            what = f"nested deeper than {MAX_DEPTH}" if depth > MAX_DEPTH else f"larger than {MAX_NODES:,} entries"
            raise CheckpointError(
                f"ckpt_path={path}: its {where} is {what}", fix="only load files written by the suite"
            )
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend((v, depth + 1) for v in value)


#: sections of a stored config that are mappings whenever they are present
MAPPING_SECTIONS = ("model", "data", "metrics", "trainer", "callbacks", "paths", "logger", "sampling", "sampler")


def _check_structure(ckpt, path) -> None:
    """The shape of a gensuite checkpoint, checked before any of it is used: a clear error, never a traceback."""
    not_ours = CheckpointError(
        f"ckpt_path={path} is not a gensuite checkpoint (no 'gensuite' config entry)",
        fix="use a checkpoint written by `python train.py` (logs/runs/<run>/checkpoints/*.ckpt)",
    )
    if not isinstance(ckpt, dict) or "gensuite" not in ckpt or "state_dict" not in ckpt:
        raise not_ours

    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"ckpt_path={path}: {what}", fix="the file was edited or is damaged; use another")

    meta = ckpt["gensuite"]
    if not isinstance(meta, dict):
        raise bad(f"its 'gensuite' entry is a {type(meta).__name__}, not a mapping")
    _check_plain(meta, path, "stored config")
    _check_plain(ckpt.get("callbacks"), path, "callback states")
    if not isinstance(meta.get("config"), dict):
        raise bad("its stored config is missing or not a mapping")
    if not isinstance(meta.get("family"), (str, type(None))):
        raise bad(f"its family is a {type(meta['family']).__name__}, not a name")
    for section in MAPPING_SECTIONS:
        value = meta["config"].get(section)
        if value is not None and not isinstance(value, dict):
            raise bad(f"its stored config's '{section}' is a {type(value).__name__}, not a mapping")
    for key in ("state_dict", "current_model_state"):
        weights = ckpt.get(key)
        if key not in ckpt and key != "state_dict":
            continue
        if not isinstance(weights, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()
        ):
            raise bad(f"its '{key}' is not a mapping of names to tensors")
    for key in ("callbacks", "optimizer_states", "lr_schedulers", "loops", "gensuite_rng"):
        value = ckpt.get(key)
        if value is not None and not isinstance(value, dict if key in ("callbacks", "loops", "gensuite_rng") else list):
            raise bad(f"its '{key}' is a {type(value).__name__}")


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint file with ``weights_only=True``; a clear error if it is missing, corrupt, too large, of
    the wrong shape or not ours (see "What is safe to load" in the README for every limit)."""
    p = Path(os.path.expanduser(str(path)))
    if not p.is_file():
        raise CheckpointError(
            f"ckpt_path={path}: no such file",
            fix="give the path of a .ckpt file (e.g. logs/runs/.../last.ckpt)",
        )
    _check_records(p, path)
    try:
        # mmap: the tensors stay in the file's pages until used (no second copy of a large checkpoint)
        ckpt = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:
        raise CheckpointError(
            f"ckpt_path={path} cannot be read as a checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:160] if str(err) else ''})",
            fix="the file is corrupt, truncated or not a PyTorch checkpoint; use another (last.ckpt or best)",
        ) from err
    _check_structure(ckpt, path)
    return ckpt


RESUMABLE = ("last.ckpt", "interrupted.ckpt")


def _intact(path: Path) -> bool:
    try:
        read_checkpoint(path)
    except CheckpointError:
        return False
    return True


def _newest_intact(candidates: list[Path]) -> Path | None:
    """The newest readable, complete checkpoint of ``candidates``; a warning names any newer one that is not."""
    broken = []
    for path in sorted(set(candidates), key=lambda p: p.stat().st_mtime, reverse=True):
        if _intact(path):
            if broken:
                print(
                    f"[gensuite] warning: {broken[0]} cannot be read (truncated or corrupt); resuming from the newest "
                    f"intact checkpoint instead: {path}",
                    flush=True,
                )
            return path
        broken.append(path)
    return None


def find_last_checkpoint(
    output_dir: str | os.PathLike, log_dir: str | os.PathLike, run_group: str | None, required: bool = True
) -> Path | None:
    """``ckpt_path=last``: the newest intact checkpoint of this run folder (``last.ckpt``, ``interrupted.ckpt``
    written on SIGTERM, or any other of its checkpoints when those are damaged), else the newest intact
    ``last.ckpt`` / ``interrupted.ckpt`` of an earlier run of the same ``run_name`` (model and data) under
    ``<log_dir>/runs``."""
    own_dir = Path(output_dir) / "checkpoints"
    own = sorted(own_dir.glob("*.ckpt")) if own_dir.is_dir() else []
    found = _newest_intact(own)
    if found is not None:
        return found
    root = Path(log_dir) / "runs"
    others: list[Path] = []
    if root.is_dir():
        for name in RESUMABLE:
            others += root.glob(f"{run_group}/*/checkpoints/{name}" if run_group else f"**/checkpoints/{name}")
    found = _newest_intact(others)
    if found is None and required:
        raise CheckpointError(
            f"ckpt_path=last: no intact last.ckpt under {root}/{run_group or ''} to resume from"
            + (f" ({len(own) + len(others)} found, none readable)" if own or others else ""),
            fix="train once first, or give the file: ckpt_path=logs/runs/<run>/checkpoints/last.ckpt",
        )
    return found
