"""The kernel of the families that sample by carrying noise to data with one network (diffusion, flow matching):
a sampler of their own process, classifier-free guidance as their one sampling option (`Guidance`), and the
``sample`` they share: draw the noise, pick the labels, run the sampler, decode.

A family of this kind says which process it walks (``process``: ``diffusion`` or ``flow``, checked against a
sampler's own, `gensuite.families.processes.check_process`) and implements `run_sampler`; everything else here
is shared.
"""

from __future__ import annotations

import torch
from torch import nn

from gensuite.families.base import GenerativeModule
from gensuite.families.options import Guidance
from gensuite.families.processes import check_process


class NoiseToData(GenerativeModule):
    """Base of diffusion and flow matching: ``sample`` = noise -> `run_sampler` -> `decode_data`, guided."""

    process = "?"  # "diffusion" | "flow": the kind of sampler this family takes
    Options = Guidance

    def init_sampling(self, denoiser: nn.Module, guidance_scale: float, sampler, default) -> None:
        """Called by a subclass's ``__init__``: the default options, the sample shape (``(C, H, W)`` of an image
        denoiser, ``(dim,)`` of a vector one) and the sampler (``sampler`` or ``default``)."""
        self.default_options = Guidance(guidance_scale)
        if hasattr(denoiser, "image_size"):
            self.sample_shape: tuple[int, ...] = (denoiser.in_channels, denoiser.image_size, denoiser.image_size)
        else:
            self.sample_shape = (denoiser.dim,)
        self.sampler = default
        self.set_sampler(sampler or default)

    def set_sampler(self, sampler) -> None:
        """Use ``sampler`` from now on (``python sample.py ckpt_path=... sampler=ddim sampler.steps=50``); a sampler
        of another process is refused before any work."""
        check_process(sampler, self.process, self.family)
        self.check_sampler(sampler)
        self.sampler = sampler

    def check_sampler(self, sampler) -> None:
        """Raise a `ConfigError` when ``sampler`` cannot work with this model (a subclass's own check)."""

    def eval_info(self, options: Guidance | None = None) -> dict[str, str | float]:
        """How samples are made, for metrics.json (FID of DDPM-1000 and of DPM-Solver-20 are different numbers)."""
        info: dict[str, str | float] = {"eval/sampler": self.sampler.describe()}
        if self.conditional:
            info["eval/guidance_scale"] = self.options_or_default(options).guidance_scale
        return info

    def sampler_text(self) -> str:
        """The ``sampler`` panel: the sampler, and the guidance scale of a conditional model."""
        guidance = f", guidance scale {self.default_options.guidance_scale:g}" if self.conditional else ""
        return self.sampler.describe() + guidance

    def run_sampler(
        self, noise: torch.Tensor, labels: torch.Tensor | None, guidance_scale: float, generator
    ) -> torch.Tensor:
        """The sampler's output (model space) from ``noise`` ``(n, *sample_shape)``."""
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, n: int, generator=None, labels=None, options: Guidance | None = None) -> torch.Tensor:
        """``n`` images in [0, 1] with the model's sampler; a conditional model is given balanced labels
        (`sample_labels`) unless ``labels`` ``(n,)`` are given, and guides with ``options.guidance_scale``
        (default: the model's)."""
        scale = self.options_or_default(options).guidance_scale
        x = torch.randn(n, *self.sample_shape, generator=generator, device=self.device)
        return self.decode_data(self.run_sampler(x, self.labels_for(n, labels), scale, generator))
