"""Any folder of image files as data (``data=image_folder data.path=<folder>``): checked up front, decoded once
into a cache, or read lazily when too large to hold."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch.utils.data import Dataset

from gensuite.data.files import check_image, decode_cached, read_image
from gensuite.data.images import IMAGE_EXTENSIONS, ImageDataModule, TensorImages, split_decoded, stratified_split
from gensuite.data.limits import check_file_count
from gensuite.errors import ConfigError, DataError


class _LazyImages(Dataset):
    """Files decoded on demand (for folders too large to hold): DataLoader workers and pinned memory apply."""

    def __init__(self, files: list[Path], labels: torch.Tensor, channels: int, image_size: int):
        self.files, self.labels, self.channels, self.image_size = files, labels, channels, image_size
        self.images = None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        n = len(self.files)  # i >= n: item i - n mirrored (EpochShuffle's random flips)
        x = read_image(self.files[i % n], self.channels, self.image_size).float().div_(255)
        return (x.flip(-1) if i >= n else x), self.labels[i % n]


class ImageFolder(ImageDataModule):
    """Any folder of images. Sub-folders, if there are two or more, are classes (torchvision's convention).

    Every file is checked up front: an empty folder, a file that is not an image, or a file that cannot be
    decoded stops with a message naming it (``skip_bad_files=true`` skips and counts them instead). So does a folder
    of more files, or an image of more pixels (read from its header, before decoding), than the limits of
    `gensuite.data.limits` (``GENSUITE_MAX_FILES``, ``GENSUITE_MAX_IMAGE_PIXELS``).

    With ``cache_dir`` (the yaml's default, ``${paths.cache_dir}``) the folder is decoded once, on ``num_workers``
    threads, into a uint8 file named by a fingerprint of its listing (`gensuite.data.files.decode_cached`); later
    runs map it in no time. Up to ``in_memory_limit`` images are then held as a tensor (on the GPU with
    ``on_device``); more are served from the mapped file by DataLoader workers, a fancy index per batch. Without a
    cache dir, small folders are decoded at every start and large ones decoded per item in the workers.
    """

    def __init__(
        self,
        path: str | None = None,
        channels: int = 3,
        image_size: int = 32,
        num_classes: int = 0,
        skip_bad_files: bool = False,
        in_memory_limit: int = 60000,
        cache_dir: str | None = None,
        **kwargs,
    ):
        super().__init__("image_folder", channels, image_size, num_classes, **kwargs)
        if not path:
            raise ConfigError("data=image_folder needs a folder", keys=("path",), fix="add data.path=/path/to/images")
        self.path = Path(os.path.expanduser(str(path)))
        self.skip_bad_files, self.in_memory_limit = skip_bad_files, in_memory_limit
        self.cache_dir = cache_dir
        self.skipped: list[str] = []
        self._listing_key: str | None = None

    def _scan(self) -> tuple[list[Path], list[int], list[str]]:
        if not self.path.is_dir():
            raise DataError(f"data.path={self.path} is not a folder", fix="point data.path at a folder of image files")
        subdirs = sorted(p for p in self.path.iterdir() if p.is_dir() and not p.name.startswith("."))
        classes = [d.name for d in subdirs] if len(subdirs) >= 2 else []
        roots = [(d, i) for i, d in enumerate(subdirs)] if classes else [(self.path, -1)]
        files, labels, seen = [], [], 0
        for root, label in roots:
            listing = []
            for p in root.rglob("*"):  # counted as listed: a folder of ten million files is refused, not sorted
                seen += 1
                check_file_count(seen, f"data.path={self.path}", "point data.path at a smaller folder")
                listing.append(p)
            for p in sorted(listing):
                if p.is_dir() or p.name.startswith("."):
                    continue
                if p.suffix.lower() not in IMAGE_EXTENSIONS:
                    if self.skip_bad_files:
                        self.skipped.append(str(p))
                        continue
                    raise DataError(
                        f"data.path={self.path} holds a file that is not an image: {p}",
                        fix="remove it, or set data.skip_bad_files=true to skip such files (they are counted)",
                    )
                files.append(p)
                labels.append(label)
        if not files:
            raise DataError(
                f"data.path={self.path} holds no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})",
                fix="point data.path at a folder that holds images",
            )
        return files, labels, classes

    def load_splits(self):
        files, labels, classes = self._scan()
        if classes and self.num_classes not in (0, len(classes)):
            raise ConfigError(
                f"data.path has {len(classes)} class folders but num_classes={self.num_classes}",
                keys=("num_classes",),
                fix=f"set data.num_classes={len(classes)}",
            )
        self.num_classes = len(classes)
        self.classes = classes
        label_t = torch.tensor(labels, dtype=torch.long)
        if self.cache_dir:
            images, keep, skipped = self._decoded(files)
            return split_decoded(images, label_t[keep], self, self.in_memory_limit)
        if len(files) > self.in_memory_limit:
            # too many to decode now: every file's header is checked up front instead, so that a bad file is
            # reported (or skipped) here, as in memory, and not mid-epoch in a DataLoader worker
            keep, _ = self._readable(files, check_image)
            files, label_t = [files[i] for i in keep], label_t[keep]
            parts = stratified_split(label_t, self.val_fraction, self.split_seed, self.test_fraction)
            mk = lambda idx: _LazyImages([files[i] for i in idx], label_t[idx], self.channels, self.image_size)  # noqa: E731
            return tuple(mk(idx.tolist()) for idx in parts)
        keep, images = self._readable(files, lambda f: read_image(f, self.channels, self.image_size))
        x, y = torch.stack(images), label_t[keep]
        train_idx, val_idx, test_idx = stratified_split(y, self.val_fraction, self.split_seed, self.test_fraction)
        if len(val_idx) == 0:
            val_idx = train_idx[:1]
        if len(test_idx) == 0:
            test_idx = train_idx[:1]
        return tuple(TensorImages(x[idx], y[idx]) for idx in (train_idx, val_idx, test_idx))

    def _decoded(self, files: list[Path]) -> tuple[torch.Tensor, list[int], list[str]]:
        images, keep, skipped, self._listing_key = decode_cached(
            files, self.channels, self.image_size, self.cache_dir, workers=self.num_workers,
            skip_bad_files=self.skip_bad_files,
        )  # fmt: skip
        self.skipped += skipped
        if skipped:
            print(f"[gensuite] data.skip_bad_files: skipped {len(skipped)} unreadable or non-image files")
        if len(keep) < 2:
            raise DataError(f"data.path={self.path}: fewer than 2 readable images", fix="add images to the folder")
        return images, keep, skipped

    def prepare_data(self) -> None:
        """Decode the folder into the cache once, before the DDP ranks read it (Lightning: local rank 0 first)."""
        if self.cache_dir:
            self._decoded(self._scan()[0])
            self.skipped = []

    def _readable(self, files: list[Path], read) -> tuple[list[int], list]:
        """The indices of the files that ``read`` accepts, and what it returned for them. A bad file raises its
        `DataError`, or with ``skip_bad_files`` is skipped and counted."""
        keep, out = [], []
        for i, f in enumerate(files):
            try:
                out.append(read(f))
                keep.append(i)
            except DataError:
                if not self.skip_bad_files:
                    raise
                self.skipped.append(str(f))
        if self.skipped:
            print(f"[gensuite] data.skip_bad_files: skipped {len(self.skipped)} unreadable or non-image files")
        if len(keep) < 2:
            raise DataError(f"data.path={self.path}: fewer than 2 readable images", fix="add images to the folder")
        return keep, out

    def fingerprint(self) -> str:
        self.setup()
        if self._listing_key:  # decoded from the cache: named by the listing and the decoding settings
            return hashlib.sha256(f"{self._listing_key}|{self.split_seed}|{self.val_fraction}|"
                                  f"{self.test_fraction}".encode()).hexdigest()[:16]  # fmt: skip
        if isinstance(self.train, _LazyImages):  # too large to hash the pixels: hash names, sizes, times
            h = hashlib.sha256(str(self.path.resolve()).encode())
            for f in self.train.files:
                st = f.stat()
                h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}".encode())
            return h.hexdigest()[:16]
        return super().fingerprint()

    def real_images(self, split: str, n: int | None = None, offset: int = 0):
        self.setup()
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be train, val or test, got {split!r}")
        ds = getattr(self, split)
        if isinstance(ds, _LazyImages):
            end = len(ds) if n is None else min(len(ds), offset + n)
            items = [ds[i] for i in range(offset, end)]
            return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])
        return super().real_images(split, n, offset)
