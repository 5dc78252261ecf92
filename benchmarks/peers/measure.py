"""What both sides of a peer row share: the data splits, the training clock, the sample files and the scores."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from gensuite.runs import sample_files as samples_io

CONTEXT = 256  # bytes per scored window: conf/data/pydoc.yaml's seq_len
HELD_OUT_FRACTION = 0.1  # the pydoc bytes' last 10 %: whole topics that only report (the test split)
VAL_FRACTION = 0.1  # the last 10 % of the rest: whole topics that choose between trials (the validation slice)
# what chooses a trial (validation) and what is reported (held-out) -- never the other way round
SELECT = {"image": "val/fid_classifier_val", "text": "bpb_val"}


# -- data ---------------------------------------------------------------------------------------------------
def train_images() -> torch.Tensor:
    """The train split of ``data=mnist5k`` as float ``(N, 1, 28, 28)`` in [0, 1], built from the config ``train.py``
    composes (the same split, whatever the seed)."""
    from benchmarks.common import compose_cfg
    from gensuite.cli.config import instantiate_checked

    datamodule = instantiate_checked(compose_cfg(["data=mnist5k"]), "data")
    images, _ = datamodule.real_images("train")
    return images


def held_out_split(raw: bytes, fraction: float = HELD_OUT_FRACTION) -> tuple[bytes, bytes]:
    """The first ``1 - fraction`` of the bytes and the rest: topics are in sorted order, so the second part is
    whole topics the first never holds (only the one topic at the cut is shared)."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    cut = len(raw) - int(round(len(raw) * fraction))
    return raw[:cut], raw[cut:]


def text_splits(raw: bytes | None = None) -> dict[str, bytes]:
    """Python's help topics (`PydocText`'s bytes) cut twice, in topic order: ``fit`` (the first ~81 %, what both
    sides train on), ``val`` (the next ~9 %: chooses between trials) and ``test`` (the last 10 %: only reported)."""
    if raw is None:
        from gensuite.data.text import PydocText

        raw = PydocText().load_bytes()
    rest, test = held_out_split(raw, HELD_OUT_FRACTION)
    fit, val = held_out_split(rest, VAL_FRACTION)
    return {"fit": fit, "val": val, "test": test}


# -- the clock ----------------------------------------------------------------------------------------------
def train_for(seconds: float, step: Callable[[float], None]) -> tuple[int, float]:
    """Call ``step(fraction of the budget spent)`` until the summed step time reaches ``seconds`` (the step that
    crosses it finishes, as the suite's `TrainingClock` does). Returns (steps, training seconds)."""
    steps, spent = 0, 0.0
    while spent < seconds:
        t0 = time.perf_counter()
        step(spent / seconds)
        spent += time.perf_counter() - t0
        steps += 1
    return steps, spent


def batches(images: torch.Tensor, size: int, seed: int) -> Iterator[torch.Tensor]:
    """Shuffled batches of ``size`` forever, a new order each epoch (the last partial batch dropped)."""
    g = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(images), generator=g)
        for i in range(0, len(order) - size + 1, size):
            yield images[order[i : i + size]]


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def timed(draw: Callable[[], torch.Tensor], n: int) -> tuple[torch.Tensor, float]:
    """``draw()`` and its seconds per image of ``n``."""
    t0 = time.perf_counter()
    images = draw()
    return images, (time.perf_counter() - t0) / n


# -- samples in, scores out ---------------------------------------------------------------------------------
def write_samples(path: Path, images: torch.Tensor) -> Path:
    """Float ``(N, C, H, W)`` in [0, 1] -> uint8 ``(N, H, W, C)`` under the key ``samples`` (what ``eval.py``
    reads), rounded as the suite's own ``sample.py format=npz``."""
    if images.dim() != 4:
        raise ValueError(f"expected images (N, C, H, W), got shape {tuple(images.shape)}")
    return samples_io.write_npz(path, samples_io.to_uint8(images.clamp(0, 1)))


def score_images(npz: Path, n: int) -> dict[str, float]:
    """``eval.py samples=<npz> data=mnist5k metrics.features=all`` at ``n`` samples, run in this process: every
    numeric ``val/*`` key it writes (``val/fid_<space>`` against the test split, ``val/fid_<space>_val`` against the
    val split, ``val/fid_<space>_floor``, precision / recall / coverage, ``val/coverage_classes``). No bootstrap:
    the intervals of the table are over seeds."""
    from benchmarks.common import compose_cfg
    from gensuite.eval import evaluate

    out = npz.with_name(f"eval-{npz.stem}.json")
    overrides = [f"samples={npz}", "data=mnist5k", "metrics.features=all", f"metrics.n_samples={n}"]
    overrides += [f"metrics.kid_subset_size={min(1000, n)}", "metrics.bootstrap=0", f"out={out}"]
    evaluate(compose_cfg(overrides, npz.parent, config_name="eval"))
    metrics = json.loads(out.read_text())
    return {k: float(v) for k, v in metrics.items() if k.startswith("val/") and isinstance(v, (int, float))}


@torch.no_grad()
def bits_per_byte(nats_of: Callable[[torch.Tensor], torch.Tensor], text: bytes, context: int = CONTEXT) -> float:
    """Bits per byte of ``text`` cut into windows of ``context`` bytes (the last partial one left out).
    ``nats_of(windows (B, T) int64)`` returns each byte's NLL ``(B, T)``, the first predicted from a start token."""
    data = torch.frombuffer(bytearray(text), dtype=torch.uint8)
    windows = data[: len(data) // context * context].view(-1, context).long()  # (W, T)
    total = sum(float(nats_of(w).sum()) for w in windows.split(64))
    return total / (windows.numel() * math.log(2))


def text_scores(nats_of: Callable[[torch.Tensor], torch.Tensor], splits: dict[str, bytes]) -> dict[str, float]:
    """Bits per byte on the validation slice (chooses) and on the held-out topics (reports)."""
    return {"bpb_val": bits_per_byte(nats_of, splits["val"]), "bpb_test": bits_per_byte(nats_of, splits["test"])}
