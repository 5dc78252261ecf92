"""A labelled folder of 32x32 RGB images for GPU runs at the CIFAR size, offline: random square patches of
scikit-learn's two sample photos, resized, one class sub-folder per photo.

    python -m benchmarks.gpu_patches 10000 /tmp/rgb32      # then data=image_folder data.path=/tmp/rgb32
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_sample_images


def main(argv: list[str] | None = None) -> None:
    args = argv if argv is not None else sys.argv[1:]
    n, root = int(args[0]) if args else 10000, Path(args[1] if len(args) > 1 else "/tmp/rgb32")
    size_px = int(args[2]) if len(args) > 2 else 32
    rng = np.random.default_rng(0)
    data = load_sample_images()
    for i in range(n):
        k = i % len(data.images)
        img, folder = data.images[k], root / Path(data.filenames[k]).stem
        folder.mkdir(parents=True, exist_ok=True)
        side = int(rng.integers(size_px, 3 * size_px))
        y, x = rng.integers(0, img.shape[0] - side), rng.integers(0, img.shape[1] - side)
        patch = Image.fromarray(img[y : y + side, x : x + side]).resize((size_px, size_px), Image.BICUBIC)
        patch.save(folder / f"{i:05d}.png")
    print(f"{n} patches of {size_px}x{size_px} in {root}/<photo>/")


if __name__ == "__main__":
    main()
