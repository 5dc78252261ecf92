"""Pictures of many images at once: the grid that TensorBoard, ``samples.png`` and ``sample.py`` show."""

from __future__ import annotations

import torch
from torchvision.utils import make_grid


def grid_of(panel: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` -> a square-ish grid; ``(rows, cols, C, H, W)`` -> exactly that layout."""
    if panel.dim() == 5:
        rows, cols = panel.shape[:2]
        return make_grid(panel.flatten(0, 1).float().clamp(0, 1).cpu(), nrow=cols, padding=1, pad_value=0.5)
    nrow = max(1, int(round(len(panel) ** 0.5)))
    return make_grid(panel.float().clamp(0, 1).cpu(), nrow=nrow, padding=1, pad_value=0.5)
