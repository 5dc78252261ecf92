"""Vector quantisation of a latent grid against a learned codebook (VQ-VAE, van den Oord et al. 2017).

Each position of ``z_e`` ``(B, D, h, w)`` is replaced by its nearest codebook vector ``e_k``; gradients pass the
quantisation unchanged (straight-through: ``z_q = z_e + sg(e_k - z_e)``). The encoder is pulled towards its codes
by the commitment loss ``beta * ||z_e - sg(e_k)||^2`` (eq. 3). The codebook itself learns either

- by exponential moving averages of the vectors assigned to each code (``ema=true``; paper appendix A.1,
  Razavi et al. 2019): ``N_k <- g N_k + (1-g) n_k``, ``m_k <- g m_k + (1-g) sum z``, ``e_k = m_k / N_k``
  (Laplace-smoothed counts), or
- by gradient of the codebook loss ``||sg(z_e) - e_k||^2`` (``ema=false``; eq. 3, second term).

Codes that no vector chose for ``dead_after`` training steps are restarted at randomly chosen encoder outputs of the
current batch (Dhariwal et al. 2020, Jukebox; Zeghidour et al. 2021), so the codebook keeps being used.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from gensuite.errors import ConfigError, require_positive


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    """Sum over DDP ranks (identity in a single process): every rank must update the codebook alike."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t


class VectorQuantizer(nn.Module):
    """Nearest-code quantisation with a ``num_codes x code_dim`` codebook.

    Args:
        num_codes, code_dim: codebook size K and vector size D.
        ema: update the codebook by moving averages (else by the gradient of the codebook loss).
        decay: EMA decay g (also of the usage counts kept in both modes).
        commitment: beta, the weight of the commitment loss.
        dead_after: a code that no vector chose in this many training steps is restarted; 0: never.
        eps: Laplace smoothing of the EMA counts.

    ``forward(z)`` with ``z`` ``(B, D, h, w)`` returns ``(z_q, codes, stats)``: ``z_q`` like ``z``
    (straight-through), ``codes`` ``(B, h, w)`` int64, ``stats`` with ``vq_loss`` (to add to the loss),
    ``commitment``, ``perplexity`` (exp of the entropy of this batch's code histogram), ``usage`` (fraction of codes
    used by this batch), ``counts`` ``(K,)`` and, in training, ``restarts`` (codes restarted at this step).
    """

    def __init__(
        self,
        num_codes: int = 128,
        code_dim: int = 32,
        ema: bool = True,
        decay: float = 0.99,
        commitment: float = 0.25,
        dead_after: int = 20,
        eps: float = 1e-5,
    ):
        super().__init__()
        require_positive(num_codes=num_codes, code_dim=code_dim)
        if not 0 < decay < 1:
            raise ConfigError(f"decay must be in (0, 1), got {decay}", keys=("decay",))
        if commitment < 0 or dead_after < 0:
            raise ConfigError("commitment and dead_after must be >= 0", keys=("commitment", "dead_after"))
        self.num_codes, self.code_dim, self.ema = num_codes, code_dim, ema
        self.decay, self.commitment, self.dead_after, self.eps = decay, commitment, dead_after, eps
        # EMA mode writes the codebook itself; a Parameter either way so checkpoints look alike
        self.codebook = nn.Parameter(torch.randn(num_codes, code_dim) / math.sqrt(code_dim), requires_grad=not ema)
        self.register_buffer("cluster_size", torch.zeros(num_codes))  # EMA of assignments per batch
        self.register_buffer("embed_sum", torch.zeros(num_codes, code_dim))
        self.register_buffer("initialised", torch.tensor(False))
        self.register_buffer("steps", torch.tensor(0, dtype=torch.long))
        self.register_buffer("last_used", torch.zeros(num_codes, dtype=torch.long))  # training step
        self.register_buffer("restarts_total", torch.tensor(0, dtype=torch.long))

    def code_distribution(self) -> torch.Tensor:
        """How often each code was used in training (EMA), normalised ``(K,)``; uniform before any training."""
        total = self.cluster_size.sum()
        if total <= 0:
            return torch.full_like(self.cluster_size, 1.0 / self.num_codes)
        return self.cluster_size / total

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``(B, h, w)`` -> their vectors as a grid ``(B, D, h, w)``."""
        return self.codebook[codes].permute(0, 3, 1, 2)

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code of each row of ``flat`` ``(N, D)`` (squared Euclidean distance)."""
        cb = self.codebook.float()
        d = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ cb.t() + cb.pow(2).sum(1)[None]  # (N, K)
        return d.argmin(1)

    @torch.no_grad()
    def _initialise(self, flat: torch.Tensor) -> None:
        # data-dependent start: codes at random encoder outputs (uniform-random codes far from the data die at once)
        idx = torch.randint(0, flat.shape[0], (self.num_codes,), device=flat.device)
        init = flat[idx].clone()
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(init, 0)
        self.codebook.data.copy_(init)
        self.initialised.fill_(True)

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, codes: torch.Tensor) -> int:
        """EMA statistics (and, in EMA mode, the codebook), then dead-code restarts. Returns restarts."""
        self.steps += 1
        counts = _all_reduce(torch.bincount(codes, minlength=self.num_codes).float())
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        if self.ema:
            sums = _all_reduce(torch.zeros_like(self.embed_sum).index_add_(0, codes, flat))
            self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
            n = self.cluster_size.sum()
            smoothed = (self.cluster_size + self.eps) / (n + self.num_codes * self.eps) * n
            used = self.cluster_size > 0  # a code never assigned keeps its vector (m_k = N_k = 0)
            self.codebook.data[used] = self.embed_sum[used] / smoothed[used, None]
        self.last_used[counts > 0] = self.steps
        if self.dead_after <= 0:
            return 0
        dead = self.steps - self.last_used >= self.dead_after
        n_dead = int(dead.sum())
        if n_dead:
            idx = torch.randint(0, flat.shape[0], (n_dead,), device=flat.device)
            fresh = flat[idx].clone()
            if dist.is_available() and dist.is_initialized():
                full = torch.zeros(self.num_codes, self.code_dim, device=flat.device)
                full[dead] = fresh
                dist.broadcast(full, 0)  # rank 0's choice everywhere
                fresh = full[dead]
            self.codebook.data[dead] = fresh
            # a restarted code starts afresh at its new place: one assignment's worth of EMA statistics, and
            # another `dead_after` steps to be chosen
            self.cluster_size[dead] = 1 - self.decay
            self.embed_sum[dead] = fresh * (1 - self.decay)
            self.last_used[dead] = self.steps
            self.restarts_total += n_dead
        return n_dead

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        # distances and codebook statistics in float32: under bf16 autocast, nearest codes and sums drift
        with torch.autocast(device_type=z.device.type, enabled=False):
            return self._quantise(z)

    def _quantise(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        b, d, h, w = z.shape
        if d != self.code_dim:
            raise ValueError(f"VectorQuantizer has code_dim={self.code_dim} but the grid has {d} channels")
        z = z.float()
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)  # (B, D, h, w) -> (B*h*w, D)
        if self.training and not bool(self.initialised):
            self._initialise(flat.detach())
        codes = self.nearest(flat.detach())
        stats: dict[str, torch.Tensor] = {}
        if self.training:
            stats["restarts"] = torch.tensor(float(self._update(flat.detach(), codes)))
        quantised = self.codebook[codes]  # (B*h*w, D)
        commit = F.mse_loss(flat, quantised.detach())
        vq_loss = self.commitment * commit
        if not self.ema:
            vq_loss = vq_loss + F.mse_loss(quantised, flat.detach())
        # straight-through: the forward value is the code, the gradient reaches z unchanged
        z_q = (flat + (quantised - flat).detach()).view(b, h, w, d).permute(0, 3, 1, 2)
        counts = torch.bincount(codes, minlength=self.num_codes).float()
        p = counts / counts.sum()
        stats.update(
            vq_loss=vq_loss,
            commitment=commit.detach(),
            perplexity=torch.exp(-(p * torch.log(p.clamp_min(1e-10))).sum()),
            usage=(counts > 0).float().mean(),
            counts=counts,
        )
        return z_q, codes.view(b, h, w), stats
