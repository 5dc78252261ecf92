"""Arrays from untrusted sample files: an ``.npy`` or the members of an ``.npz``, read header first.

``np.load(allow_pickle=False)`` only, so no pickled object is ever built; the header is parsed before any data is
read, so a file that declares more entries than it holds, more bytes than `gensuite.data.limits` allows, or an
``.npz`` member that inflates past its ratio is a `DataError` before memory is spent on it.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numpy.lib import format as npy_format

from gensuite.data.limits import (
    MAX_COMPRESSION_RATIO,
    MAX_SAMPLE_BYTES,
    RATIO_FLOOR,
)
from gensuite.errors import DataError

SAMPLES_KEY = "samples"
LABELS_KEY = "labels"
LAYOUTS = "(N, H, W, C), (N, C, H, W) or (N, H, W) with C = 1 or 3"
EXPECTED = f"uint8 values 0..255 (or floats in [0, 1]) of shape {LAYOUTS}"
SAVE_HINT = "np.savez('samples.npz', samples=images) with images uint8 of shape (N, H, W, C)"
NPY_MAGIC, ZIP_MAGIC = b"\x93NUMPY", (b"PK\x03\x04", b"PK\x05\x06")  # an .npy; a zip (or an empty one)
PLAIN_MEMBER = re.compile(r"[^./\\\x00-\x1f][^/\\\x00-\x1f]*\.npy")  # <key>.npy: no folder, no hidden name
MAX_DIRECTORY = 1 << 20  # bytes of an .npz's zip directory (ZipFile reads it whole): ~10,000 members
READ_CHUNK = 16 << 20
HEADER_MAX = 10_016  # bytes of an .npy header: numpy refuses one over 10,000 before parsing it


def read_array(path: Path) -> tuple[np.ndarray, str]:
    """The array of an ``.npy``, or of an ``.npz``'s key ``samples`` (else its only array); never unpickles.

    Bounded (`gensuite.data.limits`): the ``.npy`` header (of the file, or of the ``.npz`` member, read from the
    zip stream) is parsed first and its dtype, rank and size checked, and the file's length against the size it
    declares, before the data is read; an ``.npz`` is checked member by member (plain ``<key>.npy`` names, stored
    or deflated, the inflated sizes and the compression ratio) from its central directory, before anything is
    inflated."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if head.startswith(NPY_MAGIC):
                f.seek(0)
                source = f"samples={path}"
                return read_npy(f, os.fstat(f.fileno()).st_size, source, "samples"), source
        if not head.startswith(ZIP_MAGIC):
            kind = "a pickled Python object" if head[:1] == b"\x80" else f"a file that starts with {head!r}"
            raise ValueError(f"{kind}, neither an .npy nor an .npz file")
        with npz_members(path) as (zf, members):
            keys = list(members)
            key = SAMPLES_KEY if SAMPLES_KEY in keys else keys[0] if len(keys) == 1 else None
            if key is None:
                raise DataError(
                    f"samples={path} holds the arrays {keys or '(none)'} and none is named '{SAMPLES_KEY}'",
                    fix=f"store the images under the key '{SAMPLES_KEY}': {SAVE_HINT}",
                )
            source = f"samples={path} (key '{key}')"
            with zf.open(members[key]) as stream:
                return read_npy(stream, members[key].file_size, source, "samples"), source
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise unreadable(path, err) from None


def unreadable(path: Path, err: BaseException) -> DataError:
    reason = str(err).splitlines()[0][:200] if str(err) else ""
    return DataError(
        f"samples={path} cannot be read as a numpy array ({type(err).__name__}: {reason}). Sample files are read "
        "as plain arrays of numbers, never unpickled (np.load with allow_pickle=False)",
        fix=f"save the images as a numeric array: {SAVE_HINT}",
    )


# what each array may be: (dtype kinds, ranks, what to write instead); bool samples pass, for as_images to refuse
ARRAYS = {
    "samples": ("biuf", (3, 4), f"save the images as an array of {LAYOUTS}: {SAVE_HINT}"),
    "labels": ("iu", (1,), "save the labels as integers of shape (N,): np.savez(..., samples=x, labels=y)"),
}


def read_npy(stream: BinaryIO, available: int, source: str, what: str) -> np.ndarray:
    """The array of the ``.npy`` data at ``stream`` (a file or a zip member of ``available`` bytes), its header
    parsed and checked before a byte of data is read. ``what``: ``samples`` or ``labels`` (`ARRAYS`)."""
    kinds, ranks, fix = ARRAYS[what]
    version = npy_format.read_magic(stream)
    if version not in ((1, 0), (2, 0), (3, 0)):  # 3.0 differs from 2.0 only in the header's text encoding
        raise ValueError(f"unknown .npy format version {version}")
    header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
    shape, fortran, dtype = header(stream)  # numpy refuses a header over 10,000 bytes before parsing it
    offset = stream.tell()
    if dtype.hasobject:
        raise DataError(
            f"{source} holds Python objects (dtype {dtype}), which only unpickling would build. Sample files are "
            "read as plain arrays of numbers, never unpickled (np.load with allow_pickle=False)",
            fix=fix,
        )
    if dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in kinds or dtype.itemsize > 8:
        want = "integers" if what == "labels" else "numbers (uint8, other integers or floats)"
        kind = dtype.descr if dtype.fields is not None else f"{dtype.name} ({dtype.str})"
        raise DataError(f"{source}: {what} must be {want}, got an array of dtype {kind}", fix=fix)
    nbytes = math.prod(shape) * dtype.itemsize
    declared = f"{source} declares an array of shape {shape} {dtype.name}: {MAX_SAMPLE_BYTES.show(nbytes)}"
    if nbytes > MAX_SAMPLE_BYTES.value():
        raise DataError(
            f"{declared}, {MAX_SAMPLE_BYTES.past()}",
            fix=MAX_SAMPLE_BYTES.fix(nbytes, "score fewer samples (50,000 at 32x32 RGB are 153 MB)"),
        )
    if len(shape) not in ranks:
        axes = " or ".join(map(str, ranks))
        layout = LAYOUTS if what == "samples" else "(N,)"
        raise DataError(f"{source} has shape {shape}: expected {axes} axes, {layout}", fix=fix)
    truncated = "write the file again (np.save / np.savez) and let the writing finish"
    if offset + nbytes > available:
        raise DataError(
            f"{declared}, but the file holds {max(0, available - offset):,} bytes of data: it is truncated",
            fix=truncated,
        )
    raw = np.empty(nbytes, dtype=np.uint8)  # pages are only touched as the data fills them
    view, got = memoryview(raw), 0
    while got < nbytes:  # in chunks: a zip member's readinto would otherwise build one bytes object of it all
        n = stream.readinto(view[got : got + READ_CHUNK])
        if not n:
            raise DataError(f"{declared}, but its data ends after {got:,} bytes: it is truncated", fix=truncated)
        got += n
    array = raw.view(dtype)
    array = array.reshape(shape[::-1]).transpose() if fortran else array.reshape(shape)
    if not dtype.isnative:  # torch reads native byte order only
        array = array.byteswap(inplace=True).view(dtype.newbyteorder("="))
    return array


@contextlib.contextmanager
def npz_members(path: Path):
    """The open zip of an ``.npz`` and its members by key, ``{key: ZipInfo}``, once every member has passed the
    checks that need no inflating (see `read_array`); `DataError` (or ``BadZipFile``) otherwise."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:  # the end record names the central directory's size, which ZipFile reads whole
        f.seek(max(0, size - 65557))
        tail = f.read()
    at = tail.rfind(b"PK\x05\x06")
    if at >= 0 and len(tail) - at >= 22 and int.from_bytes(tail[at + 12 : at + 16], "little") > MAX_DIRECTORY:
        raise DataError(
            f"samples={path}: its zip directory is {int.from_bytes(tail[at + 12 : at + 16], 'little'):,} bytes, "
            f"past the {MAX_DIRECTORY:,} of an .npz (one entry per array, a few hundred bytes)",
            fix=f"save the images as one array: {SAVE_HINT}",
        )
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        if infos and not any(i.filename.endswith(".npy") for i in infos):
            raise unreadable(path, TypeError("a zip file that holds no .npy arrays (a torch.save file?)"))
        for i in infos:
            name = i.filename
            if not PLAIN_MEMBER.fullmatch(name) or ".." in name:
                raise DataError(
                    f"samples={path} holds a member named {name!r}: an .npz holds arrays named <key>.npy, no "
                    "folders, links or other files",
                    fix=f"save the images with numpy: {SAVE_HINT}",
                )
            if i.flag_bits & 0x1 or i.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise DataError(
                    f"samples={path}: member {name} is encrypted or compressed with zip method {i.compress_type}; "
                    "numpy writes stored (np.savez) or deflated (np.savez_compressed) members only",
                    fix=f"save the images with numpy: {SAVE_HINT}",
                )
        total = sum(i.file_size for i in infos)  # the arrays and their headers (10,000 bytes at most each)
        if total > MAX_SAMPLE_BYTES.value() + HEADER_MAX * len(infos):
            raise DataError(
                f"samples={path}: its {len(infos)} array(s) inflate to {MAX_SAMPLE_BYTES.show(total)}, "
                f"{MAX_SAMPLE_BYTES.past()}",
                fix=MAX_SAMPLE_BYTES.fix(total, "score fewer samples (50,000 at 32x32 RGB are 153 MB)"),
            )
        if sum(i.compress_size for i in infos) > size:
            raise zipfile.BadZipFile("its directory declares more compressed bytes than the file holds")
        ratio = MAX_COMPRESSION_RATIO.value()
        for i in infos:
            if i.compress_type == zipfile.ZIP_DEFLATED and i.file_size > max(RATIO_FLOOR, ratio * i.compress_size):
                found = i.file_size // max(1, i.compress_size)
                raise DataError(
                    f"samples={path}: member {i.filename} inflates {MAX_SAMPLE_BYTES.show(i.compress_size)} to "
                    f"{MAX_SAMPLE_BYTES.show(i.file_size)}, a compression ratio of {found:,}x, "
                    f"{MAX_COMPRESSION_RATIO.past()} (a zip bomb, or images nearly all one colour)",
                    fix=MAX_COMPRESSION_RATIO.fix(found + 1, "save the samples uncompressed (np.savez)"),
                )
        yield zf, {i.filename[: -len(".npy")]: i for i in infos}
