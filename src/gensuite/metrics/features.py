"""Feature extractors for FID / KID / IS / precision-recall / mode coverage.

An extractor maps images in [0, 1] ``(B, C, H, W)`` to ``(features (B, D), logits (B, K) or None)``. Its
``name`` goes into every metric key (``val/fid_classifier``, ``val/fid_inception``) so numbers from different
extractors are never mistaken for one another.

- ``classifier``: a small CNN trained here on the dataset's labelled train split, cached under the cache dir by a
  fingerprint of the data, reused across runs. Offline, and it also classifies samples (mode coverage).
- ``ssl``: a small CNN trained here on the images alone (SimCLR), for any image data, labelled or not: see
  `gensuite.metrics.ssl`.
- ``inception``: the standard FID network (torch-fidelity's port of the TF Inception-v3 weights), from a local
  weights file or the torch hub cache, downloaded only where there is internet.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gensuite.errors import ConfigError, DataError
from gensuite.safe_files import atomic_writer, write_text_atomic

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"


class SmallCNN(nn.Module):
    """Three 3x3 conv-BN-ReLU layers (two followed by max-pooling) and a 128-d feature layer.

    Works for any image size >= 8 and 1 or 3 channels (adaptive pooling before the feature layer).
    """

    def __init__(
        self, in_channels: int, num_classes: int, width: int = 32, feature_dim: int = 128, dropout: float = 0.3
    ):
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

        self.body = nn.Sequential(
            *block(in_channels, width),
            nn.MaxPool2d(2),
            *block(width, 2 * width),
            nn.MaxPool2d(2),
            *block(2 * width, 2 * width),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.features = nn.Linear(8 * width, feature_dim)
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(dropout), nn.Linear(feature_dim, num_classes))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(self.body((x - 0.5) / 0.5))  # (B, feature_dim), pre-activation: closer to Gaussian
        return f, self.head(f)


def _random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels (zero fill): cheap augmentation for digits."""
    b, _, h, w = x.shape
    shifts = torch.randint(-max_shift, max_shift + 1, (b, 2), generator=generator).float()
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = shifts[:, 0] * 2 / w
    theta[:, 1, 2] = shifts[:, 1] * 2 / h
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


@torch.no_grad()
def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    net.eval()
    batches = zip(x.split(batch_size), y.split(batch_size), strict=True)
    correct = sum(int((net(xb)[1].argmax(1) == yb).sum()) for xb, yb in batches)
    return correct / max(1, len(y))


def train_classifier(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    num_classes: int,
    epochs: int = 12,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    verbose: bool = True,
) -> tuple[SmallCNN, float]:
    """Train `SmallCNN` with Adam, a one-cycle schedule and random shifts; returns the net and val accuracy.

    The global RNG is left as it was (dropout draws from it): whether the classifier came from the cache or was
    trained must not change the noise of the generative model's run.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return _train_classifier(train_x, train_y, val_x, val_y, num_classes, epochs, batch_size, lr, seed, verbose)


def _train_classifier(train_x, train_y, val_x, val_y, num_classes, epochs, batch_size, lr, seed, verbose):
    g = torch.Generator().manual_seed(seed)
    net = SmallCNN(train_x.shape[1], num_classes)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps = epochs * max(1, len(train_x) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    max_shift = max(1, train_x.shape[-1] // 14)
    t0 = time.time()
    for epoch in range(epochs):
        net.train()
        perm = torch.randperm(len(train_x), generator=g)
        for i in range(len(perm) // batch_size):
            idx = perm[i * batch_size : (i + 1) * batch_size]
            xb = _random_shift(train_x[idx], max_shift, g)
            loss = F.cross_entropy(net(xb)[1], train_y[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if verbose and (epoch == epochs - 1 or epoch % 4 == 3):
            acc = accuracy(net, val_x, val_y)
            print(
                f"[gensuite] feature classifier epoch {epoch + 1}/{epochs}: val acc {acc:.4f} ({time.time() - t0:.0f}s)"
            )
    net.eval()
    return net, accuracy(net, val_x, val_y)


class ClassifierFeatures(nn.Module):
    """The ``classifier`` extractor: features and class logits of a `SmallCNN` trained on the data's labels."""

    name = "classifier"

    def __init__(self, net: SmallCNN, val_acc: float, fingerprint: str):
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.val_acc, self.fingerprint = val_acc, fingerprint
        self.num_features = net.features.out_features
        self.num_classes = net.head[-1].out_features

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(images.float())

    @classmethod
    def for_data(cls, datamodule, cache_dir: str | os.PathLike, epochs: int = 10, seed: int = 0) -> ClassifierFeatures:
        """Load the classifier for this data from the cache, or train it (rank 0 first; see `Evaluator.prepare`)."""
        if not datamodule.labelled:
            raise ConfigError(
                f"metrics.features=classifier needs class labels, but data={datamodule.name} has none "
                "(an image folder without class sub-folders)",
                fix="metrics.features=ssl (trained without labels), or give class sub-folders, or "
                "metrics.features=inception with metrics.inception_weights=<path to " + INCEPTION_FILE + ">",
            )
        key = hashlib.sha256(f"{datamodule.fingerprint()}|SmallCNN-v1|{epochs}|{seed}".encode()).hexdigest()[:16]
        path = Path(cache_dir) / "classifier" / f"{datamodule.name}-{key}.pt"
        if path.exists():
            blob = torch.load(path, map_location="cpu", weights_only=True)
            net = SmallCNN(blob["in_channels"], blob["num_classes"])
            net.load_state_dict(blob["state_dict"])
            return cls(net, blob["val_acc"], key)
        tx, ty = datamodule.real_images("train")
        vx, vy = datamodule.real_images("val")
        print(f"[gensuite] training the feature classifier on {len(tx)} {datamodule.name} images (cached after)")
        net, acc = train_classifier(tx, ty, vx, vy, datamodule.num_classes, epochs=epochs, seed=seed)
        blob = {"val_acc": acc, "in_channels": tx.shape[1], "num_classes": datamodule.num_classes}
        save_atomic(path, {"state_dict": net.state_dict(), "data": datamodule.name, **blob}, cache_dir)
        return cls(net, acc, key)


def save_atomic(path: Path, blob: dict, root: str | os.PathLike | None = None) -> None:
    """``torch.save`` beside the target, then ``os.replace``: a concurrent reader sees no file or the whole file.
    The plain-number entries are also written to ``<path>.json`` for people to read. Neither is written through
    a link at its name or at a folder below ``root`` (the cache folder; `gensuite.safe_files`)."""
    with atomic_writer(path, "paths.cache_dir", root) as f:
        torch.save(blob, f)
    plain = {k: v for k, v in blob.items() if isinstance(v, (int, float, str))}
    write_text_atomic(path.with_suffix(".json"), json.dumps(plain, indent=1), "paths.cache_dir", root)


class InceptionFeatures(nn.Module):
    """The ``inception`` extractor: 2048-d pool features and 1008 logits of the TF-ported Inception-v3.

    Images are converted to uint8 RGB (grey repeated to 3 channels) and resized to 299 inside torch-fidelity's
    extractor, as the reference FID implementation does.
    """

    name = "inception"
    num_features = 2048
    num_classes = 0  # its logits are ImageNet's: used for IS, not for mode coverage of this data's classes

    def __init__(self, weights_path: str | None = None):
        super().__init__()
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        path = resolve_inception_weights(weights_path)
        self.net = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=path
        )
        self.fingerprint = "inception-" + hashlib.sha256(str(Path(path).stat().st_size).encode()).hexdigest()[:8]

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (images.clamp(0, 1) * 255).round().to(torch.uint8)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        feats, logits = self.net(x)
        return feats.float(), logits.float()


def resolve_inception_weights(weights_path: str | None) -> str:
    """A local Inception weights file: ``metrics.inception_weights``, else torch hub's cache, else a download."""
    if weights_path:
        p = Path(os.path.expanduser(str(weights_path)))
        if not p.is_file():
            raise DataError(
                f"metrics.inception_weights={weights_path} is not a file",
                fix=f"point it at {INCEPTION_FILE} (torch-fidelity's Inception weights) "
                "or use metrics.features=classifier",
            )
        try:  # refuse pickled code before torch-fidelity loads the file with weights_only=False
            torch.load(p, map_location="cpu", weights_only=True)
        except Exception as err:
            raise DataError(
                f"metrics.inception_weights={weights_path} is not a plain state dict ({type(err).__name__})",
                fix=f"use the original {INCEPTION_FILE}",
            ) from err
        return str(p)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    if cached.is_file():
        return str(cached)
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    try:
        torch.hub.download_url_to_file(URL_INCEPTION_V3, str(cached), progress=False)
    except Exception as err:
        raise DataError(
            f"metrics.features=inception needs the Inception-v3 weights, which are not cached and could not be "
            f"downloaded ({type(err).__name__})",
            fix=f"download {URL_INCEPTION_V3} once and set metrics.inception_weights=<that file>, or use "
            "metrics.features=classifier (trained offline on your labelled data)",
        ) from err
    return str(cached)
