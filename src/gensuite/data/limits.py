"""Limits on what an untrusted sample file or image folder can make the suite read, checked before it is decoded.

A sample file (``eval.py samples=``) or a folder of images (``samples=<folder>``, ``data=image_folder``) from
someone else could declare more than it holds, or hold far more than it looks: a ``.npy`` header of 2^40 entries,
a deflated ``.npz`` that inflates a thousandfold, a PNG whose 50-byte header declares 14,000 x 14,000 pixels. Every
such size is read from the file's header and compared with these limits before any array is allocated or pixel
decoded; a file past one is a `DataError` naming the file, what it declares, the limit and its setting.

Each limit is an environment variable (one mechanism for every entry point: ``eval.py``, ``train.py``,
``compare.py``, the data module in a DataLoader worker), read when a file is checked::

    GENSUITE_MAX_SAMPLE_BYTES       2147483648 (2 GiB)  the array of a sample file as stored: an .npy's data, an
                                                        .npz's members once inflated, a folder of samples decoded
    GENSUITE_MAX_IMAGE_PIXELS       67108864 (8192^2)   width x height of one image file (also PIL's own
                                                        decompression-bomb guard, which then raises, not warns)
    GENSUITE_MAX_FILES              2000000             files in a folder of samples, or under data.path
    GENSUITE_MAX_COMPRESSION_RATIO  200                 inflated / stored size of a compressed .npz member that
                                                        inflates past 1 MiB (a zip bomb; deflate reaches ~1000)

e.g. ``GENSUITE_MAX_SAMPLE_BYTES=8000000000 python eval.py samples=big.npz data=cifar10``. The defaults let real
use through: 50,000 CIFAR-size samples are 153 MB, a 24-50 megapixel photo is under the pixel limit, ImageNet's
1.28 million training files are under the file limit.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass

from gensuite.errors import ConfigError, DataError

RATIO_FLOOR = 1 << 20  # members that inflate to at most 1 MiB are not ratio-checked (e.g. 50,000 equal labels)


@dataclass(frozen=True)
class Limit:
    """One named limit: its environment variable, default and unit (``bytes``, ``pixels``, ``files``, ``x``)."""

    env: str
    default: int
    unit: str

    def value(self) -> int:
        """The limit in force: the environment variable if set (a positive number, ``2e9`` allowed), else the
        default. A value that is not a positive number is a `ConfigError` naming the variable."""
        raw = os.environ.get(self.env, "").strip().replace("_", "")
        if not raw:
            return self.default
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value >= 1):
            raise ConfigError(
                f"{self.env}={os.environ[self.env]!r} is not a positive number of {self.unit}",
                fix=f"set {self.env} to a number of {self.unit} (default {self.default}), or unset it",
            )
        return int(value)

    def show(self, n: int) -> str:
        """``n`` in this limit's unit, for a message: ``4.0 TiB (4,398,046,511,104 bytes)``."""
        if self.unit == "bytes":
            return f"{human_bytes(n)} ({n:,} bytes)" if n >= 1024 else f"{n} bytes"
        if self.unit == "x":
            return f"{n:,}x"
        return f"{n:,} {self.unit}"

    def past(self) -> str:
        """The end of a message about a file whose declared size is past this limit."""
        return f"past the limit of {self.show(self.value())} ({self.env})"

    def fix(self, declared: int, other: str = "") -> str:
        """How to get past the limit: ``other`` first (a fix that needs no trust), then raising the setting."""
        raise_it = (
            f"if you trust the file and have the memory, raise the limit: {self.env}={declared} (an environment "
            f"variable; default {self.default})"
        )
        return f"{other}; or, {raise_it}" if other else raise_it


MAX_SAMPLE_BYTES = Limit("GENSUITE_MAX_SAMPLE_BYTES", 2 << 30, "bytes")
MAX_IMAGE_PIXELS = Limit("GENSUITE_MAX_IMAGE_PIXELS", 8192 * 8192, "pixels")
MAX_FILES = Limit("GENSUITE_MAX_FILES", 2_000_000, "files")
MAX_COMPRESSION_RATIO = Limit("GENSUITE_MAX_COMPRESSION_RATIO", 200, "x")
LIMITS = (MAX_SAMPLE_BYTES, MAX_IMAGE_PIXELS, MAX_FILES, MAX_COMPRESSION_RATIO)


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover


def check_file_count(n: int, where: str, fix: str) -> None:
    """Raise once a listing of ``where`` reaches more than `MAX_FILES` entries (call it as the listing grows, so a
    folder of ten million files is not listed whole first)."""
    if n > MAX_FILES.value():
        raise DataError(
            f"{where} holds more than {MAX_FILES.value():,} files, {MAX_FILES.past()}",
            fix=MAX_FILES.fix(max(n, 2 * MAX_FILES.value()), fix),
        )


# -- images ------------------------------------------------------------------------------------------------------
_BOMB = re.compile(r"\((\d+) pixels\)")


def pil_guard():
    """Set PIL's decompression-bomb guard to `MAX_IMAGE_PIXELS` and make its warning an error, so a size that PIL
    meets only while decoding (a GIF frame, an ICO entry, a TIFF tile) is refused as a declared size is. Returns
    the exception types the guard raises."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS.value()
    # filterwarnings moves an identical filter to the front instead of adding another, so calling it per file is
    # cheap; it is re-applied per call because test runners reset the warning filters between tests
    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)
    return Image.DecompressionBombError, Image.DecompressionBombWarning


def open_image(path, fix: str):
    """``PIL.Image.open(path)`` (lazy: only the header is read), refused with a `DataError` when it declares more
    than `MAX_IMAGE_PIXELS` pixels; ``fix`` is the caller's way around it. The caller decodes (``convert``,
    ``load``) and closes it; a size past the limit that PIL meets while decoding raises one of `pil_guard`'s types,
    which `bomb_error` turns into the same message."""
    from PIL import Image

    bombs = pil_guard()
    try:
        im = Image.open(path)
    except bombs as err:
        raise bomb_error(path, err, fix) from None
    w, h = im.size
    if w * h > MAX_IMAGE_PIXELS.value():  # PIL's guard refused this already, unless its warnings were silenced
        im.close()
        raise too_many_pixels(path, f"{w} x {h} = {w * h:,} pixels", w * h, fix)
    return im


def bomb_error(path, err: BaseException, fix: str) -> DataError:
    """PIL's decompression-bomb error or warning -> the `DataError` of an image past `MAX_IMAGE_PIXELS`."""
    found = _BOMB.search(str(err))
    pixels = int(found.group(1)) if found else 2 * MAX_IMAGE_PIXELS.value()
    return too_many_pixels(path, f"{pixels:,} pixels", pixels, fix)


def too_many_pixels(path, declared: str, pixels: int, fix: str) -> DataError:
    return DataError(
        f"image file {path} declares {declared}, {MAX_IMAGE_PIXELS.past()}; it is not decoded",
        fix=MAX_IMAGE_PIXELS.fix(pixels, fix),
    )
