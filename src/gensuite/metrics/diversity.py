"""Diversity measures on feature vectors, which torchmetrics does not provide.

- precision / recall: Kynkäänniemi et al. 2019, "Improved precision and recall metric for assessing generative
  models" — the k-NN balls of each set approximate its manifold; precision is the share of fakes inside the real
  manifold, recall the share of reals inside the fake manifold (k = 3 in the paper).
- density / coverage: Naeem et al. 2020, "Reliable fidelity and diversity metrics for generative models" (k = 5).
- class coverage: how many classes the samples hit with at least half their real share, from the feature
  classifier's predicted labels — mode collapse shows as a drop.
"""

from __future__ import annotations

import torch


def knn_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of each row of ``x`` to its k-th nearest other row."""
    d = torch.cdist(x, x)
    return d.kthvalue(k + 1, dim=1).values  # +1: the zero distance to itself


def precision_recall_density_coverage(real: torch.Tensor, fake: torch.Tensor, k: int = 3, k_dc: int = 5) -> dict:
    """All four measures for ``real (N, D)`` and ``fake (M, D)`` features (float64 inside)."""
    real, fake = real.double(), fake.double()
    r_real, r_fake = knn_radii(real, k), knn_radii(fake, k)
    d = torch.cdist(real, fake)  # (N, M)
    precision = (d <= r_real[:, None]).any(0).double().mean()
    recall = (d <= r_fake[None, :]).any(1).double().mean()
    r_real_dc = knn_radii(real, k_dc)
    inside = d <= r_real_dc[:, None]
    density = inside.double().sum(0).mean() / k_dc
    coverage = inside.any(1).double().mean()
    return {
        "precision": float(precision),
        "recall": float(recall),
        "density": float(density),
        "coverage": float(coverage),
    }


def class_coverage(fake_labels: torch.Tensor, real_labels: torch.Tensor, num_classes: int) -> dict:
    """Classes hit with >= half their real share, and the total-variation distance of the two histograms."""
    fake_hist = torch.bincount(fake_labels.long(), minlength=num_classes).double()
    real_hist = torch.bincount(real_labels.long(), minlength=num_classes).double()
    fake_p, real_p = fake_hist / fake_hist.sum(), real_hist / real_hist.sum()
    covered = ((fake_p >= 0.5 * real_p) & (real_p > 0)).sum()
    return {
        "coverage_classes": int(covered),
        "class_tv": float(0.5 * (fake_p - real_p).abs().sum()),
        "class_hist": fake_hist.long().tolist(),
    }
