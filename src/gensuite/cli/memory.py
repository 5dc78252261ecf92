"""Out of memory: recognise it, and find the largest batch size whose training step fits.

When a run runs out of memory, `gensuite.train` ends it with a short message instead of the allocator's traceback:
the batch size that failed and the largest one that fits, found by `probe_batch_size` — one training step (the
family's ``losses`` forward, backward and an optimiser step) per candidate size, on a batch made by repeating the
real examples of the first training batch, with memory freed between tries.

The search: halve the failing size until a step fits (``lo``), then bisect between ``lo`` and the last size that
failed. Memory use grows with the batch, so this finds the exact largest size below the failing one, in at most
``2 * log2(batch)`` steps (14 for a batch of 128); 0 when not even a batch of 1 fits.

On the CPU, Linux usually kills a process that overcommits (SIGKILL, exit status 137) before an allocation fails;
the message can only be given when the allocator reports the failure (``DefaultCPUAllocator: can't allocate
memory``, as under a ``ulimit -v``), as a GPU's allocator always does.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch.utilities.memory import garbage_collection_cuda, is_oom_error


def is_out_of_memory(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is an allocator's out-of-memory error: a
    `torch.OutOfMemoryError`, or what Lightning's `is_oom_error` recognises (CUDA, cuDNN, the CPU allocator)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, torch.OutOfMemoryError) or is_oom_error(exc):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def forget(exc: BaseException) -> None:
    """Drop the tensors that ``exc``'s traceback keeps alive (the failed step's activations) and free them."""
    while exc is not None:
        traceback.clear_frames(exc.__traceback__)
        exc = exc.__cause__ or exc.__context__
    free_memory()


def catch_out_of_memory(call: Callable[[], Any]) -> str | None:
    """Run ``call()``; if it runs out of memory, free what the failure holds and return the allocator's words
    (`allocator_words`), else None. Any other exception propagates."""
    try:
        call()
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        words = allocator_words(exc)
        forget(exc)  # the failed step's tensors, held by the traceback, are freed before anything else runs
        return words
    return None


def free_memory() -> None:
    """Collect garbage and hand the CUDA allocator's cached blocks back (Lightning's own helper)."""
    garbage_collection_cuda()


def largest_fitting(fits: Callable[[int], bool], failed: int) -> int:
    """The largest ``n < failed`` with ``fits(n)``, assuming that a size fits whenever a larger one does; 0 if
    even ``fits(1)`` is false. Halves ``failed`` until a size fits, then bisects up to the last size that failed.

    >>> largest_fitting(lambda n: n <= 37, 128)
    37
    """
    hi, lo = failed, failed // 2
    while lo >= 1 and not fits(lo):
        hi, lo = lo, lo // 2
    if lo < 1:
        return 0
    while hi - lo > 1:  # lo fits, hi does not
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo


def repeat_batch(batch: Any, n: int) -> Any:
    """``batch`` (a tensor, or a tuple/list/dict of tensors sharing their first dimension) with ``n`` rows: its
    examples repeated in order."""
    if isinstance(batch, torch.Tensor):
        return batch[torch.arange(n, device=batch.device) % len(batch)]
    if isinstance(batch, (tuple, list)):
        return type(batch)(repeat_batch(b, n) for b in batch)
    if isinstance(batch, dict):
        return {k: repeat_batch(v, n) for k, v in batch.items()}
    return batch


def step_fits(
    model: torch.nn.Module,
    batch: Any,
    optimizers: Iterable[torch.optim.Optimizer] = (),
    forward_context: Callable[[], AbstractContextManager] = nullcontext,
) -> bool:
    """One training step on ``batch``: ``model.losses(batch)["loss"]`` forward and backward, then a step of each
    optimiser (so that their state — Adam's two moments — is counted). False if it ran out of memory; any other
    error propagates. Gradients and the step's tensors are freed before returning."""
    optimizers = list(optimizers)
    try:
        model.zero_grad(set_to_none=True)
        with forward_context():
            loss = model.losses(batch)["loss"]
        loss.backward()
        del loss
        for opt in optimizers:
            opt.step()
        return True
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        forget(exc)
        return False
    finally:
        model.zero_grad(set_to_none=True)
        free_memory()


def probe_batch_size(
    model: torch.nn.Module,
    examples: Any,
    failed: int,
    device: torch.device | str = "cpu",
    optimizers: Iterable[torch.optim.Optimizer] = (),
    forward_context: Callable[[], AbstractContextManager] = nullcontext,
) -> int:
    """The largest batch size below ``failed`` whose training step (`step_fits`) fits on ``device``; 0 if none.

    ``examples``: a real batch (as the training loader yields it), repeated to each candidate size. ``model`` and
    the optimisers' state are moved to ``device``; the model is left in training mode with its weights changed by
    the probe's steps (the caller is ending the run).
    """
    model.to(device)
    model.train()
    optimizers = list(optimizers)
    for opt in optimizers:
        _state_to(opt, device)
    examples = move_data_to_device(examples, device)
    return largest_fitting(lambda n: step_fits(model, repeat_batch(examples, n), optimizers, forward_context), failed)


def _state_to(opt: torch.optim.Optimizer, device: torch.device | str) -> None:
    for state in opt.state.values():
        for k, v in state.items():
            if isinstance(v, torch.Tensor) and k != "step":  # Adam keeps its step count on the CPU
                state[k] = v.to(device)


class MemoryWatch(L.Callback):
    """Records where a run ran out of memory (Lightning resets the trainer's stage before re-raising)."""

    def __init__(self) -> None:
        self.stage: str | None = None
        self.step: int | None = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if is_out_of_memory(exception):
            self.stage = str(trainer.state.stage.value) if trainer.state.stage is not None else None
            self.step = trainer.global_step


def first_batch(loaders: Iterable) -> Any:
    """The first batch of a training dataloader (or of the first of several)."""
    if isinstance(loaders, (list, tuple)):
        loaders = loaders[0]
    if isinstance(loaders, dict):
        loaders = next(iter(loaders.values()))
    it: Iterator = iter(loaders)
    return next(it)


def examples_per_update(batch: int, fits: int, limit: int = 16) -> tuple[int, int] | None:
    """``(smaller batch, accumulation)`` with the same ``batch`` examples per update and the smaller batch <=
    ``fits`` (the fewest accumulation steps), or None when that needs more than ``limit`` steps."""
    for k in range(2, limit + 1):
        if batch % k == 0 and batch // k <= fits:
            return batch // k, k
    return None


def allocator_words(exc: BaseException) -> str:
    """The allocator's own first sentence (``CUDA out of memory. Tried to allocate 2.00 GiB.``), kept short."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if len(text) > 160:  # up to the last sentence that ends within 160 characters
        cut = text[:160].rfind(". ")
        text = text[: cut + 1] if cut > 40 else text[:157] + "..."
    return text


def out_of_memory_error(cfg, trainer: L.Trainer, model: L.LightningModule, datamodule, watch: MemoryWatch, words: str):
    """The `ConfigError` that ends a run which ran out of memory (see the module doc); probes when in training."""
    from omegaconf import OmegaConf

    from gensuite.cli.config import describe_key
    from gensuite.errors import ConfigError

    device = trainer.strategy.root_device
    where = f"on {device}" + (f", at step {watch.step}" if watch.step is not None else "")
    saved = [p.name for p in sorted((Path(cfg.paths.output_dir) / "checkpoints").glob("*.ckpt"))]
    kept = (
        f"; add ckpt_path=last to resume from the checkpoints already written ({', '.join(saved[:3])})" if saved else ""
    )
    if watch.stage in ("validate", "sanity_check"):
        keys = ("data.eval_batch_size", "metrics.batch_size")
        halves = " ".join(f"{k}={max(1, int(OmegaConf.select(cfg, k, default=2) or 2) // 2)}" for k in keys)
        err = ConfigError(f"ran out of memory while validating or sampling ({where}): {words}", fix=halves + kept)
        err.key_notes = [describe_key(cfg, k) for k in keys]
        return err
    batch_size = OmegaConf.select(cfg, "data.batch_size", default=None)
    err = ConfigError(f"ran out of memory in training ({where}) at data.batch_size={batch_size}: {words}")
    err.key_notes = [describe_key(cfg, "data.batch_size")]
    if trainer.world_size > 1 or not isinstance(batch_size, int):
        err.fix = f"a smaller batch: data.batch_size={max(1, (batch_size or 2) // 2)}{kept}"
        return err
    print(f"[gensuite] out of memory at data.batch_size={batch_size}: probing the largest batch size that fits "
          "(one training step per size)", flush=True)  # fmt: skip
    try:
        examples = first_batch(datamodule.train_dataloader())
        rows = len(examples[0] if isinstance(examples, (tuple, list)) else examples)
        fits = probe_batch_size(model, examples, min(batch_size, rows), device, trainer.optimizers,
                                trainer.precision_plugin.forward_context)  # fmt: skip
    except Exception as exc:  # the probe is a courtesy: its own failure must not hide the message
        err.message += f" (the probe for a size that fits failed: {type(exc).__name__}: {allocator_words(exc)})"
        err.fix = f"a smaller batch: data.batch_size={max(1, batch_size // 2)}{kept}"
        return err
    finally:
        free_memory()
    if fits == 0:
        err.message += ". Not even a batch of 1 fits: the model itself is too large for this device"
        err.fix = (
            "a smaller model (fewer or narrower layers), trainer.precision=bf16-mixed, or a device with more memory"
        )
        err.fix += kept
        return err
    err.message += f". The largest batch size whose training step fits here is {fits}"
    fix = f"data.batch_size={fits}"
    same = examples_per_update(batch_size, fits) if model.automatic_optimization else None
    if same is not None:
        accumulate = trainer.accumulate_grad_batches
        fix += f", or to keep {batch_size * accumulate} examples per update: data.batch_size={same[0]} "
        fix += f"trainer.accumulate_grad_batches={same[1] * accumulate}"
    err.fix = fix + kept
    return err
