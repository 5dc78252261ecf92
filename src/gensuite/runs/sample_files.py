"""Samples in and out: the files ``sample.py format=npz|png`` writes and ``eval.py samples=`` reads.

Written: uint8 ``(N, H, W, C)`` under the key ``samples`` of an ``.npz`` (the layout ADM's and clean-fid's tools
read), with int64 ``labels`` ``(N,)`` when the model is conditional; or a folder of numbered PNGs (and
``labels.csv``). Read: an ``.npz`` (key ``samples``, else its only array), an ``.npy``, or a folder of images.

A sample file is untrusted input: arrays are read with ``np.load(allow_pickle=False)`` only, so no pickled object
is ever built from one. Everything that can be wrong with the contents (layout, dtype, range, size, count) is a
`DataError` naming what was found, what was expected and the fix.
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from gensuite.data.images import IMAGE_EXTENSIONS
from gensuite.data.limits import (
    MAX_SAMPLE_BYTES,
    bomb_error,
    check_file_count,
    open_image,
    pil_guard,
)
from gensuite.errors import DataError
from gensuite.runs.arrays import (  # the format's vocabulary lives with its reader
    EXPECTED,
    LABELS_KEY,
    LAYOUTS,
    SAMPLES_KEY,
    SAVE_HINT,
    ZIP_MAGIC,
    npz_members,
    read_array,
    read_npy,
    unreadable,
)
from gensuite.safe_files import atomic_writer, refuse_link, write_text_atomic

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as PIL's convert("L") and the data modules' own grey conversion


# -- out -------------------------------------------------------------------------------------------------------
def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Float ``(N, C, H, W)`` in [0, 1] -> uint8 ``(N, H, W, C)``, rounded exactly as torchvision's ``save_image``
    rounds a grid, so the raw samples and the PNG grid of the same draw hold the same pixel values."""
    x = images.detach().float().mul(255).add(0.5).clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def write_npz(path: Path, samples: np.ndarray, labels: np.ndarray | None = None, root: Path | None = None) -> Path:
    """``samples`` (and ``labels``) into ``path``, written beside it first and renamed (never a half file), never
    through a link at ``path`` or at a folder of it below ``root`` (`gensuite.safe_files`)."""
    arrays = {SAMPLES_KEY: samples} if labels is None else {SAMPLES_KEY: samples, LABELS_KEY: labels}
    with atomic_writer(path, "out", root) as f:  # a file object: np.savez would append .npz to a name without it
        np.savez(f, **arrays)
    return path


def write_png_folder(
    folder: Path, samples: np.ndarray, labels: np.ndarray | None = None, root: Path | None = None
) -> Path:
    """One PNG per sample, ``00000.png`` ... (sorted = drawn order), and ``labels.csv`` when there are labels; each
    file written atomically, none through a link (at the folder, below ``root``, or at a file's name)."""
    import io

    from PIL import Image

    refuse_link(folder, "out", root, "the samples")
    folder.mkdir(parents=True, exist_ok=True)
    width = max(5, len(str(len(samples) - 1)))
    names = [f"{i:0{width}d}.png" for i in range(len(samples))]
    for name, image in zip(names, samples, strict=True):
        buffer = io.BytesIO()
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="png")
        # not fsynced one by one (a folder of 50,000 files); each is still whole or absent
        with atomic_writer(folder / name, "out", root or folder, durable=False) as f:
            f.write(buffer.getvalue())
    if labels is not None:
        rows = [f"{name},{int(y)}" for name, y in zip(names, labels, strict=True)]
        write_text_atomic(folder / "labels.csv", "file,label\n" + "\n".join(rows) + "\n", "out", root or folder)
    return folder


# -- in --------------------------------------------------------------------------------------------------------
def read_samples(path: str | os.PathLike, channels: int) -> tuple[np.ndarray, str]:
    """The raw array behind ``samples=path`` and a description of where it came from (for messages). A folder's
    images are converted to ``channels`` (grey or RGB) as they are decoded."""
    p = Path(os.path.expanduser(str(path)))
    if p.is_dir():
        return read_folder(p, channels), f"samples={p}"
    if not p.exists():
        raise DataError(
            f"samples={path}: no such file or folder",
            fix="give an .npz or .npy file of samples or a folder of images "
            "(python sample.py ckpt_path=... format=npz writes one)",
        )
    if p.suffix.lower() not in (".npz", ".npy"):
        raise DataError(
            f"samples={path}: expected an .npz or .npy array or a folder of images, got a '{p.suffix}' file",
            fix=f"save the images as an array: {SAVE_HINT}",
        )
    return read_array(p)


def read_labels(path: str | os.PathLike) -> np.ndarray | None:
    """The int64 ``labels`` stored beside the samples of an ``.npz`` (as ``sample.py`` writes them), else None.
    Checked as `read_array` checks the samples: integers, one axis, within the limits."""
    p = Path(os.path.expanduser(str(path)))
    if p.suffix.lower() != ".npz" or not p.is_file():
        return None
    try:
        with open(p, "rb") as f:
            if not f.read(4).startswith(ZIP_MAGIC):
                return None
        with npz_members(p) as (zf, members):
            if LABELS_KEY not in members:
                return None
            source = f"samples={p} (key '{LABELS_KEY}')"
            with zf.open(members[LABELS_KEY]) as stream:
                labels = read_npy(stream, members[LABELS_KEY].file_size, source, "labels")
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise unreadable(p, err) from None
    return labels.astype(np.int64)


def read_folder(folder: Path, channels: int) -> np.ndarray:
    """The images directly in ``folder`` (sorted by name; other files are ignored), uint8 ``(N, H, W)`` (grey)
    or ``(N, H, W, 3)``; every image must have the same size. Bounded (`gensuite.data.limits`): the number of
    files, each image's pixels (from its header, before it is decoded) and the decoded array's bytes."""
    from PIL import UnidentifiedImageError

    files = []
    for seen, f in enumerate(folder.iterdir(), 1):
        check_file_count(seen, f"samples={folder}", "score a folder of fewer files")
        if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_EXTENSIONS:
            files.append(f)
    files.sort()
    if not files:
        raise DataError(
            f"samples={folder}: the folder holds no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})",
            fix="point samples= at a folder of images (python sample.py ckpt_path=... format=png writes one), "
            "or at an .npz / .npy file",
        )
    bombs, out = pil_guard(), None
    for k, f in enumerate(files):
        try:
            with open_image(f, "remove or replace that file") as im:
                w, h = im.size
                if out is None:
                    out = allocate(folder, len(files), h, w, channels)
                elif (h, w) != out.shape[1:3]:
                    (h0, w0) = out.shape[1:3]
                    raise DataError(
                        f"samples={folder}: {f.name} is {w}x{h} pixels but {files[0].name} is {w0}x{h0}: all the "
                        "samples must have the same size",
                        fix="remove the odd files, or resize every sample to the data's image size",
                    )
                out[k] = np.asarray(im.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
        except bombs as err:
            raise bomb_error(f, err, "remove or replace that file") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise DataError(
                f"samples={folder}: cannot read the image file {f.name} ({type(err).__name__}: {err})",
                fix="remove or replace that file",
            ) from None
    return out


def allocate(folder: Path, n: int, h: int, w: int, channels: int) -> np.ndarray:
    """The uint8 array for ``n`` decoded ``h`` x ``w`` images, refused past `MAX_SAMPLE_BYTES` before decoding."""
    shape = (n, h, w) if channels == 1 else (n, h, w, 3)
    nbytes = math.prod(shape)
    if nbytes > MAX_SAMPLE_BYTES.value():
        raise DataError(
            f"samples={folder}: {n:,} images of {w}x{h} pixels decode to {MAX_SAMPLE_BYTES.show(nbytes)}, "
            f"{MAX_SAMPLE_BYTES.past()}",
            fix=MAX_SAMPLE_BYTES.fix(nbytes, "score fewer or smaller images"),
        )
    return np.empty(shape, dtype=np.uint8)


def as_images(
    array: np.ndarray, channels: int, image_size: int, source: str, data_name: str = "the data"
) -> tuple[torch.Tensor, list[str]]:
    """A raw sample array -> float ``(N, channels, image_size, image_size)`` in [0, 1] (what the evaluator takes),
    and notes on what was converted. Refuses (`DataError`) any layout, dtype, range or size it cannot take as is."""
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "uif":
        kind = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
        raise DataError(f"{source}: samples must be numbers, got {kind}", fix=f"give {EXPECTED}")
    if array.dtype.kind == "u" and array.dtype.itemsize > 1:  # torch has no min/max of uint16/32/64
        hi = int(array.max()) if array.size else 0
        if hi > 255:
            raise DataError(
                f"{source}: integer samples must be 8-bit values 0..255, found values up to {hi}",
                fix=f"give {EXPECTED}",
            )
        array = array.astype(np.uint8)
    x = nchw(array, image_size, source)
    n, c, h, w = x.shape
    if (h, w) != (image_size, image_size):
        raise DataError(
            f"{source}: the samples are {h}x{w} pixels but {data_name} has {image_size}x{image_size} images",
            fix=f"resize the samples to {image_size}x{image_size}, or score them against data resized to theirs "
            f"(data.image_size={h}; the reference and its feature classifier then follow)",
        )
    x = in_unit_range(x, source)
    notes = []
    if c != channels:
        x = x.expand(-1, channels, -1, -1) if c == 1 else (x * torch.tensor(LUMA).view(1, 3, 1, 1)).sum(1, True)
        notes.append(
            f"{source}: {'grey' if c == 1 else 'RGB'} samples converted to {channels} channel(s) "
            f"({'copied' if c == 1 else 'ITU-R 601 luma'}) to match {data_name}"
        )
    return x.contiguous(), notes


def nchw(array: np.ndarray, image_size: int, source: str) -> torch.Tensor:
    """``(N, H, W, C)``, ``(N, C, H, W)`` or ``(N, H, W)`` -> a tensor ``(N, C, H, W)`` of the same dtype. Where
    both 4-D layouts would fit (C = 1 or 3 on axis 1 and on axis 3), the one with ``image_size`` pixels wins."""
    shape = array.shape
    if array.ndim == 3:
        return torch.from_numpy(np.ascontiguousarray(array))[:, None]
    if array.ndim != 4 or (shape[3] not in (1, 3) and shape[1] not in (1, 3)):
        raise DataError(
            f"{source} has shape {shape}: expected {LAYOUTS} (1 channel: grey, 3: RGB)",
            fix=f"save the images as one array of {LAYOUTS}: {SAVE_HINT}",
        )
    layouts = [name for name, axis in (("nhwc", 3), ("nchw", 1)) if shape[axis] in (1, 3)]
    spatial = {"nhwc": shape[1:3], "nchw": shape[2:4]}
    layouts = [name for name in layouts if tuple(spatial[name]) == (image_size, image_size)] or layouts
    x = torch.from_numpy(np.ascontiguousarray(array))
    return x.permute(0, 3, 1, 2) if layouts[0] == "nhwc" else x


def in_unit_range(x: torch.Tensor, source: str) -> torch.Tensor:
    """uint8 (or other integers in 0..255) / 255, or floats already in [0, 1], as float32."""
    if x.dtype.is_floating_point:
        if not bool(torch.isfinite(x).all()):
            raise DataError(f"{source}: the samples hold NaN or infinite values", fix=f"give {EXPECTED}")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 1:
            raise DataError(
                f"{source}: float samples must be in [0, 1], found values in [{lo:.4g}, {hi:.4g}]",
                fix="values 0..255: save x.round().astype(np.uint8) (or x / 255); values in [-1, 1]: save (x + 1) / 2",
            )
        return x.float()
    if x.dtype != torch.uint8:
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi > 255:
            raise DataError(
                f"{source}: integer samples must be 8-bit values 0..255, found values in [{lo}, {hi}]",
                fix=f"give {EXPECTED}",
            )
    return x.float().div_(255)


def count_notes(n: int, kid_subset_size: int, n_samples: int, source: str) -> list[str]:
    """Refuse fewer than 2 samples; notes where the count makes the numbers differ from a checkpoint's."""
    if n < 2:
        raise DataError(
            f"{source} holds {n} sample(s): FID and KID need at least 2",
            fix=f"give at least metrics.kid_subset_size={kid_subset_size} samples; metrics.n_samples={n_samples} "
            "for numbers comparable with a checkpoint's evaluation",
        )
    notes = []
    if n < kid_subset_size:
        notes.append(f"KID on subsets of {n} samples: metrics.kid_subset_size={kid_subset_size} is more than given")
    if n != n_samples:
        notes.append(
            f"{n} samples scored; a checkpoint is scored with metrics.n_samples={n_samples}: FID is biased by the "
            "sample count, compare only numbers of the same count"
        )
    return notes
