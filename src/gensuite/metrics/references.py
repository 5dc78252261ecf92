"""What the samples are measured against: the feature spaces asked for, and the real features of each.

References (features cached on disk by a fingerprint of data, split, resolution and extractor):

- **held-out** (the headline numbers ``val/fid_<ex>``, ``val/kid_<ex>``, precision / recall / density / coverage):
  the data's ``test`` split, which no model trains on and no checkpoint is chosen by. The floor
  (``val/fid_<ex>_floor``) is what a perfect model would score: as many real *training* images as there are
  samples, against the same held-out reference.
- **validation** (``val/fid_<ex>_val``): the samples against the data's ``val`` split, the number that chooses:
  checkpoints, early stopping and sweeps monitor it (`gensuite.record.selects_on_test` refuses a held-out key there),
  so the held-out numbers only report. Where the data has no test split the two references are the same images.
- **train** (``val/fid_<ex>_train``, with ``val/fid_<ex>_train_floor``): samples against half A of the training
  split, the floor half B against half A. A model that copies its training images scores at this floor; the gap
  between the held-out and the train-referenced FID is how much closer the samples are to what was trained on.
- **copy rate** (``val/copy_rate_<ex>``, ``val/copy_rate_pixels``): the share of samples whose nearest training
  image is closer than the 5th percentile of the held-out images' nearest-training-image distances. Real unseen
  images score ~0.05 by construction; a model that reproduces its training images scores towards 1.

- **intra-class** (conditional models: ``val/fid_<ex>_intra``): the mean over classes of the FID of the samples
  drawn with label c against the held-out images of class c; ``val/fid_<ex>_intra_floor`` is the same for as many
  real training images per class, ``eval/n_per_class_intra`` the samples per class. The samples are drawn with
  known labels, the shared balanced rule (``model.sample_labels``), by the one draw loop
  (`gensuite.families.draw.draw`), with the sampling options ``Evaluator.options`` (eval.py's ``sampling.*``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from gensuite.errors import ConfigError
from gensuite.record import SPACES
from gensuite.safe_files import atomic_writer


def parse_spaces(features) -> list[str]:
    """``metrics.features`` as a list of spaces: ``["all"]``, ``[]`` (none) or names from `SPACES`. Takes a name,
    ``all``, ``none``, a list (``[classifier, ssl]``) or comma-separated names (``classifier,ssl``)."""
    if features is None:
        return []
    names = [str(f).strip() for f in features.split(",")] if isinstance(features, str) else [str(f) for f in features]
    names = [f for f in names if f]
    if names in (["all"], ["none"]):
        return [] if names == ["none"] else names
    bad = [f for f in names if f not in SPACES]
    if bad or not names or len(set(names)) < len(names):
        raise ConfigError(
            f"features must be all, none, or a list of distinct names from {', '.join(SPACES)}; got {features!r}",
            keys=("features",),
            fix="metrics.features=all (every space the data allows: classifier where labelled, ssl, inception "
            "with metrics.inception_weights), or e.g. metrics.features=[classifier,ssl] or metrics.features=ssl",
        )
    return names


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


def spaces_for(spaces_asked: list[str], datamodule, inception_weights: str | None, notes: list[str]) -> list[str]:
    """The spaces this data gets: the ones asked for that it allows (``classifier`` needs class labels); why
    one is missing goes into ``notes``."""
    labelled = datamodule.labelled
    if spaces_asked == ["all"]:
        spaces = ["classifier"] * labelled + ["ssl"] + ["inception"] * bool(inception_weights)
        if not labelled:
            notes.append(
                f"data={datamodule.name} has no class labels: no 'classifier' feature space and no class "
                "coverage; the sample metrics are in the label-free 'ssl' space"
                + ("" if inception_weights else " (add inception with metrics.inception_weights=<file>)")
            )
        return spaces
    spaces = list(spaces_asked)
    if "classifier" in spaces and not labelled:
        spaces.remove("classifier")
        note = (
            f"no 'classifier' feature space: data={datamodule.name} has no class labels, so the feature "
            "classifier cannot be trained. "
            + ("" if spaces else "FID needs a feature extractor: ")
            + "metrics.features=ssl (trained here without labels) or metrics.features=all; or give the folder "
            "class sub-folders, or metrics.features=inception metrics.inception_weights=<file>."
        )
        notes.append(note)
        print(f"[gensuite] WARNING: {note}")
    return spaces


@torch.no_grad()
def features_of(
    ext: nn.Module, images: torch.Tensor, batch_size: int, device
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The features (and logits, where ``ext`` has them) of ``images``, ``batch_size`` at a time, on the CPU."""
    feats, logits = [], []
    for xb in images.split(batch_size):
        f, lg = ext(xb.to(device))
        feats.append(f.float().cpu())
        if lg is not None:
            logits.append(lg.float().cpu())
    return torch.cat(feats), (torch.cat(logits) if logits else None)


def reference_features(
    datamodule, ext: nn.Module, held_out: str, size: int, reference_size: int, cache_dir: str, batch_size: int, device
) -> dict:
    """Features (and logits, labels) of ``size`` training and up to ``reference_size`` held-out (and val) images
    in the space of ``ext``, cached; and the copy-rate threshold of that space."""
    key = f"{datamodule.name}-{datamodule.fingerprint()}-{ext.name}-{ext.fingerprint}-{size}-{held_out}-v3"
    path = Path(cache_dir) / "reference" / f"{key}.pt"
    if path.exists():
        ref = torch.load(path, map_location="cpu", weights_only=True)
    else:
        ref = {}
        parts = {"train": ("train", size), "test": (held_out, reference_size)}
        if held_out != "val":
            parts["val"] = ("val", reference_size)
        for part, (split, n) in parts.items():
            x, y = datamodule.real_images(split, n)
            f, logits = features_of(ext, x, batch_size, device)
            ref[part] = {"features": f, "labels": y, "logits": logits}
        ref["extractor_val_acc"] = float(getattr(ext, "val_acc", float("nan")))
        with atomic_writer(path, "paths.cache_dir", cache_dir) as f:  # never through a link
            torch.save(ref, f)
    ref.setdefault("val", ref["test"])  # no test split: the held-out reference is the val split already
    ref["threshold"] = torch.quantile(nearest(ref["test"]["features"], ref["train"]["features"]), COPY_QUANTILE)
    return ref


def pixel_reference(datamodule, held_out: str, size: int, reference_size: int) -> dict:
    """``size`` training images as uint8 rows, and the pixel copy rate's threshold: the 5th percentile of the
    held-out images' distances to their nearest training image, as in every feature space."""
    as_bytes = lambda x: x.flatten(1).mul(255).round().to(torch.uint8)  # noqa: E731
    train_pixels = as_bytes(datamodule.real_images("train", size)[0])
    test_pixels = as_bytes(datamodule.real_images(held_out, reference_size)[0])
    threshold = torch.quantile(nearest(test_pixels, train_pixels), COPY_QUANTILE)
    return {"train": train_pixels, "threshold": threshold}
