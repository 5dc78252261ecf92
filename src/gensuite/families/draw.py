"""The one draw loop: ``n`` samples of a model in batches, for ``sample.py``, the evaluator and the class grid.

The labels of a conditional model are chosen here and passed in (``labels``, else the model's balanced rule
`GenerativeModule.sample_labels` counted from ``start``), so the labels returned are the ones each batch was drawn
with. An unconditional model is called ``sample(b, generator=...)``, and ``options=`` only when some are given:
a family without labels or knobs needs neither keyword.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


@torch.no_grad()
def draw(
    model,
    n: int,
    batch_size: int,
    generator: torch.Generator | None = None,
    labels: torch.Tensor | None = None,
    options=None,
    start: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """``(samples, labels or None)`` per batch of at most ``batch_size``, ``n`` samples in all, on the model's
    device. ``labels`` ``(n,)``: the class of each sample of a conditional model (default: balanced, sample i of
    the whole set having ``sample_labels(start + n)[start + i]``); ``options``: the family's `SamplingOptions`
    (default: the model's own)."""
    conditional = bool(getattr(model, "conditional", False))
    if conditional and labels is None:
        labels = model.sample_labels(n, start=start)
    extra = {} if options is None else {"options": options}
    done = 0
    while done < n:
        b = min(batch_size, n - done)
        labels_b = labels[done : done + b].to(model.device) if conditional else None
        kwargs = {"labels": labels_b, **extra} if conditional else extra
        yield model.sample(b, generator=generator, **kwargs), labels_b
        done += b
