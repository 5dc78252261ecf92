"""The protocol every family implements, and what they share: optimisers, logging, the validation loop.

A family is a LightningModule built from parts (plain ``nn.Module``s) that Hydra instantiates and passes in.
The evaluation (`gensuite.metrics`) talks to a family only through this protocol:

- ``sample(n, generator=None)`` -> images in [0, 1], ``(n, C, H, W)`` float (image data), or tokens ``(n, T)``;
- ``nll(batch)`` -> nats per example, ``(B,)`` (exact, or an upper bound), where the family has a likelihood;
- ``reconstruct(x)`` -> images in [0, 1] where the family has an encoder (PSNR / SSIM);
- ``panels(batch, generator)`` -> named pictures (``(N, C, H, W)``, or ``(rows, cols, C, H, W)`` for a fixed
  layout) or texts for TensorBoard;
- ``sampling_knobs`` (name -> what it does) and ``set_sampling(**knobs)``: the settings of ``sample`` that
  ``sample.py`` / ``eval.py`` change without retraining (``sampling.temperature=0.8``). A family stores each knob
  as an attribute of the same name (the default `set_sampling` sets it, then calls `check_sampling`).

The family's own losses come from ``losses(batch)`` -> dict with a ``loss`` entry; they are logged as
``train/<name>`` and ``val/<name>``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from gensuite import contracts, record
from gensuite.errors import ConfigError, GensuiteError

Panel = torch.Tensor | str


class NonFiniteLossError(GensuiteError):
    """A loss became NaN or infinite: training stops, the last good checkpoint stays on disk."""


LIKELIHOOD_KEY = record.LIKELIHOOD_KEY  # bits per dimension of the data as stored, where a family has a likelihood


class FamilyProtocolError(GensuiteError):
    """A model that does not implement the family protocol the training loop and the evaluation rely on."""


def check_protocol(model: Any) -> None:
    """Check, once when a model is built, what every entry point relies on (module docstring): a
    `GenerativeModule` with its own ``losses`` and ``sample``, a ``family`` name, ``nll`` / ``reconstruct`` either
    None or callable, and an attribute for each sampling knob. Raises `FamilyProtocolError` naming what is
    missing."""
    name = type(model).__name__
    fix = "see README 'Add a family': subclass gensuite.families.base.GenerativeModule, implement losses and sample"
    if not isinstance(model, GenerativeModule):
        raise FamilyProtocolError(f"model {name} is not a gensuite.families.base.GenerativeModule", fix=fix)
    missing = [m for m in ("losses", "sample") if getattr(type(model), m) is getattr(GenerativeModule, m)]
    problems = [f"it does not implement {m}()" for m in missing]
    if not isinstance(model.family, str) or model.family in ("", GenerativeModule.family):
        problems.append("its class attribute `family` (the family's name in runs and reports) is not set")
    for m in ("nll", "reconstruct", "panels"):
        value = getattr(model, m, None)
        if value is not None and not callable(value):
            problems.append(f"{m} is {type(value).__name__}, not None or a method")
    if not isinstance(model.sampling_knobs, dict):
        problems.append("sampling_knobs is not a dict of knob name -> description")
    else:
        problems += [f"sampling knob {k!r} has no attribute of that name" for k in model.sampling_knobs
                     if not hasattr(model, k)]  # fmt: skip
    if problems:
        raise FamilyProtocolError(f"model {name} breaks the family protocol: " + "; ".join(problems), fix=fix)


class GenerativeModule(L.LightningModule):
    """Base class of the families. Subclasses implement `losses`, `sample` and optionally `nll`/`reconstruct`."""

    family = "base"

    def __init__(self, optimizer: Callable[..., torch.optim.Optimizer] | None = None, scheduler: Any = None):
        super().__init__()
        # Hydra partials (`_partial_: true`): kept as attributes, never in hparams (they do not unpickle with
        # weights_only=True). The composed config travels in the checkpoint as plain data instead.
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler

    # -- protocol --------------------------------------------------------------------------------------------
    def losses(self, batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    nll: Callable | None = None  # (batch) -> nats per example; None: the family has no likelihood
    #: what `nll` gives: "exact", "upper bound" or "estimate" (recorded as ``run/likelihood``)
    likelihood_kind = "upper bound"

    def has_likelihood(self) -> bool:
        """Whether `nll` is a likelihood (or bound) of the data as stored: 8-bit pixels, or tokens."""
        return self.nll is not None

    reconstruct: Callable | None = None  # (x) -> images in [0, 1]; None: the family has no encoder

    def reconstruct_batch(self, batch) -> torch.Tensor:
        """The reconstruction of a batch's images (a conditional family also reads its labels ``batch[1]``)."""
        return self.reconstruct(batch[0])

    #: the knobs of `sample` a user may set at sample time (``sampling.<name>=``), name -> one line on its effect
    sampling_knobs: dict[str, str] = {}

    def set_sampling(self, **knobs: Any) -> None:
        """Set sampling knobs (``python sample.py ckpt_path=... sampling.temperature=0.8``) for every later `sample`.

        A knob this family does not have is a `ConfigError` listing the ones it has; values are checked by
        `check_sampling` (which a family overrides) before any sampling work."""
        unknown = [k for k in knobs if k not in self.sampling_knobs]
        if unknown:
            have = "; ".join(f"sampling.{k}: {v}" for k, v in self.sampling_knobs.items()) or "none"
            raise ConfigError(
                f"a {self.family} model has no sampling knob " + ", ".join(f"sampling.{k}" for k in unknown)
                + f". Its knobs: {have}",
                keys=tuple(f"sampling.{k}" for k in unknown),
                fix="drop the override" + (", or use one of the knobs above" if self.sampling_knobs else ""),
            )  # fmt: skip
        for name, value in knobs.items():
            setattr(self, name, value)
        self.check_sampling()

    def check_sampling(self) -> None:
        """Raise a `ConfigError` naming ``sampling.<knob>`` when a knob's value is out of range."""

    def sampling_info(self) -> dict[str, Any]:
        """The knobs' current values, for metrics.json (``eval/sampling.<name>``): numbers say how they were made."""
        return {f"eval/sampling.{k}": getattr(self, k) for k in self.sampling_knobs if getattr(self, k) is not None}

    def rank_noise(self, draw: Callable[..., torch.Tensor], n: int, *shape: int, **kwargs: Any) -> torch.Tensor:
        """Training noise, ``draw(n, *shape)`` on this module's device, different on every DDP rank (the global
        batch's noise is drawn and this rank keeps its rows: `gensuite.contracts.rank_slice`)."""
        kwargs.setdefault("device", self.device)
        return contracts.rank_slice(self, draw, n, *shape, **kwargs)

    def data_info(self) -> contracts.DataInfo | None:
        """What the attached data module declares (`gensuite.contracts.DataInfo`), or None while detached."""
        return contracts.data_info(self)

    def data_dims(self, batch) -> int:
        """How many dimensions one example has (for bits/dim): C*H*W for images."""
        return batch[0][0].numel()

    def panels(self, batch, generator: torch.Generator | None = None, n: int = 64) -> dict[str, Panel]:
        return {"samples": self.sample(n, generator=generator)}

    # -- optimisation ----------------------------------------------------------------------------------------
    def build_optimizer(self, params, factory=None) -> torch.optim.Optimizer:
        factory = factory or self.optimizer_factory
        if factory is None:
            return torch.optim.Adam(params, lr=1e-3)
        return factory(params)

    def configure_optimizers(self):
        opt = self.build_optimizer(self.parameters())
        if self.scheduler_factory is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": self.build_scheduler(opt), "interval": "step"}}

    #: the fraction of a time budget spent, 0 to 1 (the training clock's `TrainingClock.progress`), handed in by
    #: `gensuite.train` before fitting; None: no time budget
    budget_progress: Callable[[], float | None] | None = None

    def build_scheduler(self, opt: torch.optim.Optimizer):
        """The configured schedule for ``opt``. One whose ``total_steps`` is left open (None or -1, the yaml's
        ``${trainer.max_steps}`` of a run without a step limit) spans the steps Lightning will run (a budget in
        epochs); for a time budget (``trainer.max_time`` and no epoch or step limit) it gets ``progress``, the
        fraction of the budget spent (`budget_progress`)."""
        factory = self.scheduler_factory
        if getattr(factory, "keywords", {}).get("total_steps", 0) not in (None, -1):
            return factory(opt)
        total = self.trainer.estimated_stepping_batches
        if math.isfinite(total):
            return factory(opt, total_steps=int(total))
        return factory(opt, total_steps=None, progress=self.budget_progress)

    def check_finite(self, loss: torch.Tensor, name: str = "loss") -> None:
        if not torch.isfinite(loss).all():
            raise NonFiniteLossError(
                f"train/{name} became {loss.item()} at step {self.global_step} (epoch {self.current_epoch}); "
                "training stopped before this update, and the checkpoints already written are kept",
                fix="lower the learning rate (model.optimizer.lr=...), enable gradient clipping "
                "(trainer.gradient_clip_val=1.0), or resume from the last checkpoint (ckpt_path=last)",
            )

    # -- loops -----------------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        losses = self.losses(batch)
        self.check_finite(losses["loss"])
        self.log("train/loss", losses["loss"].detach(), prog_bar=True)
        self.log_dict({f"train/{k}": v.detach() for k, v in losses.items() if k != "loss"})
        return losses["loss"]

    def validation_step(self, batch, batch_idx):
        x = batch[0]
        bsz = x.shape[0]
        values = {f"val/{k}": v.detach() for k, v in self.losses(batch).items()}
        if self.has_likelihood():
            nats = self.nll(batch)  # (B,)
            values["val/nll_nats"] = nats.mean()
            values[LIKELIHOOD_KEY] = nats.mean() / (self.data_dims(batch) * math.log(2))
        if self.reconstruct is not None and x.dim() == 4:
            rec = self.reconstruct_batch(batch).clamp(0, 1)
            values["val/psnr"] = peak_signal_noise_ratio(
                rec, x, data_range=1.0, reduction="elementwise_mean", dim=(1, 2, 3)
            )
            values["val/ssim"] = structural_similarity_index_measure(rec, x, data_range=1.0)
        self.log_dict(values, on_epoch=True, sync_dist=True, batch_size=bsz)
