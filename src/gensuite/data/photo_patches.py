"""A colour image folder built offline: random square patches of the two photographs that ship with scikit-learn
(``china.jpg``, ``flower.jpg``), each cut at a random scale and resized to ``size`` pixels, written as PNG files.

    python -m gensuite.data.photo_patches data/photos32                  # make photos: 5000 patches, 32 px
    python -m gensuite.data.photo_patches out/ --count 400 --seed 1 --size 32
    python compare.py data=image_folder data.path=data/photos32 ...        # the comparison on it (README)

The folder is flat, with no class sub-folders: two photographs are two sources, not two classes a feature
classifier should learn to tell apart, so the data is unlabelled and the label-free self-supervised space
(``fid_ssl``) scores it. Patches alternate between the two photographs; a patch's side is drawn uniformly
between ``size`` and ``max_crop`` pixels of the photograph (texture at the small end, whole objects at the large),
its corner uniformly where it fits. One seed gives the same files, byte for byte.

The folder records what built it in a hidden ``.photo_patches.json`` (`image_folder` skips hidden files): a rebuild
replaces only its own patches, and a non-empty folder without that record is refused, never written into.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np

from gensuite.errors import ConfigError, GensuiteError
from gensuite.safe_files import refuse_link, write_bytes_atomic, write_text_atomic

RECORD = ".photo_patches.json"
SOURCE = "sklearn.datasets.load_sample_images"


def patches(count: int, size: int = 32, seed: int = 0, max_crop: int | None = None) -> np.ndarray:
    """``count`` patches as uint8 ``(count, size, size, 3)``, deterministic for ``seed`` (see the module)."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images  # two uint8 (427, 640, 3)
    max_crop = max_crop or 4 * size
    smallest = min(min(p.shape[:2]) for p in photos)
    if not size <= max_crop <= smallest:
        raise ConfigError(
            f"--max-crop {max_crop} must lie between --size {size} and the photographs' short side ({smallest})",
            keys=("max_crop",),
            fix=f"--max-crop {min(4 * size, smallest)}, or a --size of at most {smallest}",
        )
    rng = np.random.default_rng(seed)
    out = np.empty((count, size, size, 3), dtype=np.uint8)
    for i in range(count):
        photo = photos[i % len(photos)]
        side = int(rng.integers(size, max_crop + 1))
        top = int(rng.integers(0, photo.shape[0] - side + 1))
        left = int(rng.integers(0, photo.shape[1] - side + 1))
        crop = Image.fromarray(photo[top : top + side, left : left + side])
        out[i] = np.asarray(crop.resize((size, size), Image.Resampling.BOX))  # BOX: an area average, no ringing
    return out


def build(folder: str | Path, count: int = 5000, size: int = 32, seed: int = 0, max_crop: int | None = None) -> Path:
    """Write ``count`` patches into ``folder`` as ``patch_00000.png``...; returns the folder. Refuses (ConfigError)
    a non-empty folder that this builder did not make; replaces the patches of one it did."""
    from PIL import Image

    for name, value, least in (("--count", count, 1), ("--size", size, 4)):
        if value < least:
            raise ConfigError(f"{name} must be >= {least}, got {value}", keys=(name,), fix=f"{name} {max(least, 32)}")
    folder = Path(folder)
    refuse_link(folder, "the output folder", what="the patches")
    record = folder / RECORD
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder} is a file, not a folder", keys=("out_folder",), fix="give a new folder's path")
    if folder.is_dir() and any(folder.iterdir()) and not record.is_file():
        raise ConfigError(
            f"{folder} is not empty and was not built by gensuite.data.photo_patches (no {RECORD} in it); "
            "the patches are not written among files of another kind",
            keys=("out_folder",),
            fix="give a new or empty folder, e.g. data/photos32",
        )
    settings = {"source": SOURCE, "count": count, "size": size, "seed": seed, "max_crop": max_crop or 4 * size}
    images = patches(count, size, seed, max_crop)
    if record.is_file():  # a rebuild: the old patches go, whatever their count was
        for old in folder.glob("patch_*.png"):
            refuse_link(old, "the output folder", folder, "a patch")
            old.unlink()
    # the record first: a build killed midway leaves a folder that the next build may replace
    write_text_atomic(record, json.dumps(settings, indent=2) + "\n", "the output folder", folder)
    width = max(5, len(str(count - 1)))
    for i, image in enumerate(images):
        png = io.BytesIO()
        Image.fromarray(image).save(png, format="PNG")
        write_bytes_atomic(folder / f"patch_{i:0{width}d}.png", png.getvalue(), "the output folder", folder)
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gensuite.data.photo_patches", description=__doc__.split("\n")[0])
    parser.add_argument("out_folder", help="a new or empty folder (or one this builder made: its patches are replaced)")
    parser.add_argument("--count", type=int, default=5000, help="number of patches (default 5000)")
    parser.add_argument("--size", type=int, default=32, help="side of a patch in pixels (default 32)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the patches' places and scales (default 0)")
    parser.add_argument("--max-crop", type=int, default=None, help="largest side cut from a photo (default 4*size)")
    args = parser.parse_args(argv)
    try:
        folder = build(args.out_folder, args.count, args.size, args.seed, args.max_crop)
    except GensuiteError as err:
        print(err.render(), file=sys.stderr)
        raise SystemExit(err.exit_code) from None
    print(f"[gensuite] {args.count} patches of {args.size}x{args.size} RGB in {folder} (seed {args.seed})")


if __name__ == "__main__":
    main()
