"""One evaluation for every family: it calls ``model.sample(n, generator)`` and never asks which family it is.

References (features cached on disk by a fingerprint of data, split, resolution and extractor):

- **held-out** (the headline numbers ``val/fid_<ex>``, ``val/kid_<ex>``, precision / recall / density / coverage):
  the data's ``test`` split, which no model trains on and no checkpoint is chosen by. The floor
  (``val/fid_<ex>_floor``) is what a perfect model would score: as many real *training* images as there are
  samples, against the same held-out reference.
- **train** (``val/fid_<ex>_train``, with ``val/fid_<ex>_train_floor``): samples against half A of the training
  split, the floor half B against half A. A model that copies its training images scores at this floor; the gap
  between the held-out and the train-referenced FID is how much closer the samples are to what was trained on.
- **copy rate** (``val/copy_rate_<ex>``, ``val/copy_rate_pixels``): the share of samples whose nearest training
  image is closer than the 5th percentile of the held-out images' nearest-training-image distances. Real unseen
  images score ~0.05 by construction; a model that reproduces its training images scores towards 1.

``metrics.bootstrap=B`` resamples the generated features B times (no new samples) for 95 % percentile intervals
``val/<metric>_lo`` / ``val/<metric>_hi`` of FID, precision and recall.

FID, KID and IS come from torchmetrics; the metric objects receive precomputed features through an identity
"feature network", so the extractor runs once per image and its weights never enter a checkpoint.
Under DDP every rank samples ``n / world_size`` images with its own seed; the features are all-gathered and every
rank computes the same numbers.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance

from gensuite.errors import ConfigError
from gensuite.metrics.diversity import class_coverage, knn_radii, precision_recall_density_coverage
from gensuite.metrics.features import ClassifierFeatures, InceptionFeatures

EXTRACTORS = ("classifier", "inception", "none")

# KID and IS keep their inputs (here: features) in memory, which is what we want; silence the reminder.
warnings.filterwarnings("ignore", message=r".*will save all extracted features in buffer.*")


class _Precomputed(nn.Module):
    """Identity 'feature network' so torchmetrics accumulates features computed once, elsewhere."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def fid_from_features(real: torch.Tensor, fake: torch.Tensor) -> float:
    metric = FrechetInceptionDistance(feature=_Precomputed(real.shape[1]), sync_on_compute=False)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    return float(metric.compute())


def kid_from_features(real: torch.Tensor, fake: torch.Tensor, subset_size: int, subsets: int, seed: int) -> float:
    subset_size = min(subset_size, len(real), len(fake))
    metric = KernelInceptionDistance(
        feature=_Precomputed(real.shape[1]), subsets=subsets, subset_size=subset_size, sync_on_compute=False
    )
    metric.update(real, real=True)
    metric.update(fake, real=False)
    with torch.random.fork_rng():  # KID draws its subsets from the global RNG: pin it
        torch.manual_seed(seed)
        mean, _ = metric.compute()
    return float(mean)


def inception_score_from_logits(logits: torch.Tensor, seed: int, splits: int = 10) -> float:
    metric = InceptionScore(feature=_Precomputed(logits.shape[1]), splits=splits, sync_on_compute=False)
    metric.update(logits)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        mean, _ = metric.compute()
    return float(mean)


class Evaluator:
    """Sample-based metrics of a model against cached real statistics.

    Args:
        features: ``classifier`` (trained here, offline), ``inception`` (standard FID features) or ``none``.
        n_samples: generated images per evaluation (the same N for every number that will be compared).
        seed: seed of the sampling noise (rank r uses ``seed + r``): the same seed gives the same samples.
        batch_size: images per sampling / feature batch.
        kid_subset_size, kid_subsets: KID's subsets (clipped to the number of samples).
        pr_k: k of the k-NN manifolds for precision / recall.
        reference_size: cap on the reference half (real images compared against).
        inception_weights: local weights file for ``inception`` (else torch hub cache, else download).
        cache_dir: where the classifier and the real features are cached.
        classifier_epochs: training epochs of the ``classifier`` extractor.
        bootstrap: resamples of the sample set for the 95 % intervals (0: none).

    >>> ev = Evaluator(features="classifier", n_samples=500)  # doctest: +SKIP
    >>> ev.prepare(datamodule); ev.evaluate(model)["val/fid_classifier"]  # doctest: +SKIP
    """

    def __init__(
        self,
        features: str = "classifier",
        n_samples: int = 2000,
        seed: int = 1234,
        batch_size: int = 500,
        kid_subset_size: int = 1000,
        kid_subsets: int = 50,
        pr_k: int = 3,
        reference_size: int = 10000,
        inception_weights: str | None = None,
        cache_dir: str = ".cache/gensuite",
        classifier_epochs: int = 10,
        bootstrap: int = 100,
    ):
        if features not in EXTRACTORS:
            raise ConfigError(
                f"features must be one of {EXTRACTORS}, got {features!r}",
                keys=("features",),
                fix="metrics.features=classifier (offline) or metrics.features=inception",
            )
        for name, v in {
            "n_samples": n_samples,
            "batch_size": batch_size,
            "kid_subset_size": kid_subset_size,
        }.items():
            if v < 2:
                raise ConfigError(f"{name} must be >= 2, got {v}", keys=(name,))
        self.features_name = features
        self.n_samples, self.seed, self.batch_size = n_samples, seed, batch_size
        self.kid_subset_size, self.kid_subsets, self.pr_k = kid_subset_size, kid_subsets, pr_k
        self.reference_size = reference_size
        self.inception_weights, self.cache_dir = inception_weights, cache_dir
        self.classifier_epochs = classifier_epochs
        self.bootstrap = bootstrap
        self._image_shape: tuple[int, ...] | None = None
        self.nearest_panel: torch.Tensor | None = None
        self.extractor: nn.Module | None = None
        self.reference: dict | None = None
        self.notes: list[str] = []
        self.last_info: dict = {}

    # -- preparation -----------------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self.extractor is not None

    def prepare(self, datamodule, device: torch.device | str = "cpu") -> None:
        """Build the extractor and the reference features (from the cache when present). Idempotent.

        The global RNG is left untouched (building a network draws its initial weights from it): a run must draw
        the same noise whether its feature classifier came from the cache or was trained now.
        """
        if self.reference is not None or self.features_name == "none":
            return
        with torch.random.fork_rng():
            self._prepare(datamodule, device)

    def _prepare(self, datamodule, device) -> None:
        if getattr(datamodule, "modality", "image") != "image":
            return  # text: the likelihood and the samples speak for the model
        if self.features_name == "classifier":
            if not datamodule.labelled:
                note = (
                    f"no FID/KID/precision/recall: data={datamodule.name} has no class labels, so the "
                    "'classifier' feature extractor cannot be trained. FID needs a feature extractor: give the "
                    "folder class sub-folders, or set metrics.features=inception metrics.inception_weights=<file>."
                )
                self.notes.append(note)
                print(f"[gensuite] WARNING: {note}")
                return
            self.extractor = ClassifierFeatures.for_data(datamodule, self.cache_dir, epochs=self.classifier_epochs)
        else:
            self.extractor = InceptionFeatures(self.inception_weights)
        self.extractor.to(device)
        self.reference = self._reference(datamodule, device)

    def _reference(self, datamodule, device) -> dict:
        ext = self.extractor
        held_out = "test" if getattr(datamodule, "test", None) is not None else "val"
        if held_out == "val":
            self.notes.append(f"data={datamodule.name} has no test split: the held-out reference is its val split")
        size = min(len(datamodule.train), self.reference_size)
        key = f"{datamodule.name}-{datamodule.fingerprint()}-{ext.name}-{ext.fingerprint}-{size}-{held_out}-v2"
        path = Path(self.cache_dir) / "reference" / f"{key}.pt"
        if path.exists():
            ref = torch.load(path, map_location="cpu", weights_only=True)
        else:
            ref = {}
            for part, (split, n) in {"train": ("train", size), "test": (held_out, self.reference_size)}.items():
                x, y = datamodule.real_images(split, n)
                f, logits = self._features(x, device)
                ref[part] = {"features": f, "labels": y, "logits": logits}
            ref["extractor_val_acc"] = float(getattr(ext, "val_acc", float("nan")))
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            torch.save(ref, tmp)
            os.replace(tmp, path)
        # the copy-rate thresholds: the 5th percentile of held-out images' distances to their nearest training image
        as_bytes = lambda x: x.flatten(1).mul(255).round().to(torch.uint8)  # noqa: E731
        train_pixels = as_bytes(datamodule.real_images("train", size)[0])
        test_pixels = as_bytes(datamodule.real_images(held_out, self.reference_size)[0])
        ref["train_pixels"] = train_pixels
        ref["threshold"] = {
            ext.name: torch.quantile(nearest(ref["test"]["features"], ref["train"]["features"]), COPY_QUANTILE),
            "pixels": torch.quantile(nearest(test_pixels, train_pixels), COPY_QUANTILE),
        }
        return ref

    @torch.no_grad()
    def _features(self, images: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor | None]:
        feats, logits = [], []
        for xb in images.split(self.batch_size):
            f, lg = self.extractor(xb.to(device))
            feats.append(f.float().cpu())
            if lg is not None:
                logits.append(lg.float().cpu())
        return torch.cat(feats), (torch.cat(logits) if logits else None)

    # -- evaluation ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self, model, n: int, device, rank: int = 0, world_size: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, float]:
        """This rank's share of ``n`` samples: features, logits, uint8 pixels ``(n, C*H*W)`` and sampling seconds."""
        n_local = math.ceil(n / world_size)
        g = torch.Generator(device=device).manual_seed(self.seed + 1_000_003 * rank)
        feats, logits, pixels, seconds = [], [], [], 0.0
        was_training = model.training
        model.eval()
        done = 0
        while done < n_local:
            b = min(self.batch_size, n_local - done)
            t0 = time.perf_counter()
            images = model.sample(b, generator=g)
            if images.device.type == "cuda":
                torch.cuda.synchronize(images.device)
            seconds += time.perf_counter() - t0
            images = images.float().clamp(0, 1)
            self._image_shape = tuple(images.shape[1:])
            f, lg = self.extractor(images)
            feats.append(f.float())
            pixels.append(images.flatten(1).mul(255).round().to(torch.uint8))
            if lg is not None:
                logits.append(lg.float())
            done += b
        model.train(was_training)
        return torch.cat(feats), (torch.cat(logits) if logits else None), torch.cat(pixels), seconds

    def evaluate(
        self,
        model,
        n: int | None = None,
        rank: int = 0,
        world_size: int = 1,
        gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> dict[str, float]:
        """Metrics of ``model`` with ``n`` samples (default ``n_samples``): flat ``val/...`` keys to floats."""
        if not self.active:
            return {}
        n = n or self.n_samples
        device = next(model.parameters()).device
        self.extractor.to(device)
        fake, logits, pixels, seconds = self.generate(model, n, device, rank, world_size)
        n_local = len(fake)
        if gather is not None and world_size > 1:
            fake = gather(fake)
            logits = gather(logits) if logits is not None else None
            seconds = float(gather(torch.tensor([seconds], device=device)).max())
            pixels = gather(pixels)
        fake = fake[:n].cpu().double()
        logits = logits[:n].cpu() if logits is not None else None
        pixels = pixels[:n].cpu()
        return self.score(fake, logits, images_per_s=world_size * n_local / max(seconds, 1e-9), pixels=pixels)

    @torch.no_grad()
    def evaluate_images(self, images: torch.Tensor) -> dict[str, float]:
        """Every metric of given images (float ``(N, C, H, W)`` in [0, 1], e.g. another tool's samples) against
        the same reference as a model's samples (call `prepare` first)."""
        if not self.active:
            return {}
        device = next(self.extractor.parameters(), torch.empty(0)).device
        images = images.float().clamp(0, 1)
        self._image_shape = tuple(images.shape[1:])
        fake, logits = self._features(images, device)
        return self.score(fake.double(), logits, pixels=images.flatten(1).mul(255).round().to(torch.uint8))

    def score(
        self,
        fake: torch.Tensor,
        logits: torch.Tensor | None,
        images_per_s: float | None = None,
        pixels: torch.Tensor | None = None,
    ) -> dict:
        """Every metric from generated features (and logits, and uint8 pixels ``(N, C*H*W)`` for the pixel copy
        rate) against the references."""
        ext, ref = self.extractor.name, self.reference
        test = ref["test"]["features"].double()
        train = ref["train"]["features"].double()
        n = len(fake)
        half = len(train) // 2
        train_a, train_b = train[:half], train[half:][:n]
        floor = train[:n]  # real images not in the held-out reference, as many as the samples
        kid = lambda real, x: kid_from_features(real, x, self.kid_subset_size, self.kid_subsets, self.seed)  # noqa: E731
        out = {
            f"val/fid_{ext}": fid_from_features(test, fake),
            f"val/fid_{ext}_floor": fid_from_features(test, floor),
            f"val/kid_{ext}": kid(test, fake),
            f"val/kid_{ext}_floor": kid(test, floor),
            f"val/fid_{ext}_train": fid_from_features(train_a, fake),
            f"val/fid_{ext}_train_floor": fid_from_features(train_a, train_b),
        }
        prdc = precision_recall_density_coverage(test[:n], fake, k=self.pr_k)
        out.update({f"val/{k}_{ext}": v for k, v in prdc.items()})
        out[f"val/copy_rate_{ext}"] = float((nearest(fake, train) < ref["threshold"][ext]).double().mean())
        if pixels is not None and pixels.shape[1] == ref["train_pixels"].shape[1]:
            dist = nearest(pixels, ref["train_pixels"])
            out["val/copy_rate_pixels"] = float((dist < ref["threshold"]["pixels"]).double().mean())
        if pixels is not None and self._image_shape is not None and pixels.shape[1] == ref["train_pixels"].shape[1]:
            # "samples next to their nearest training images" (in the features that decide the copy rate)
            k = min(8, n)
            idx = torch.cdist(fake[:k], train).argmin(1)
            rows = torch.stack([pixels[:k], ref["train_pixels"][idx]]).float() / 255
            self.nearest_panel = rows.view(2, k, *self._image_shape)
        if self.bootstrap:
            out.update(self._intervals(test, fake, ext))
        info = {
            "eval/n_samples": n,
            "eval/n_floor": len(floor),
            "eval/n_reference": len(test),
            "eval/n_train_reference": len(train_a),
            "eval/features": ext,
        }
        if logits is not None:
            out[f"val/is_{ext}"] = inception_score_from_logits(logits, self.seed)
            num_classes = getattr(self.extractor, "num_classes", 0)
            if num_classes:
                cov = class_coverage(logits.argmax(1), ref["test"]["labels"], num_classes)
                out["val/coverage_classes"] = cov["coverage_classes"]
                out["val/class_tv"] = cov["class_tv"]
                info["eval/class_hist"] = cov["class_hist"]
        if math.isfinite(ref.get("extractor_val_acc", float("nan"))):
            out["features/val_acc"] = ref["extractor_val_acc"]
        if images_per_s is not None:
            out["time/sample_images_per_s"] = images_per_s
        self.last_info = info
        return out

    def _intervals(self, real: torch.Tensor, fake: torch.Tensor, ext: str) -> dict[str, float]:
        """95 % bootstrap intervals over the sample set (the reference fixed): FID, precision, recall.

        Recall keeps each sample's k-NN radius from the full set (a resample with repeated samples would shrink
        radii to zero); precision is a mean over samples and resamples exactly."""
        g = torch.Generator().manual_seed(self.seed)
        n, m = len(real[: len(fake)]), len(fake)
        real_n = real[:n]
        d = torch.cdist(real_n, fake)
        inside_real = (d <= knn_radii(real_n, self.pr_k)[:, None]).any(0).double()  # (m,) sample in real manifold
        covers = d <= knn_radii(fake, self.pr_k)[None, :]  # (n, m) sample j's ball holds real i
        fids, precisions, recalls = [], [], []
        for _ in range(self.bootstrap):
            idx = torch.randint(m, (m,), generator=g)
            fids.append(fid_from_features(real, fake[idx]))
            precisions.append(float(inside_real[idx].mean()))
            recalls.append(float(covers[:, idx].any(1).double().mean()))
        full = {f"fid_{ext}": fid_from_features(real, fake), f"precision_{ext}": float(inside_real.mean()),
                f"recall_{ext}": float(covers.any(1).double().mean())}  # fmt: skip
        out = {}
        for name, values in ((f"fid_{ext}", fids), (f"precision_{ext}", precisions), (f"recall_{ext}", recalls)):
            values = torch.tensor(values, dtype=torch.float64)
            # resampling with repeats inflates FID (fewer distinct samples): the percentiles are shifted back by
            # the bootstrap's own estimate of that bias, so the interval is centred like the full-sample value
            bias = float(values.mean()) - full[name]
            lo, hi = torch.quantile(values, torch.tensor([0.025, 0.975], dtype=torch.float64))
            out[f"val/{name}_lo"], out[f"val/{name}_hi"] = float(lo) - bias, float(hi) - bias
        return out


COPY_QUANTILE = 0.05  # the held-out images' nearest-training-image distance below which a sample counts as a copy


def nearest(x: torch.Tensor, ref: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """Distance of every row of ``x`` to its nearest row of ``ref``, in chunks (features in float64; uint8 pixels
    in float32 on the 0-255 scale, so that a folder of large RGB images never sits in memory as floats)."""
    dtype = torch.float64 if torch.float64 in (x.dtype, ref.dtype) else torch.float32
    out = []
    for xb in x.split(chunk):
        xb = xb.to(dtype)
        out.append(torch.stack([torch.cdist(xb, rb.to(dtype)).min(1).values for rb in ref.split(4096)]).min(0).values)
    return torch.cat(out)
