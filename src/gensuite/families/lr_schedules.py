"""Learning-rate schedules: plain functions ``(optimizer, ...) -> torch.optim.lr_scheduler.LRScheduler``.

Configured as Hydra partials (``model/scheduler=warmup_cosine``); a family calls them with its optimizer and steps
them every optimisation step (`gensuite.families.base.GenerativeModule.configure_optimizers`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch

from gensuite.errors import ConfigError


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    warmup_steps: int,
    total_steps: int | None,
    min_lr_ratio: float = 0.1,
    progress: Callable[[], float | None] | None = None,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from 0 over ``warmup_steps``, then cosine decay to ``min_lr_ratio`` x the base rate at
    ``total_steps`` (held there after). The usual transformer schedule (Loshchilov & Hutter 2017 for the cosine).
    ``total_steps=None`` is a run on a time budget (``trainer.max_time``): the cosine then follows ``progress()``,
    the fraction of the budget spent (0 to 1, the training clock's), and with no ``progress`` the rate stays at
    the base after the warm-up.

    >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    >>> sched = warmup_cosine(opt, warmup_steps=10, total_steps=110)
    >>> [round(sched.lr_lambdas[0](s), 3) for s in (0, 9, 10, 60, 110, 200)]
    [0.1, 1.0, 1.0, 0.55, 0.1, 0.1]
    """

    def cosine(fraction: float) -> float:
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, fraction)))

    if total_steps is None:

        def by_time(step: int) -> float:
            if step < warmup_steps:
                return (step + 1) / warmup_steps
            spent = progress() if progress is not None else None
            return 1.0 if spent is None else cosine(spent)

        return torch.optim.lr_scheduler.LambdaLR(optimizer, by_time)
    if total_steps <= 0:
        raise ConfigError(
            f"the warmup_cosine schedule needs a step budget, got total_steps={total_steps}",
            keys=("total_steps",),
            fix="set trainer.max_steps=<steps> (the schedule reads it), or model.scheduler=null",
        )
    if warmup_steps < 0:
        raise ConfigError(
            f"warmup_steps must be >= 0, got {warmup_steps}", keys=("warmup_steps",), fix="warmup_steps=0"
        )
    if warmup_steps >= total_steps:  # a short (smoke-test) run: warm up over half of it instead
        warnings.warn(
            f"warmup_steps={warmup_steps} >= the run's {total_steps} steps: warming up over {total_steps // 2}",
            stacklevel=2,
        )
        warmup_steps = total_steps // 2

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return cosine((step - warmup_steps) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
