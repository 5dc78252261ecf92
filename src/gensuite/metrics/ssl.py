"""The ``ssl`` extractor: a small network trained on the data itself, without labels, by contrastive learning.

SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations"): two random
views of each image go through an encoder and a projection head; the NT-Xent loss pulls the two views of an image
together and pushes the other ``2B - 2`` images of the batch away. The features used for FID / KID /
precision-recall / the copy rate are the encoder's output ``h`` (before the projection head), as in the paper's
linear evaluation: the projection discards what the augmentations vary, ``h`` keeps more of the image.

Why contrastive, and why these augmentations: an evaluation space must separate what generators get wrong. The
views differ by what does *not* change an image's identity for a reader: a random resized crop (area 50-100 %,
aspect 3:4-4:3), a small rotation (±10°), a mild brightness / contrast change; for RGB also a mild saturation
change, random greyscale and horizontal flips. Deliberately **not** blur or noise (SimCLR uses blur): features
invariant to them would score blurred or noisy samples as real, the two failures this space must see. Grey
images get no flips (a mirrored 2 or R is not a 2 or R).

The network is `gensuite.metrics.features.SmallCNN` (the classifier's body, a 128-d feature layer, a 64-d
projection head without dropout). Its one-time training is ``steps`` Adam steps of ``batch_size`` images, on the
training split only (the held-out split, the reference of the headline metrics, is never seen), cached under the
cache dir by a fingerprint of the data (and split), the steps and the seed, and reused by every run.

>>> ext = SSLFeatures.for_data(datamodule, ".cache/gensuite", steps=200)  # doctest: +SKIP
>>> feats, logits = ext(images)  # (B, 128), None: no classes  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gensuite.metrics.features import SmallCNN, save_atomic

PROJECTION_DIM = 64
MAX_TRAIN_IMAGES = 50_000  # a larger folder trains on its first 50k training images (a fixed number of steps anyway)


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One random view of each image of ``x`` (float ``(B, C, H, W)`` in [0, 1]); see the module's docstring."""
    b, c = x.shape[:2]
    u = lambda lo, hi, *shape: torch.empty(b, *shape).uniform_(lo, hi, generator=generator)  # noqa: E731
    # random resized crop + rotation as one affine sampling grid (output coordinates -> input, in [-1, 1])
    area, log_ratio = u(0.5, 1.0), u(math.log(3 / 4), math.log(4 / 3))
    sx = (area * log_ratio.exp()).sqrt().clamp(max=1.0)  # the crop's width, as a fraction of the image's
    sy = (area / log_ratio.exp()).sqrt().clamp(max=1.0)
    cx, cy = u(-1, 1) * (1 - sx), u(-1, 1) * (1 - sy)  # the crop's centre: inside the image
    angle = u(-math.pi / 18, math.pi / 18)
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack([torch.stack([sx * cos, -sy * sin, cx], 1), torch.stack([sx * sin, sy * cos, cy], 1)], 1)
    grid = _affine_grid(theta.to(x), *x.shape[-2:])
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if c == 3:
        flip = torch.rand(b, generator=generator) < 0.5
        x = torch.where(flip.view(b, 1, 1, 1).to(x.device), x.flip(-1), x)
        grey = (x * torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
        saturation = u(0.7, 1.3, 1, 1, 1).to(x)
        saturation = torch.where(torch.rand(b, 1, 1, 1, generator=generator).to(x.device) < 0.2, 0.0, saturation)
        x = grey + saturation * (x - grey)  # 0: greyscale
    mean = x.mean((1, 2, 3), keepdim=True)
    x = mean + u(0.8, 1.2, 1, 1, 1).to(x) * (x - mean)  # contrast
    x = x * u(0.8, 1.2, 1, 1, 1).to(x)  # brightness
    return x.clamp(0, 1)


def _affine_grid(theta: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``F.affine_grid(theta, (B, C, h, w), align_corners=False)`` as one batched matmul (faster on CPU)."""
    pixel_centres = lambda n: (torch.arange(n, device=theta.device, dtype=theta.dtype) * 2 + 1) / n - 1  # noqa: E731
    xs, ys = torch.meshgrid(pixel_centres(w), pixel_centres(h), indexing="xy")  # (h, w) each
    base = torch.stack([xs, ys, torch.ones_like(xs)], -1).view(1, h * w, 3)
    return (base @ theta.transpose(1, 2)).view(-1, h, w, 2)  # (B, h, w, 2): output pixel -> input coordinates


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent (SimCLR, eq. 1): cross-entropy of each view against its partner among the 2B - 1 other views."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2B, P)
    sim = z @ z.T / temperature  # (2B, 2B) cosine similarities
    sim.fill_diagonal_(float("-inf"))  # a view is not its own positive
    b = len(z1)
    partner = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(z.device)
    return F.cross_entropy(sim, partner)


def train_ssl(
    images: torch.Tensor,
    steps: int = 200,
    batch_size: int = 128,
    lr: float = 2e-3,
    temperature: float = 0.2,
    seed: int = 0,
    verbose: bool = True,
) -> tuple[SmallCNN, list[float]]:
    """Train a `SmallCNN` by SimCLR on ``images`` (float ``(N, C, H, W)`` in [0, 1]); returns it (eval mode) and
    the mean NT-Xent loss of each tenth of the training. The global RNG is left as it was."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        net = SmallCNN(images.shape[1], PROJECTION_DIM, dropout=0.0)
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
        batch_size = min(batch_size, len(images))
        losses, window, t0 = [], [], time.perf_counter()
        net.train()
        for step in range(steps):
            idx = torch.randint(len(images), (batch_size,), generator=g)
            xb = images[idx]
            _, z = net(torch.cat([augment(xb, g), augment(xb, g)]))
            loss = nt_xent(*z.chunk(2), temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            window.append(loss.item())
            if (step + 1) % max(1, steps // 10) == 0 or step == steps - 1:
                losses.append(sum(window) / len(window))
                window = []
                if verbose and len(losses) % 5 == 0:
                    print(f"[gensuite] ssl features step {step + 1}/{steps}: NT-Xent {losses[-1]:.3f} "
                          f"({time.perf_counter() - t0:.0f}s)")  # fmt: skip
    return net.eval(), losses


@torch.no_grad()
def knn_accuracy(train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, test_y: torch.Tensor, k=5):
    """Share of ``test_f`` whose k nearest training features (cosine) vote for their label: how much of the
    classes the label-free features hold (Wu et al. 2018's k-NN monitor of self-supervised features)."""
    sim = F.normalize(test_f, dim=1) @ F.normalize(train_f, dim=1).T
    votes = train_y[sim.topk(k, dim=1).indices]  # (M, k)
    return float((votes.mode(1).values == test_y).double().mean())


class SSLFeatures(nn.Module):
    """The ``ssl`` extractor: 128-d features of a `SmallCNN` trained by SimCLR on the data's training images.

    Input: float images ``(B, C, H, W)`` in [0, 1]; output: ``(features (B, 128), None)`` (no class logits, so no
    Inception Score and no class coverage in this space).
    """

    name = "ssl"
    num_classes = 0

    def __init__(self, net: SmallCNN, fingerprint: str, knn_acc: float = float("nan")):
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.fingerprint, self.knn_acc = fingerprint, knn_acc
        self.num_features = net.features.out_features

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.net(images.float())[0], None

    @classmethod
    def for_data(cls, datamodule, cache_dir: str | os.PathLike, steps: int = 200, seed: int = 0) -> SSLFeatures:
        """Load the network for this data from the cache, or train it (rank 0 first; see `Evaluator.prepare`)."""
        key = hashlib.sha256(f"{datamodule.fingerprint()}|SimCLR-SmallCNN-v1|{steps}|{seed}".encode()).hexdigest()
        key = key[:16]
        path = Path(cache_dir) / "ssl" / f"{datamodule.name}-{key}.pt"
        if path.exists():
            blob = torch.load(path, map_location="cpu", weights_only=True)
            net = SmallCNN(blob["in_channels"], PROJECTION_DIM, dropout=0.0)
            net.load_state_dict(blob["state_dict"])
            return cls(net, key, blob["knn_acc"])
        x, y = datamodule.real_images("train", MAX_TRAIN_IMAGES)
        print(f"[gensuite] training the ssl feature network on {len(x)} {datamodule.name} images, {steps} steps, "
              "no labels (cached after)")  # fmt: skip
        t0 = time.perf_counter()
        net, losses = train_ssl(x, steps=steps, seed=seed)
        seconds = time.perf_counter() - t0
        knn_acc = float("nan")
        if datamodule.labelled:  # a check of the features, never used to train them
            vx, vy = datamodule.real_images("val")
            embed = lambda imgs: torch.cat([net(b)[0] for b in imgs.split(500)])  # noqa: E731
            with torch.no_grad():
                knn_acc = knn_accuracy(embed(x), y, embed(vx), vy)
        print(f"[gensuite] ssl features trained in {seconds:.0f}s: NT-Xent {losses[0]:.3f} -> {losses[-1]:.3f}"
              + (f", 5-NN val accuracy {knn_acc:.3f}" if math.isfinite(knn_acc) else ""))  # fmt: skip
        blob = {"in_channels": x.shape[1], "steps": steps, "train_s": seconds, "knn_acc": knn_acc}
        save_atomic(
            path, {"state_dict": net.state_dict(), "data": datamodule.name, "losses": losses, **blob}, cache_dir
        )
        return cls(net, key, knn_acc)
