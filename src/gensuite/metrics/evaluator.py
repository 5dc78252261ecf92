"""One evaluation for every family: it calls ``model.sample(n, generator)`` and never asks which family it is.

Reference statistics: the (seeded, shuffled) train split is cut in two halves. Generated samples are compared
with half A (the reference); the floor — real images of half B against half A, with the same number of samples
where the data allows — is what a perfect model would score and is reported beside every FID and KID
(``val/fid_<extractor>_floor``). Features of both halves are cached on disk by a fingerprint of (data, split,
resolution, extractor) and reused across runs.

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
from gensuite.metrics.diversity import class_coverage, precision_recall_density_coverage
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
        n_train = len(datamodule.train)
        half = n_train // 2
        size = min(half, self.reference_size)
        key = f"{datamodule.name}-{datamodule.fingerprint()}-{ext.name}-{ext.fingerprint}-{size}"
        path = Path(self.cache_dir) / "reference" / f"{key}.pt"
        if path.exists():
            return torch.load(path, map_location="cpu", weights_only=True)
        ref = {}
        for part, offset in (("a", 0), ("b", half)):
            x, y = datamodule.real_images("train", size, offset)
            f, logits = self._features(x, device)
            ref[part] = {"features": f, "labels": y, "logits": logits}
        ref["extractor_val_acc"] = float(getattr(ext, "val_acc", float("nan")))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(ref, tmp)
        os.replace(tmp, path)
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
    ) -> tuple[torch.Tensor, torch.Tensor | None, float]:
        """This rank's share of ``n`` samples: features, logits and sampling seconds."""
        n_local = math.ceil(n / world_size)
        g = torch.Generator(device=device).manual_seed(self.seed + 1_000_003 * rank)
        feats, logits, seconds = [], [], 0.0
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
            f, lg = self.extractor(images.float().clamp(0, 1))
            feats.append(f.float())
            if lg is not None:
                logits.append(lg.float())
            done += b
        model.train(was_training)
        return torch.cat(feats), (torch.cat(logits) if logits else None), seconds

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
        fake, logits, seconds = self.generate(model, n, device, rank, world_size)
        n_local = len(fake)
        if gather is not None and world_size > 1:
            fake = gather(fake)
            logits = gather(logits) if logits is not None else None
            seconds = float(gather(torch.tensor([seconds], device=device)).max())
        fake = fake[:n].cpu().double()
        logits = logits[:n].cpu() if logits is not None else None
        return self.score(fake, logits, images_per_s=world_size * n_local / max(seconds, 1e-9))

    def score(self, fake: torch.Tensor, logits: torch.Tensor | None, images_per_s: float | None = None) -> dict:
        """Every metric from generated features (and logits) against the reference."""
        ext, ref = self.extractor.name, self.reference
        real_a = ref["a"]["features"].double()
        real_b = ref["b"]["features"][: len(fake)].double()
        n = len(fake)
        out = {
            f"val/fid_{ext}": fid_from_features(real_a, fake),
            f"val/fid_{ext}_floor": fid_from_features(real_a, real_b),
            f"val/kid_{ext}": kid_from_features(real_a, fake, self.kid_subset_size, self.kid_subsets, self.seed),
            f"val/kid_{ext}_floor": kid_from_features(
                real_a, real_b, self.kid_subset_size, self.kid_subsets, self.seed
            ),
        }
        prdc = precision_recall_density_coverage(real_a[:n], fake, k=self.pr_k)
        out.update({f"val/{k}_{ext}": v for k, v in prdc.items()})
        info = {
            "eval/n_samples": n,
            "eval/n_floor": len(real_b),
            "eval/n_reference": len(real_a),
            "eval/features": ext,
        }
        if logits is not None:
            out[f"val/is_{ext}"] = inception_score_from_logits(logits, self.seed)
            num_classes = getattr(self.extractor, "num_classes", 0)
            if num_classes:
                cov = class_coverage(logits.argmax(1), ref["a"]["labels"], num_classes)
                out["val/coverage_classes"] = cov["coverage_classes"]
                out["val/class_tv"] = cov["class_tv"]
                info["eval/class_hist"] = cov["class_hist"]
        if math.isfinite(ref.get("extractor_val_acc", float("nan"))):
            out["features/val_acc"] = ref["extractor_val_acc"]
        if images_per_s is not None:
            out["time/sample_images_per_s"] = images_per_s
        self.last_info = info
        return out
