"""FID, KID and IS of precomputed features, and bootstrap intervals over the samples, through torchmetrics.

The metric objects receive the features through an identity "feature network", so an extractor runs once per
image and its weights never enter a checkpoint."""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance

from gensuite.metrics.diversity import knn_radii


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


def bootstrap_intervals(
    real: torch.Tensor, fake: torch.Tensor, ext: str, pr_k: int, resamples: int, seed: int
) -> dict[str, float]:
    """95 % bootstrap intervals over the sample set (``resamples`` draws, the reference fixed): FID, precision, recall.

    Recall keeps each sample's k-NN radius from the full set (a resample with repeated samples would shrink
    radii to zero); precision is a mean over samples and resamples exactly."""
    g = torch.Generator().manual_seed(seed)
    n, m = len(real[: len(fake)]), len(fake)
    real_n = real[:n]
    d = torch.cdist(real_n, fake)
    inside_real = (d <= knn_radii(real_n, pr_k)[:, None]).any(0).double()  # (m,) sample in real manifold
    covers = d <= knn_radii(fake, pr_k)[None, :]  # (n, m) sample j's ball holds real i
    fids, precisions, recalls = [], [], []
    for _ in range(resamples):
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
