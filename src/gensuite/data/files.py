"""Image files: decoding one (resize + centre crop), checking one, and decoding a whole list once into a cache.

A training run over a folder of PNG/JPEG files would otherwise decode every image again in every epoch — PIL's
decode and resize cost far more than the step of a small network, and a GPU waits on them. `decode_cached` decodes
the list once, in ``workers`` threads (PIL releases the GIL while it decodes and resamples), into one raw uint8 file
``(N, C, H, W)`` under ``<cache_dir>/decoded/`` and maps it back with `torch.from_file`: later runs start at once,
pages are read on demand, and a batch is one fancy index into the mapped array (no decoding at all). The file is
named by a fingerprint of the listing (every path, size and modification time) and of the decoding settings, so a
changed folder decodes again; it is written beside its final name and renamed into place, so a killed decode
leaves nothing that a later run would read.

The format is raw bytes plus a JSON sidecar (not ``.npy``): `torch.from_file` maps raw bytes copy-on-write, so the
array is an ordinary (lazily paged) torch tensor that DataLoader workers inherit without pickling it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from gensuite.data.limits import bomb_error, open_image, pil_guard
from gensuite.errors import DataError
from gensuite.safe_files import atomic_writer, write_text_atomic

FORMAT = 1  # bump when the decoding changes: old caches are then never read
SKIP_FIX = "remove or replace the file, or set data.skip_bad_files=true to skip unreadable files (counted)"


def read_image(path: Path, channels: int, image_size: int, crop: int | None = None) -> torch.Tensor:
    """One image file -> uint8 ``(channels, image_size, image_size)``: the central ``crop`` x ``crop`` square first
    (if given; CelebA's faces), then the short side resized to ``image_size`` (bicubic) and the centre cut out, as
    torchvision's ``CenterCrop`` + ``Resize`` + ``CenterCrop`` do. A file PIL cannot read, or one that declares more
    pixels than `gensuite.data.limits.MAX_IMAGE_PIXELS` (checked from its header, before decoding), raises a
    `DataError`."""
    from PIL import Image, UnidentifiedImageError

    bombs = pil_guard()
    try:
        with open_image(path, SKIP_FIX) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            if crop:
                w, h = im.size
                c = min(crop, w, h)
                left, top = (w - c) // 2, (h - c) // 2
                im = im.crop((left, top, left + c, top + c))
            w, h = im.size
            s = image_size / min(w, h)
            im = im.resize((max(image_size, round(w * s)), max(image_size, round(h * s))), Image.BICUBIC)
            w, h = im.size
            left, top = (w - image_size) // 2, (h - image_size) // 2
            im = im.crop((left, top, left + image_size, top + image_size))
            arr = np.asarray(im, dtype=np.uint8)
    except bombs as err:
        raise bomb_error(path, err, SKIP_FIX) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise unreadable(path, err) from err
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return torch.from_numpy(arr.copy())


def check_image(path: Path) -> None:
    """Raise the `read_image` error for a file whose header or chunks are broken, without decoding the pixels
    (PIL's ``verify``: milliseconds a file), for folders read lazily, where a bad file would otherwise stop the run
    mid-epoch inside a DataLoader worker; and for one past the pixel limit, as `read_image` does."""
    from PIL import UnidentifiedImageError

    bombs = pil_guard()
    try:
        with open_image(path, SKIP_FIX) as im:
            im.verify()
    except bombs as err:
        raise bomb_error(path, err, SKIP_FIX) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise unreadable(path, err) from err


def unreadable(path: Path, err: BaseException) -> DataError:
    return DataError(f"cannot read image file {path}: {type(err).__name__}: {err}", fix=SKIP_FIX)


def read_all(files: Sequence[Path], read: Callable[[Path], object], workers: int = 0):
    """``read(f)`` for every file, in order, on ``workers`` threads (0 or 1: this thread); a `DataError` is
    returned in place of its result, for the caller to raise or count."""

    def one(f: Path):
        try:
            return read(f)
        except DataError as err:
            return err

    if workers <= 1:
        yield from map(one, files)
        return
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        yield from pool.map(one, files, chunksize=64)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # a raised error does not wait for the rest of the list


def listing_key(files: Sequence[Path], channels: int, image_size: int, crop: int | None) -> str:
    """A fingerprint of the files (path, size, modification time) and of how they are decoded."""
    h = hashlib.sha256(f"v{FORMAT}|{channels}|{image_size}|{crop}".encode())
    for f in files:
        st = os.stat(f)
        h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def decode_cached(
    files: Sequence[Path],
    channels: int,
    image_size: int,
    cache_dir: str | os.PathLike,
    crop: int | None = None,
    workers: int = 0,
    skip_bad_files: bool = False,
) -> tuple[torch.Tensor, list[int], list[str], str]:
    """Decode ``files`` once into ``<cache_dir>/decoded/<key>.u8`` (or find them there) and map them.

    Returns ``(images, keep, skipped, key)``: uint8 ``(len(keep), channels, image_size, image_size)`` mapped from
    the file (copy-on-write: writes never reach it), the indices into ``files`` of the images it holds, the files
    that could not be decoded (with ``skip_bad_files``; otherwise the first one raises its `DataError` and no cache
    is written), and the fingerprint that names the cache.
    """
    files = [Path(f).resolve() for f in files]
    key = listing_key(files, channels, image_size, crop)
    root = Path(cache_dir) / "decoded"
    data, meta = root / f"{key}.u8", root / f"{key}.json"
    shape = (channels, image_size, image_size)
    if not (data.is_file() and meta.is_file()):
        keep, skipped = [], []
        reads = read_all(files, lambda f: read_image(f, channels, image_size, crop), workers)
        try:  # beside the cache file, renamed over it; removed if a bad file raises (never through a link)
            with atomic_writer(data, "paths.cache_dir", cache_dir, durable=False) as fh:
                for i, (f, out) in enumerate(zip(files, reads, strict=True)):
                    if isinstance(out, DataError):
                        if not skip_bad_files:
                            raise out
                        skipped.append(str(f))
                        continue
                    fh.write(out.numpy().tobytes())
                    keep.append(i)
        finally:
            reads.close()  # stops the decoding threads when a bad file raised
        info = {"shape": [len(keep), *shape], "keep": keep, "skipped": skipped}
        write_text_atomic(meta, json.dumps(info), "paths.cache_dir", cache_dir)
    info = json.loads(meta.read_text())
    n = info["shape"][0]
    images = (
        torch.from_file(str(data), shared=False, size=n * int(np.prod(shape)), dtype=torch.uint8).view(n, *shape)
        if n
        else torch.zeros((0, *shape), dtype=torch.uint8)
    )
    return images, info["keep"], info["skipped"], key
