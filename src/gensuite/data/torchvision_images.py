"""Image data that torchvision downloads once when online (MNIST, Fashion-MNIST, CIFAR-10, CelebA); offline, a
missing dataset is one clear `DataError` naming ``data.root`` and the embedded alternatives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gensuite.data.files import decode_cached
from gensuite.data.images import ImageDataModule, TensorImages, convert_images, stratified_split
from gensuite.errors import ConfigError, DataError, require_positive


def _offline_error(name: str, root: str, err: BaseException) -> DataError:
    layout = {"celeba": " (<folder>/celeba/: img_align_celeba/ and the list_*.txt, identity_CelebA.txt files)"}
    layout = layout.get(name, "")
    return DataError(
        f"data={name}: the dataset is not under data.root={root} and could not be downloaded "
        f"({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else 'no detail'})",
        fix=f"connect to the internet once, or put the {name} files under data.root=<folder>{layout}, "
        f"or train on the embedded data: data=mnist5k (or data=digits)",
    )


def _torchvision_dataset(name: str, root: str, build):
    """``build()`` (a torchvision dataset), with any failure — offline download, missing or corrupt files — turned
    into the one-screen `_offline_error`."""
    try:
        return build()
    except Exception as err:  # torchvision raises RuntimeError / URLError / OSError / gdown's errors offline
        raise _offline_error(name, root, err) from err


class TorchvisionImages(ImageDataModule):
    """MNIST, Fashion-MNIST and CIFAR-10 through torchvision: ``val_fraction`` of the official train split
    validates, the rest trains; the official test split is the held-out ``test`` split (its first
    ``test_size`` images)."""

    DATASETS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10"}
    DIGITS = ("mnist",)

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
        self.flippable = name not in self.DIGITS
        super().__init__(name, channels, image_size, num_classes, **kwargs)
        self.root, self.download, self.test_size = str(root), download, test_size

    def _split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        import torchvision

        cls = getattr(torchvision.datasets, self.DATASETS[self.name])
        ds = _torchvision_dataset(self.name, self.root, lambda: cls(self.root, train=train, download=self.download))
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


class CelebA(ImageDataModule):
    """CelebA's 202,599 aligned faces (Liu et al. 2015) through torchvision: its official train / valid / test
    partition as train / val / held-out test (the first ``test_size`` test images), no labels.

    Each 178x218 image is cut to its central ``crop`` x ``crop`` square (140, as NCSN / DDIM's CelebA 64x64 setups)
    and resized to ``image_size`` (64), decoded once into the cache (`gensuite.data.files.decode_cached`, on
    ``num_workers`` threads). The 162,770 training faces at 64x64 are 2.0 GB of uint8: held in memory up to
    ``in_memory_limit`` images (on the GPU with ``on_device``), else served from the mapped cache by workers.
    torchvision downloads the files from Google Drive when ``download`` and online; offline, a one-screen error.
    """

    def __init__(
        self,
        root: str = "data",
        channels: int = 3,
        image_size: int = 64,
        crop: int = 140,
        download: bool = True,
        test_size: int | None = 10000,
        cache_dir: str = ".cache/gensuite",
        in_memory_limit: int = 250000,
        **kwargs,
    ):
        super().__init__("celeba", channels, image_size, 0, **kwargs)
        require_positive(crop=crop)
        self.root, self.crop, self.download, self.test_size = str(root), crop, download, test_size
        self.cache_dir, self.in_memory_limit = cache_dir, in_memory_limit

    def _files(self, split: str) -> list[Path]:
        import torchvision

        build = lambda: torchvision.datasets.CelebA(self.root, split=split, target_type=[], download=self.download)  # noqa: E731
        ds = _torchvision_dataset(self.name, self.root, build)
        folder = Path(ds.root) / ds.base_folder / "img_align_celeba"
        return [folder / name for name in ds.filename]

    def _decoded(self, split: str) -> torch.Tensor:
        files = self._files(split)
        if split == "test" and self.test_size:
            files = files[: self.test_size]
        images, _, _, _ = decode_cached(
            files, self.channels, self.image_size, self.cache_dir, crop=self.crop, workers=self.num_workers
        )
        return images

    def prepare_data(self) -> None:
        """Download (when online) and decode into the cache once, before the DDP ranks read it."""
        for split in ("train", "valid", "test"):
            self._decoded(split)

    def load_splits(self):
        parts = []
        for split in ("train", "valid", "test"):
            images = self._decoded(split)
            labels = torch.full((len(images),), -1, dtype=torch.long)
            if len(images) <= self.in_memory_limit:
                parts.append(TensorImages(images.clone(), labels))
            else:
                parts.append(TensorImages(images, labels, rows=torch.arange(len(images))))
        return tuple(parts)
