"""One evaluation for every family: it calls ``model.sample(n, generator)`` and never asks which family it is.

Every metric is computed in every feature space asked for (``metrics.features``; default ``all``: ``classifier``
where the data has labels, the label-free ``ssl`` always, ``inception`` where its weights are given), and the space
is named in every key (``val/fid_classifier``, ``val/fid_ssl``): whether a ranking of models holds in more than one
space can be read from one ``metrics.json``. The class coverage comes from the classifier.

References (`gensuite.metrics.references`): held-out, validation, train and copy rate, each cached on disk;
intra-class FID for conditional models.

``metrics.bootstrap=B`` resamples the generated features B times (no new samples) for 95 % percentile intervals
``val/<metric>_lo`` / ``val/<metric>_hi`` of FID, precision and recall.

FID, KID and IS come from torchmetrics, fed precomputed features (`gensuite.metrics.scores`).
Under DDP every rank samples ``n / world_size`` images with its own seed; the features are all-gathered and every
rank computes the same numbers.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable

import torch
from torch import nn

from gensuite.contracts import info_of
from gensuite.errors import ConfigError
from gensuite.families.draw import draw  # the draw loop and label rule shared with sample.py (no family code)
from gensuite.metrics.diversity import class_coverage, precision_recall_density_coverage
from gensuite.metrics.features import ClassifierFeatures, InceptionFeatures
from gensuite.metrics.references import (
    features_of,
    nearest,
    parse_spaces,
    pixel_reference,
    reference_features,
    spaces_for,
)
from gensuite.metrics.scores import (
    bootstrap_intervals,
    fid_from_features,
    inception_score_from_logits,
    kid_from_features,
)
from gensuite.metrics.ssl import SSLFeatures
from gensuite.record import (  # the keys of the run record this evaluation fills in
    CLASS_COVERAGE_KEY,
    HEADLINE_SPACE_KEY,
    N_SAMPLES_KEY,
    SAMPLING_SPEED_KEY,
    SPACES_KEY,
    space_key,
)

# KID and IS keep their inputs (here: features) in memory, which is what we want; silence the reminder.
warnings.filterwarnings("ignore", message=r".*will save all extracted features in buffer.*")


class Evaluator:
    """Sample-based metrics of a model against cached real statistics, in every feature space asked for.

    Args:
        features: the feature spaces: ``all`` (every space the data allows: ``classifier`` where it has labels,
            ``ssl`` always, ``inception`` where ``inception_weights`` is given), one name, a list of names
            (``[classifier, ssl]``), or ``none``. Every metric is computed in each space and named after it
            (``val/fid_ssl``); the first space is the headline one (``eval/features``, the copy-rate panel).
        n_samples: generated images per evaluation (the same N for every number that will be compared).
        seed: seed of the sampling noise (rank r uses ``seed + r``): the same seed gives the same samples.
        batch_size: images per sampling / feature batch.
        kid_subset_size, kid_subsets: KID's subsets (clipped to the number of samples).
        pr_k: k of the k-NN manifolds for precision / recall.
        reference_size: cap on the reference half (real images compared against).
        inception_weights: local weights file for ``inception`` (else torch hub cache, else download).
        cache_dir: where the feature networks and the real features are cached.
        classifier_epochs: training epochs of the ``classifier`` extractor.
        ssl_steps: training steps of the ``ssl`` extractor (`gensuite.metrics.ssl`).
        bootstrap: resamples of the sample set for the 95 % intervals (0: none).

    >>> ev = Evaluator(features="all", n_samples=500)  # doctest: +SKIP
    >>> ev.prepare(datamodule); ev.evaluate(model)["val/fid_ssl"]  # doctest: +SKIP
    """

    def __init__(
        self,
        features: str | list[str] = "all",
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
        ssl_steps: int = 200,
        bootstrap: int = 100,
    ):
        self.spaces_asked = parse_spaces(features)
        for name, v in {
            "n_samples": n_samples,
            "batch_size": batch_size,
            "kid_subset_size": kid_subset_size,
        }.items():
            if v < 2:
                raise ConfigError(f"{name} must be >= 2, got {v}", keys=(name,))
        if ssl_steps < 1:
            raise ConfigError(f"ssl_steps must be >= 1, got {ssl_steps}", keys=("ssl_steps",))
        self.n_samples, self.seed, self.batch_size = n_samples, seed, batch_size
        self.kid_subset_size, self.kid_subsets, self.pr_k = kid_subset_size, kid_subsets, pr_k
        self.reference_size = reference_size
        self.inception_weights, self.cache_dir = inception_weights, cache_dir
        self.classifier_epochs, self.ssl_steps = classifier_epochs, ssl_steps
        self.bootstrap = bootstrap
        #: the `SamplingOptions` the model samples with (eval.py's ``sampling.*``); None: the model's own defaults
        self.options = None
        self._image_shape: tuple[int, ...] | None = None
        self.nearest_panel: torch.Tensor | None = None
        self.extractors: dict[str, nn.Module] = {}  # space -> extractor, the headline space first
        self.references: dict[str, dict] = {}  # space -> real features of train and held-out images, threshold
        self.pixels: dict | None = None  # training images as uint8 rows and the pixel copy-rate threshold
        self._floors: dict[tuple, dict[str, float]] = {}  # (space, n[, intra]) -> the real-vs-real numbers
        self.notes: list[str] = []
        self.last_info: dict = {}
        self._prepared = False

    # -- preparation -----------------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return bool(self.extractors)

    @property
    def extractor(self) -> nn.Module | None:
        """The headline space's extractor."""
        return next(iter(self.extractors.values()), None)

    @property
    def reference(self) -> dict | None:
        """The headline space's reference features."""
        return next(iter(self.references.values()), None)

    def prepare(self, datamodule, device: torch.device | str = "cpu") -> None:
        """Build the extractors and the reference features (from the cache when present). Idempotent.

        The global RNG is left untouched (building a network draws its initial weights from it): a run must draw
        the same noise whether its feature networks came from the cache or were trained now.
        """
        if self._prepared or not self.spaces_asked:
            return
        with torch.random.fork_rng():
            self._prepare(datamodule, device)
        self._prepared = True

    def spaces_for(self, datamodule) -> list[str]:
        """The spaces this data gets: the ones asked for that it allows (``classifier`` needs class labels)."""
        return spaces_for(self.spaces_asked, datamodule, self.inception_weights, self.notes)

    def _prepare(self, datamodule, device) -> None:
        info = info_of(datamodule)
        if info is None:
            raise ConfigError(
                f"the data module {type(datamodule).__name__} declares nothing about its data: the evaluation needs "
                "its info() (gensuite.contracts.DataInfo)",
                fix="subclass gensuite.data.images.ImageDataModule (or TextDataModule), or add info() -> DataInfo",
            )
        if not info.is_image:
            return  # text: the likelihood and the samples speak for the model
        for space in self.spaces_for(datamodule):
            if space == "classifier":
                ext = ClassifierFeatures.for_data(datamodule, self.cache_dir, epochs=self.classifier_epochs)
            elif space == "ssl":
                ext = SSLFeatures.for_data(datamodule, self.cache_dir, steps=self.ssl_steps)
            else:
                ext = InceptionFeatures(self.inception_weights)
            self.extractors[space] = ext.to(device)
        if not self.extractors:
            return
        held_out = info.held_out
        if held_out == "val":
            self.notes.append(f"data={datamodule.name} has no test split: the held-out reference is its val split")
        size = min(len(datamodule.train), self.reference_size)
        for space, ext in self.extractors.items():
            self.references[space] = self._reference(datamodule, ext, held_out, size, device)
        self.pixels = pixel_reference(datamodule, held_out, size, self.reference_size)

    def _reference(self, datamodule, ext: nn.Module, held_out: str, size: int, device) -> dict:
        return reference_features(
            datamodule, ext, held_out, size, self.reference_size, self.cache_dir, self.batch_size, device
        )

    def _features(self, ext: nn.Module, images: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor | None]:
        return features_of(ext, images, self.batch_size, device)

    # -- evaluation ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self, model, n: int, device, rank: int = 0, world_size: int = 1
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor | None], torch.Tensor, float]:
        """This rank's share of ``n`` samples, drawn with ``self.options``: features and logits per space, uint8
        pixels ``(n, C*H*W)`` and the sampling seconds.

        A conditional model draws sample i of the whole set (all ranks, in rank order) with label
        ``sample_labels(n)[i]`` (`gensuite.families.draw.draw` from this rank's start): after the gather the labels
        are ``sample_labels(n)``."""
        n_local = math.ceil(n / world_size)
        g = torch.Generator(device=device).manual_seed(self.seed + 1_000_003 * rank)
        feats = {space: [] for space in self.extractors}
        logits = {space: [] for space in self.extractors}
        pixels, seconds = [], 0.0
        was_training = model.training
        model.eval()
        batches = draw(model, n_local, self.batch_size, g, options=self.options, start=rank * n_local)
        while True:
            t0 = time.perf_counter()
            images = next(batches, (None,))[0]
            if images is None:
                break
            if images.device.type == "cuda":
                torch.cuda.synchronize(images.device)
            seconds += time.perf_counter() - t0
            images = images.float().clamp(0, 1)
            self._image_shape = tuple(images.shape[1:])
            for space, ext in self.extractors.items():
                f, lg = ext(images)
                feats[space].append(f.float())
                if lg is not None:
                    logits[space].append(lg.float())
            pixels.append(images.flatten(1).mul(255).round().to(torch.uint8))
        model.train(was_training)
        return (
            {space: torch.cat(f) for space, f in feats.items()},
            {space: torch.cat(lg) if lg else None for space, lg in logits.items()},
            torch.cat(pixels),
            seconds,
        )

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
        for ext in self.extractors.values():
            ext.to(device)
        fake, logits, pixels, seconds = self.generate(model, n, device, rank, world_size)
        n_local = len(pixels)
        if gather is not None and world_size > 1:
            fake = {space: gather(f) for space, f in fake.items()}
            logits = {space: gather(lg) if lg is not None else None for space, lg in logits.items()}
            seconds = float(gather(torch.tensor([seconds], device=device)).max())
            pixels = gather(pixels)
        fake = {space: f[:n].cpu().double() for space, f in fake.items()}
        logits = {space: lg[:n].cpu() if lg is not None else None for space, lg in logits.items()}
        pixels = pixels[:n].cpu()
        labels = model.sample_labels(len(pixels)) if getattr(model, "conditional", False) else None
        labels = None if labels is None else labels.cpu()
        per_s = world_size * n_local / max(seconds, 1e-9)
        return self.score(fake, logits, images_per_s=per_s, pixels=pixels, labels=labels)

    @torch.no_grad()
    def evaluate_images(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
        """Every metric of given images (float ``(N, C, H, W)`` in [0, 1], e.g. another tool's samples) against
        the same reference as a model's samples (call `prepare` first); with their ``labels`` ``(N,)`` (the classes
        they were drawn for) also the intra-class FID."""
        if not self.active:
            return {}
        images = images.float().clamp(0, 1)
        self._image_shape = tuple(images.shape[1:])
        fake, logits = {}, {}
        for space, ext in self.extractors.items():
            device = next(ext.parameters(), torch.empty(0)).device
            f, logits[space] = self._features(ext, images, device)
            fake[space] = f.double()
        return self.score(fake, logits, pixels=images.flatten(1).mul(255).round().to(torch.uint8), labels=labels)

    def score(
        self,
        fake: dict[str, torch.Tensor],
        logits: dict[str, torch.Tensor | None],
        images_per_s: float | None = None,
        pixels: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> dict:
        """Every metric from generated features and logits (per space) and uint8 pixels ``(N, C*H*W)`` (the pixel
        copy rate and the nearest-image panel) against the references; ``labels`` ``(N,)``: the class each sample
        was drawn for (a conditional model), for the intra-class FID."""
        out: dict[str, float] = {}
        intra_n = None
        for space in self.extractors:
            out.update(self._score_space(space, fake[space], logits.get(space)))
            if labels is not None:
                intra, intra_n = self._score_intra(space, fake[space], labels)
                out.update(intra)
        headline = next(iter(self.extractors))
        n = len(fake[headline])
        train_pixels = self.pixels["train"]
        if pixels is not None and pixels.shape[1] == train_pixels.shape[1]:
            dist = nearest(pixels, train_pixels)
            out["val/copy_rate_pixels"] = float((dist < self.pixels["threshold"]).double().mean())
            if self._image_shape is not None:
                # "samples next to their nearest training images", in the headline space's features
                k = min(8, n)
                idx = torch.cdist(fake[headline][:k], self.references[headline]["train"]["features"].double())
                rows = torch.stack([pixels[:k], train_pixels[idx.argmin(1)]]).float() / 255
                self.nearest_panel = rows.view(2, k, *self._image_shape)
        ref = self.references[headline]
        info = {
            N_SAMPLES_KEY: n,
            "eval/n_floor": min(n, len(ref["train"]["features"])),
            "eval/n_reference": len(ref["test"]["features"]),
            "eval/n_train_reference": len(ref["train"]["features"]) // 2,
            HEADLINE_SPACE_KEY: headline,
            SPACES_KEY: ",".join(self.extractors),
        }
        if intra_n is not None:
            info["eval/n_per_class_intra"] = intra_n
        for space, ext in self.extractors.items():
            lg = logits.get(space)
            if lg is not None and getattr(ext, "num_classes", 0) and CLASS_COVERAGE_KEY not in out:
                cov = class_coverage(lg.argmax(1), self.references[space]["test"]["labels"], ext.num_classes)
                out[CLASS_COVERAGE_KEY] = cov["coverage_classes"]
                out["val/class_tv"] = cov["class_tv"]
                info["eval/class_hist"] = cov["class_hist"]
            if math.isfinite(self.references[space].get("extractor_val_acc", float("nan"))):
                out["features/val_acc"] = self.references[space]["extractor_val_acc"]
            if math.isfinite(getattr(ext, "knn_acc", float("nan"))):
                out[f"features/{space}_knn_acc"] = ext.knn_acc
        if images_per_s is not None:
            out[SAMPLING_SPEED_KEY] = images_per_s
        self.last_info = info
        return out

    def _score_space(self, ext: str, fake: torch.Tensor, logits: torch.Tensor | None) -> dict[str, float]:
        """The metrics of one feature space: held-out and train-referenced FID / KID with their floors, precision /
        recall / density / coverage, the copy rate, the bootstrap intervals, and IS where it has logits."""
        ref = self.references[ext]
        test = ref["test"]["features"].double()
        train = ref["train"]["features"].double()
        n = len(fake)
        half = len(train) // 2
        train_a, train_b = train[:half], train[half:][:n]
        floor = train[:n]  # real images not in the held-out reference, as many as the samples
        kid = lambda real, x: kid_from_features(real, x, self.kid_subset_size, self.kid_subsets, self.seed)  # noqa: E731
        if (ext, n) not in self._floors:  # real against real: the same for every evaluation of n samples
            self._floors[ext, n] = {
                space_key("fid", ext, "floor"): fid_from_features(test, floor),
                space_key("kid", ext, "floor"): kid(test, floor),
                space_key("fid", ext, "train_floor"): fid_from_features(train_a, train_b),
            }
        out = {
            space_key("fid", ext): fid_from_features(test, fake),
            space_key("kid", ext): kid(test, fake),
            space_key("fid", ext, "train"): fid_from_features(train_a, fake),
            space_key("fid", ext, "val"): fid_from_features(ref["val"]["features"].double(), fake),
            **self._floors[ext, n],
        }
        prdc = precision_recall_density_coverage(test[:n], fake, k=self.pr_k)
        out.update({space_key(k, ext): v for k, v in prdc.items()})
        out[space_key("copy_rate", ext)] = float((nearest(fake, train) < ref["threshold"]).double().mean())
        if self.bootstrap:
            out.update(self._intervals(test, fake, ext))
        if logits is not None:
            out[space_key("is", ext)] = inception_score_from_logits(logits, self.seed)
        return out

    def _score_intra(self, ext: str, fake: torch.Tensor, labels: torch.Tensor) -> tuple[dict[str, float], int | None]:
        """Intra-class FID of one space: the mean over classes of FID(held-out images of class c, samples of class
        c), and its floor (as many real training images of class c per class). Classes are the ones both the samples
        and the held-out reference have; each class's samples are cut to the smallest class's count, so every
        class's FID has the same bias. ``({}, None)`` when no class has 2 samples and 2 references."""
        ref = self.references[ext]
        test, test_y = ref["test"]["features"].double(), ref["test"]["labels"]
        train, train_y = ref["train"]["features"].double(), ref["train"]["labels"]
        labels = labels.cpu()
        classes = [c for c in labels.unique().tolist() if c >= 0 and int((test_y == c).sum()) >= 2]
        if not classes:
            return {}, None
        n_c = min(int((labels == c).sum()) for c in classes)
        n_c = min(n_c, *(int((train_y == c).sum()) for c in classes))  # the floor needs as many real images
        if n_c < 2:
            return {}, None
        key = (ext, "intra", n_c, tuple(classes))
        if key not in self._floors:
            floor = [fid_from_features(test[test_y == c], train[train_y == c][:n_c]) for c in classes]
            self._floors[key] = {f"val/fid_{ext}_intra_floor": sum(floor) / len(floor)}
        fids = [fid_from_features(test[test_y == c], fake[labels == c][:n_c]) for c in classes]
        return {f"val/fid_{ext}_intra": sum(fids) / len(fids), **self._floors[key]}, n_c

    def _intervals(self, real: torch.Tensor, fake: torch.Tensor, ext: str) -> dict[str, float]:
        return bootstrap_intervals(real, fake, ext, self.pr_k, self.bootstrap, self.seed)
