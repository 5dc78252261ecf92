"""Variational autoencoder (Kingma & Welling 2014) with a Gaussian latent and a β weight (Higgins et al. 2017).

Loss per example: ``-log p(x|z) + β · KL(q(z|x) || N(0, I))`` with one reparameterised sample ``z``. With β = 1
this is the negative ELBO, an upper bound on ``-log p(x)``; ``val/nelbo_nats`` and ``val/nelbo_bpd`` always
report the β = 1 bound, so a β-VAE's numbers stay honest. With the discretized Gaussian (an 8-bit likelihood)
the bound is also the family's ``val/nll_bpd``, comparable with the other families; with the Bernoulli
observation model it is not a likelihood of 8-bit pixels, and ``val/nll_bpd`` is left out.

Conditional VAE (Sohn et al. 2015, ``model.num_classes=${data.num_classes}``): a label embedding ``e(y)`` enters
the posterior, ``q(z|x, y)`` from ``[encoder(x), e(y)]``, and the decoder, ``p(x|z, y)`` from a projection of
``[z, e(y)]`` back to ``latent_dim``; the prior stays ``N(0, I)``. The conditioning lives here, in the family, so
every encoder and decoder of the zoo serves unchanged. The bound is then on ``-log p(x|y)``.

Ex-post density estimation (Ghosh et al. 2020, ``model.prior=gmm``): a VAE trained against ``N(0, I)`` leaves holes
in its aggregate posterior ``q(z) = E_x q(z|x)``, and prior draws that land in them decode to blends of digits.
With ``prior=gmm`` (the default) the family fits a Gaussian mixture (scikit-learn's `GaussianMixture`, full
covariances) to the posterior means of the current epoch's training batches so far, at the start of every
validation, and `sample` draws z from it; a conditional VAE fits one mixture per class and draws from its label's.
Training, the loss and the reported bound are unchanged (the bound is the ``N(0, I)`` model's); only where samples
draw z changes (``sampling.prior=normal`` draws from ``N(0, I)`` again). The mixture is part of the checkpoint.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from gensuite import contracts
from gensuite.errors import ConfigError
from gensuite.families.base import GenerativeModule, Panel
from gensuite.families.options import SamplingOptions, knob

PRIORS = ("normal", "gmm")
POOL_ROWS = 20_000  # posterior means kept for the mixture's fit (the newest)


@dataclasses.dataclass(frozen=True)
class VAEOptions(SamplingOptions):
    """The VAE's sampling knobs (``sampling.temperature=``, ``sampling.prior=``)."""

    temperature: float = knob(
        1.0, "scale of the prior's standard deviation, z ~ N(0, t^2 I) or each mixture component's (< 1: cleaner, "
        "less varied samples)",
    )  # fmt: skip
    # its default is model.prior, which also decides what training collects for the mixture: not sampling-only
    prior: str = knob(
        "gmm",
        "where z is drawn: normal (N(0, I)) or gmm (the mixture fitted in training, model.prior=gmm)",
        trained=True,
    )

    def check(self, model) -> None:
        if self.temperature <= 0:
            raise ConfigError(
                f"temperature must be > 0, got {self.temperature}", keys=("sampling.temperature",),
                fix="e.g. sampling.temperature=0.8",
            )  # fmt: skip
        fitted = hasattr(model, "gmm_logits")
        if self.prior not in PRIORS or (self.prior == "gmm" and not fitted):
            raise ConfigError(
                f"sampling.prior={self.prior!r}: this VAE samples from "
                + ", ".join(p for p in PRIORS if p == "normal" or fitted),
                keys=("sampling.prior",),
                fix="sampling.prior=normal; a mixture prior is fitted in training with model.prior=gmm",
            )


def check_parts_fit(encoder: nn.Module, decoder: nn.Module, latent_dim: int | None = None) -> None:
    """Encoder and decoder must agree on the image shape (and the decoder on the latent size)."""
    pairs = [("in_channels", "out_channels"), ("image_size", "image_size")]
    for enc_key, dec_key in pairs:
        a, b = getattr(encoder, enc_key), getattr(decoder, dec_key)
        if a != b:
            raise ConfigError(
                f"encoder.{enc_key}={a} but decoder.{dec_key}={b}: the decoder must produce the images the "
                "encoder reads",
                keys=(f"encoder.{enc_key}", f"decoder.{dec_key}"),
                fix="leave both to the data config (${data.channels}, ${data.image_size})",
            )
    if latent_dim is not None and decoder.latent_dim != latent_dim:
        raise ConfigError(
            f"decoder.latent_dim={decoder.latent_dim} but latent_dim={latent_dim}",
            keys=("decoder.latent_dim", "latent_dim"),
            fix="set only model.latent_dim (the decoder reads it through ${model.latent_dim})",
        )


class VAE(GenerativeModule):
    """Gaussian-latent VAE over any encoder / decoder of the parts zoo.

    Args:
        encoder: images -> features ``(B, encoder.out_dim)``; a linear head maps them to (mu, log-variance).
        decoder: ``(B, latent_dim)`` -> raw images, read by the likelihood.
        likelihood: `DiscretizedGaussian` or `Bernoulli` (``model/likelihood=``).
        latent_dim: size of z.
        beta: weight of the KL term in training (``nll`` reports β = 1).
        kl_warmup_steps: linear ramp of β from 0 over this many steps (0: none).
        num_classes: 0 (unconditional) or the classes of a conditional VAE: ``losses``, ``nll``, ``reconstruct``
            read the labels ``batch[1]``, ``sample`` takes ``labels`` ``(n,)`` (default: the balanced rule).
        label_dim: size of the label embedding of a conditional VAE.
        prior: where `sample` draws z: ``normal`` (the training prior ``N(0, I)``) or ``gmm`` (a mixture fitted to
            the training images' posterior means, one per class for a conditional VAE).
        prior_components: components of the ``gmm`` prior (of each class's).

    >>> from gensuite.nets.encoders import MLPEncoder  # doctest: +SKIP
    >>> vae = VAE(encoder, decoder, likelihood, latent_dim=8, num_classes=10)  # doctest: +SKIP
    >>> vae.sample(4, labels=torch.tensor([3, 3, 7, 7])).shape  # doctest: +SKIP
    torch.Size([4, 1, 28, 28])
    """

    family = "vae"
    Options = VAEOptions

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        likelihood: nn.Module,
        latent_dim: int = 16,
        beta: float = 1.0,
        kl_warmup_steps: int = 0,
        num_classes: int = 0,
        label_dim: int = 16,
        prior: str = "gmm",
        prior_components: int = 10,
        optimizer=None,
        scheduler=None,
    ):
        super().__init__(optimizer, scheduler, num_classes)
        if latent_dim <= 0:
            raise ConfigError(f"latent_dim must be > 0, got {latent_dim}", keys=("latent_dim",))
        if beta < 0:
            raise ConfigError(f"beta must be >= 0, got {beta}", keys=("beta",))
        if num_classes < 0 or (num_classes and label_dim <= 0):
            raise ConfigError(
                f"num_classes must be >= 0 and label_dim > 0, got {num_classes} and {label_dim}",
                keys=("num_classes", "label_dim"),
            )
        if prior not in PRIORS:
            raise ConfigError(f"prior={prior!r} is not one of {', '.join(PRIORS)}", keys=("prior",),
                              fix="model.prior=normal or model.prior=gmm")  # fmt: skip
        if prior == "gmm" and prior_components < 1:
            raise ConfigError(f"prior_components must be >= 1, got {prior_components}", keys=("prior_components",),
                              fix="model.prior_components=10")  # fmt: skip
        check_parts_fit(encoder, decoder, latent_dim)
        if getattr(decoder, "num_classes", 0):
            raise ConfigError(
                f"decoder.num_classes={decoder.num_classes}: the VAE feeds labels to its decoder itself",
                keys=("decoder.num_classes",),
                fix="model.decoder.num_classes=0 and model.num_classes=${data.num_classes}",
            )
        self.encoder, self.decoder, self.likelihood = encoder, decoder, likelihood
        extra = label_dim if num_classes else 0
        self.to_stats = nn.Linear(encoder.out_dim + extra, 2 * latent_dim)  # [features, e(y)] -> (mu, log sigma^2)
        if num_classes:
            self.label_embed = nn.Embedding(num_classes, label_dim)
            self.decoder_in = nn.Linear(latent_dim + label_dim, latent_dim)  # [z, e(y)] -> the decoder's input
            with torch.no_grad():  # start as "z plus a small label term": the unconditional decoder's input
                self.decoder_in.weight.zero_()
                self.decoder_in.weight[:, :latent_dim].copy_(torch.eye(latent_dim))
                nn.init.normal_(self.decoder_in.weight[:, latent_dim:], 0.0, 0.1)
                self.decoder_in.bias.zero_()
        self.latent_dim, self.beta, self.kl_warmup_steps = latent_dim, beta, kl_warmup_steps
        self.prior = prior  # what training fits (gmm: the mixture); where samples draw z is the option's
        self.default_options = VAEOptions(prior=prior)
        if prior == "gmm":  # one mixture per class (or one); N(0, I) until fitted: K components at 0, covariance I
            g, k = max(1, num_classes), prior_components
            self.register_buffer("gmm_logits", torch.zeros(g, k))
            self.register_buffer("gmm_means", torch.zeros(g, k, latent_dim))
            self.register_buffer("gmm_tril", torch.eye(latent_dim).repeat(g, k, 1, 1))
        self._pool: list[tuple[int, torch.Tensor, torch.Tensor | None]] = []  # (epoch, posterior means, labels)
        self.image_shape = (decoder.out_channels, decoder.image_size, decoder.image_size)

    def _labels(self, labels: torch.Tensor | None, n: int) -> torch.Tensor | None:
        """The labels of a conditional VAE (required, ``(n,)`` int64 in 0..K-1); None for an unconditional one."""
        if not self.num_classes:
            return None
        if labels is None or labels.shape != (n,) or bool(((labels < 0) | (labels >= self.num_classes)).any()):
            raise ValueError(f"a conditional VAE needs labels (n,) = ({n},) in 0..{self.num_classes - 1}")
        return labels.to(self.device)

    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior ``q(z|x[, y])``: mean and log-variance, ``(B, latent_dim)`` each."""
        h = self.encoder(x)  # (B, out_dim)
        labels = self._labels(labels, len(x))
        if labels is not None:
            h = torch.cat([h, self.label_embed(labels)], 1)  # (B, out_dim + label_dim)
        mu, logvar = self.to_stats(h).chunk(2, dim=1)
        return mu, logvar.clamp(-30, 20)

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Latents ``(B, latent_dim)`` [+ labels ``(B,)``] -> the decoder's raw output (read by the likelihood)."""
        labels = self._labels(labels, len(z))
        if labels is not None:
            z = self.decoder_in(torch.cat([z, self.label_embed(labels)], 1))  # (B, latent_dim)
        return self.decoder(z)

    def _terms(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example reconstruction NLL and KL, both in nats, ``(B,)``."""
        mu, logvar = self.encode(x, labels)
        if self.prior == "gmm" and self.training:
            epoch = getattr(contracts.attached_trainer(self), "current_epoch", 0)  # 0 outside a fit
            # kept on the device: a copy to the CPU here would synchronise a GPU every training step
            self._pool.append((epoch, mu.detach().float(), labels))
            if len(self._pool) > 4 * POOL_ROWS // len(mu):  # no validation for a long time: keep the newest
                self._pool = self._pool[-(POOL_ROWS // len(mu)) :]
        z = mu + self.rank_noise(torch.randn, len(mu), mu.shape[1], dtype=mu.dtype) * torch.exp(0.5 * logvar)
        rec = self.likelihood.nll(self.decode(z, labels), x)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)  # closed form against N(0, I)
        return rec, kl

    def current_beta(self) -> float:
        if self.kl_warmup_steps and self.training:
            return self.beta * min(1.0, (self.global_step + 1) / self.kl_warmup_steps)
        return self.beta

    def losses(self, batch) -> dict[str, torch.Tensor]:
        x = batch[0]
        rec, kl = self._terms(x, self.batch_labels(batch))
        nelbo = (rec + kl).mean()
        return {
            "loss": (rec + self.current_beta() * kl).mean(),
            "recon_nats": rec.mean(),
            "kl_nats": kl.mean(),
            "nelbo_nats": nelbo,
            "nelbo_bpd": nelbo / (x[0].numel() * math.log(2)),
        }

    def nll(self, batch) -> torch.Tensor:
        rec, kl = self._terms(batch[0], self.batch_labels(batch))
        return rec + kl

    def has_likelihood(self) -> bool:
        # a Bernoulli observation model is no likelihood of 8-bit pixels: its bound stays in val/nelbo_*
        return bool(getattr(self.likelihood, "eight_bit", False))

    # The fit reads the current epoch's means only, and they travel in the checkpoint: a resumed run fits the mixture
    # to the same means as one that was never interrupted (also where Lightning skips the validation of the epoch
    # whose last batch was checkpointed).
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.prior == "gmm" and self._pool:
            checkpoint["vae_prior_pool"] = [
                {"epoch": e, "means": m.cpu(), "labels": None if y is None else y.cpu()} for e, m, y in self._pool
            ]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._pool = [(d["epoch"], d["means"], d["labels"]) for d in checkpoint.get("vae_prior_pool", [])]

    def on_validation_epoch_start(self) -> None:
        self._pool = [entry for entry in self._pool if entry[0] == self.current_epoch]
        if self.prior == "gmm" and self._pool:
            means = torch.cat([m.cpu() for _, m, _ in self._pool])[-POOL_ROWS:]
            labels = None if self._pool[0][2] is None else torch.cat([y.cpu() for _, _, y in self._pool])[-POOL_ROWS:]
            self.fit_prior(means, labels)

    @torch.no_grad()
    def fit_prior(self, means: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """Fit the ``gmm`` prior to posterior means ``(N, latent_dim)`` (a conditional VAE: one mixture per class of
        ``labels`` ``(N,)``; a class with fewer than 2K means keeps its last fit). Rank 0 fits; every DDP rank gets
        its parameters, so all ranks sample alike."""
        from sklearn.mixture import GaussianMixture

        k = self.gmm_logits.shape[1]
        trainer = contracts.attached_trainer(self)
        if trainer is None or trainer.is_global_zero:
            for group in range(len(self.gmm_logits)):
                rows = means if labels is None else means[labels == group]
                if len(rows) < 2 * k:
                    continue
                gmm = GaussianMixture(k, covariance_type="full", reg_covar=1e-4, max_iter=200, random_state=0)
                gmm.fit(rows.double().numpy())
                self.gmm_logits[group] = torch.as_tensor(gmm.weights_).log()
                self.gmm_means[group] = torch.as_tensor(gmm.means_)
                self.gmm_tril[group] = torch.linalg.cholesky(torch.as_tensor(gmm.covariances_))
        if trainer is not None and trainer.world_size > 1:
            for name in ("gmm_logits", "gmm_means", "gmm_tril"):
                getattr(self, name).copy_(trainer.strategy.broadcast(getattr(self, name), src=0))

    def prior_sample(self, n: int, generator=None, labels=None, options: VAEOptions | None = None) -> torch.Tensor:
        """``n`` latents from the sampling prior (``options.prior``), ``(n, latent_dim)``, their spread scaled by
        ``options.temperature`` (a conditional VAE's mixture prior: each from its label's mixture)."""
        options = self.options_or_default(options)
        eps = torch.randn(n, self.latent_dim, generator=generator, device=self.device)
        if options.prior == "normal":
            return options.temperature * eps
        group = torch.zeros(n, dtype=torch.long, device=self.device) if labels is None else labels
        comp = torch.multinomial(self.gmm_logits[group].softmax(1), 1, generator=generator)[:, 0]  # (n,)
        tril = self.gmm_tril[group, comp]  # (n, d, d)
        return self.gmm_means[group, comp] + options.temperature * (tril @ eps.unsqueeze(-1)).squeeze(-1)

    @torch.no_grad()
    def sample(self, n: int, generator=None, labels=None, options: VAEOptions | None = None) -> torch.Tensor:
        """``n`` images in [0, 1] ``(n, C, H, W)``; a conditional VAE takes ``labels`` (default: balanced)."""
        labels = self._labels(self.labels_for(n, labels), n)
        z = self.prior_sample(n, generator, labels, options)
        return self.likelihood.mean(self.decode(z, labels))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images in [0, 1] decoded from the posterior mean (a conditional VAE needs the images' ``labels``)."""
        return self.likelihood.mean(self.decode(self.encode(x, labels)[0], labels))

    def reconstruct_batch(self, batch) -> torch.Tensor:
        return self.reconstruct(batch[0], self.batch_labels(batch))

    @torch.no_grad()
    def panels(self, batch, generator=None, n: int = 64) -> dict[str, Panel]:
        x, y = batch[0][:8], self.batch_labels(batch)
        rec = self.reconstruct(x, None if y is None else y[:8])
        # rows: a real image then its reconstruction
        pairs = torch.stack([x, rec], 1).flatten(0, 1).view(-1, 4, *self.image_shape)
        y16 = None if y is None else y[:16]
        mu = self.encode(batch[0][:16], y16)[0]
        steps = torch.linspace(0, 1, 10, device=mu.device).view(1, -1, 1)
        a, b = mu[0::2, None], mu[1::2, None]  # (P, 1, d) pairs
        path = (1 - steps) * a + steps * b  # (P, 10, d): linear interpolation in latent space
        # a conditional VAE decodes a path with the label of its first image
        path_y = None if y16 is None else y16[0::2].repeat_interleave(10)
        interp = self.likelihood.mean(self.decode(path.flatten(0, 1), path_y)).view(len(a), 10, *self.image_shape)
        out: dict[str, Panel] = {
            "samples": self.sample(n, generator),
            "reconstructions": pairs,
            "interpolation": interp,
        }
        if self.conditional:
            out["class_grid"] = self.class_grid(generator, same_noise=True)
        return out
