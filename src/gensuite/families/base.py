"""The protocol every family implements, and the kernel they share: conditioning, sampling options, optimisers,
logging, the validation loop.

A family is a LightningModule built from parts (plain ``nn.Module``s) that Hydra instantiates and passes in.
The evaluation (`gensuite.metrics`), ``sample.py`` and ``eval.py`` talk to a family only through this protocol:

- ``sample(n, generator=None, labels=None, options=None)`` -> images in [0, 1], ``(n, C, H, W)`` float (image
  data), or tokens ``(n, T)``. ``labels`` ``(n,)``: the class of each sample of a conditional model (default:
  `sample_labels`); ``options``: the family's `SamplingOptions` (default: ``default_options``). A family without
  classes or knobs may leave either keyword out: the draw loop (`gensuite.families.draw.draw`) passes them only
  when they apply;
- ``nll(batch)`` -> nats per example, ``(B,)`` (exact, or an upper bound), where the family has a likelihood;
- ``reconstruct(x)`` -> images in [0, 1] where the family has an encoder (PSNR / SSIM);
- ``panels(batch, generator)`` -> named pictures (``(N, C, H, W)``, or ``(rows, cols, C, H, W)`` for a fixed
  layout) or texts for TensorBoard;
- ``Options``: the family's options class (`gensuite.families.options`: a frozen dataclass, one field per knob of
  ``sampling.<knob>=``), and ``default_options``, an instance built from the constructor's arguments.

Conditioning lives here once: ``num_classes`` (0: unconditional) and `conditional`, a batch's labels
(`batch_labels`, `training_labels` with label dropout where the family sets ``label_dropout``), the balanced labels
to sample (`sample_labels`), the `class_grid` panel and the check of a part's classes (`check_part_classes`).

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
from gensuite.families import conditioning
from gensuite.families.draw import draw
from gensuite.families.options import SamplingOptions

Panel = torch.Tensor | str


class NonFiniteLossError(GensuiteError):
    """A loss became NaN or infinite: training stops, the last good checkpoint stays on disk."""


LIKELIHOOD_KEY = record.LIKELIHOOD_KEY  # bits per dimension of the data as stored, where a family has a likelihood


class FamilyProtocolError(GensuiteError):
    """A model that does not implement the family protocol the training loop and the evaluation rely on."""


def check_protocol(model: Any) -> None:
    """Check, once when a model is built, what every entry point relies on (module docstring): a
    `GenerativeModule` with its own ``losses`` and ``sample``, a ``family`` name, ``nll`` / ``reconstruct`` either
    None or callable, and sampling options of its declared class. Raises `FamilyProtocolError` naming what is
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
    options = getattr(type(model), "Options", None)
    if not (isinstance(options, type) and issubclass(options, SamplingOptions)):
        problems.append("its class attribute `Options` is not a gensuite.families.options.SamplingOptions dataclass")
    elif not isinstance(getattr(model, "default_options", None), options):
        problems.append(f"default_options is not a {options.__name__}")
    if problems:
        raise FamilyProtocolError(f"model {name} breaks the family protocol: " + "; ".join(problems), fix=fix)


class GenerativeModule(L.LightningModule):
    """Base class of the families. Subclasses implement `losses`, `sample` and optionally `nll`/`reconstruct`."""

    family = "base"

    #: the family's sampling options (`gensuite.families.options`); ``default_options`` is one built at construction
    Options: type[SamplingOptions] = SamplingOptions
    #: probability of replacing a training label by "no label" (classifier-free guidance); None: no label dropout
    label_dropout: float | None = None

    def __init__(
        self,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Any = None,
        num_classes: int = 0,
        label_dropout: float | None = None,
    ):
        super().__init__()
        # Hydra partials (`_partial_: true`): kept as attributes, never in hparams (they do not unpickle with
        # weights_only=True). The composed config travels in the checkpoint as plain data instead.
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        if num_classes < 0:
            raise ConfigError(f"num_classes must be >= 0, got {num_classes}", keys=("num_classes",),
                              fix="model.num_classes=0 (unconditional) or ${data.num_classes}")  # fmt: skip
        if label_dropout is not None and not 0 <= label_dropout <= 1:
            raise ConfigError(f"label_dropout must be in [0, 1], got {label_dropout}", keys=("label_dropout",))
        self.num_classes, self.label_dropout = num_classes, label_dropout
        self.default_options: SamplingOptions = self.Options()

    # -- protocol --------------------------------------------------------------------------------------------
    def losses(self, batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        labels: torch.Tensor | None = None,
        options: SamplingOptions | None = None,
    ) -> torch.Tensor:
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

    # -- sampling options ------------------------------------------------------------------------------------
    def sampling_options(self, overrides: dict[str, Any] | None = None) -> SamplingOptions:
        """``default_options`` with ``sampling.<knob>`` ``overrides`` (None values: unchanged), checked for this
        model before any sampling work: what ``sample.py`` / ``eval.py`` pass to `sample`. A knob the family does
        not declare is a `ConfigError` listing the ones it has."""
        options = self.default_options.override(overrides or {}, self.family)
        options.check(self)
        return options

    def options_or_default(self, options: SamplingOptions | None) -> SamplingOptions:
        """``options`` (of this family's class), or ``default_options`` when None."""
        if options is None:
            return self.default_options
        if not isinstance(options, self.Options):
            raise TypeError(f"a {self.family} model samples with {self.Options.__name__}, not {type(options).__name__}")
        return options

    def sampling_info(self, options: SamplingOptions | None = None) -> dict[str, Any]:
        """The options' values, for metrics.json (``eval/sampling.<name>``): numbers say how they were made."""
        return self.options_or_default(options).info()

    def eval_info(self, options: SamplingOptions | None = None) -> dict[str, Any]:
        """How the family makes samples with ``options`` (default: its own), for metrics.json beside
        `sampling_info` (e.g. diffusion: ``{"eval/sampler": "dpm_solver_sde-20"}``); none here."""
        return {}

    # -- conditioning ----------------------------------------------------------------------------------------
    @property
    def conditional(self) -> bool:
        """Whether the model is class-conditional (``model.num_classes`` > 0)."""
        return self.num_classes > 0

    def check_part_classes(self, part: Any, key: str) -> None:
        """A part (denoiser, decoder, discriminator) built for other classes than the model's is refused."""
        have = getattr(part, "num_classes", 0)
        if have != self.num_classes:
            raise ConfigError(
                f"num_classes={self.num_classes} but the {key} was built with num_classes={have}: the model and its "
                "parts must be (un)conditional with the same classes",
                keys=("num_classes", f"{key}.num_classes"),
                fix=f"leave the {key}'s num_classes to ${{model.num_classes}} and set only model.num_classes (0: "
                "unconditional; ${data.num_classes}: conditional)",
            )

    def batch_labels(self, batch) -> torch.Tensor | None:
        """The class of each example of a conditional model, ``batch[1]`` ``(B,)``; None for an unconditional one."""
        return batch[1] if self.conditional else None

    def training_labels(self, batch) -> torch.Tensor | None:
        """`batch_labels` with label dropout (`conditioning.drop_labels`, from this rank's training noise) where the
        family has a ``label_dropout``."""
        labels = self.batch_labels(batch)
        if labels is None or self.label_dropout is None:
            return labels
        return conditioning.drop_labels(labels, self.label_dropout, self.rank_noise(torch.rand, len(labels)))

    def sample_labels(self, n: int, start: int = 0) -> torch.Tensor | None:
        """``(n,)`` long: the labels of samples ``start .. start + n - 1`` of a conditional model, balanced ``0, 1,
        ..., K-1, 0, ...`` (class coverage and the class histogram are judged against a balanced reference, so every
        class is drawn equally often); None for an unconditional model."""
        if not self.conditional:
            return None
        return torch.arange(start, start + n, device=self.device) % self.num_classes

    def labels_for(self, n: int, labels: torch.Tensor | None = None) -> torch.Tensor | None:
        """The labels `sample` draws ``n`` samples of a conditional model with: ``labels`` (on the model's device),
        else `sample_labels`; None for an unconditional model."""
        if not self.conditional:
            return None
        return self.sample_labels(n) if labels is None else labels.to(self.device)

    @torch.no_grad()
    def class_grid(
        self,
        generator: torch.Generator | None = None,
        per_class: int = 8,
        same_noise: bool = False,
        options: SamplingOptions | None = None,
    ) -> torch.Tensor:
        """The ``class_grid`` panel of a conditional model: ``(num_classes, per_class, C, H, W)``, one row per class.

        ``same_noise``: each row is drawn from the same generator state, so a column differs only by its label
        (one draw per class: for families whose sampling is cheap, the GAN and the VAE); otherwise one batch of
        ``num_classes * per_class`` samples (diffusion, flow matching, the transformer)."""
        if not self.conditional:
            raise ValueError(f"a {self.family} model without labels has no class grid")
        k = self.num_classes
        if not same_noise:
            labels = torch.arange(k, device=self.device).repeat_interleave(per_class)
            images, _ = next(draw(self, len(labels), len(labels), generator, labels, options))
            return images.view(k, per_class, *images.shape[1:])
        state = generator.get_state() if generator is not None else None
        rows = []
        for c in range(k):
            if generator is not None:
                generator.set_state(state)
            labels = torch.full((per_class,), c, device=self.device)
            rows.append(next(draw(self, per_class, per_class, generator, labels, options))[0])
        return torch.stack(rows)  # (K, per_class, C, H, W)

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
