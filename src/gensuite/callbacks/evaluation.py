"""The evaluation callback: sample grids every validation, sample metrics periodically and at the end.

It runs in ``on_validation_epoch_end``. `gensuite.train.build_callbacks` places it before any weight-averaging
callback, whose own ``on_validation_epoch_end`` swaps the raw weights back: so the samples and metrics here come
from the EMA weights when the run has EMA (see PITFALLS: EMA hook order), which a test checks.

- During ``fit``: picture panels each validation; metrics every ``every_n_epochs`` (0: never), or at the first
  validation after each ``every_n_seconds`` of training, with ``n_samples_during_fit`` samples, logged with
  ``time/train_elapsed_s`` (FID against wall-clock training time, as compare.py plots it). The seconds these
  evaluations take are not training time (`gensuite.callbacks.clock.TrainingClock` counts training batches only,
  hence ``trainer.max_time`` and ``time/train_s``) and are reported as ``time/fit_eval_s``: a family that samples
  slowly (a transformer, diffusion) does not lose training time to being measured more expensively.
- During ``validate`` (the final evaluation of `train`, and `eval.py`): metrics with the evaluator's full
  ``n_samples``, and ``samples.png`` in the run folder.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from torchvision.utils import save_image

from gensuite.callbacks.clock import TrainingClock
from gensuite.cli.loggers import tensorboard_writer
from gensuite.errors import ConfigError
from gensuite.metrics.evaluator import Evaluator
from gensuite.record import BUDGET_DIR, BUDGET_SECONDS_KEY, ELAPSED_KEY, FIT_EVAL_SECONDS_KEY, NOTES_KEY, budget_stem
from gensuite.runs.grids import grid_of
from gensuite.safe_files import write_bytes_atomic, write_text_atomic


def write_png(grid: torch.Tensor, path: Path) -> None:
    """A grid as a PNG, rendered in memory and written beside ``path``, then renamed (never through a link)."""
    buffer = io.BytesIO()
    save_image(grid, buffer, format="png")
    write_bytes_atomic(path, buffer.getvalue(), "hydra.run.dir")


class Evaluation(L.Callback):
    """Logs samples and sample-based metrics through an `Evaluator` (which owns extractor and reference)."""

    def __init__(
        self,
        evaluator: Evaluator,
        every_n_epochs: int = 0,
        every_n_seconds: float | None = None,
        n_samples_during_fit: int = 500,
        grid_size: int = 64,
        grid_seed: int = 0,
        output_dir: str | None = None,
    ):
        self.evaluator = evaluator
        self.every_n_epochs, self.n_samples_during_fit = every_n_epochs, n_samples_during_fit
        self.every_n_seconds = every_n_seconds
        self._next_due_s = every_n_seconds or 0.0
        self._t0: float | None = None
        self.grid_size, self.grid_seed = grid_size, grid_seed
        self.output_dir = output_dir
        self.last_metrics: dict[str, float] = {}
        self.fit_eval_s = 0.0
        #: the run's training seconds so far (its `TrainingClock.time_elapsed`, which survives resumes), handed in
        #: by `gensuite.train`; None: wall time since the fit started
        self.training_seconds: Callable[[], float] | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        device = trainer.strategy.root_device
        dm = trainer.datamodule
        dm.setup(stage)
        # rank 0 trains / caches the feature classifier and reference features first; the others then load them
        if trainer.is_global_zero:
            self.evaluator.prepare(dm, device)
        trainer.strategy.barrier("gensuite-evaluator")
        if not trainer.is_global_zero:
            self.evaluator.prepare(dm, device)

    def _panels(self, trainer, pl_module) -> dict:
        batch = next(iter(trainer.datamodule.val_dataloader()))
        batch = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
        g = torch.Generator(device=pl_module.device).manual_seed(self.grid_seed)
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            panels = pl_module.panels(batch, generator=g, n=self.grid_size)
        pl_module.train(was_training)
        return panels

    def on_train_start(self, trainer, pl_module) -> None:
        self._t0 = time.perf_counter()

    def train_elapsed_s(self) -> float:
        """Training seconds so far: `training_seconds` where the run has a training clock."""
        if self.training_seconds is not None:
            return self.training_seconds()
        return time.perf_counter() - self._t0 if self._t0 is not None else 0.0

    def record_entries(self) -> dict:
        """What this callback adds to the run record (`gensuite.record.collect_metrics`)."""
        entries = {FIT_EVAL_SECONDS_KEY: self.fit_eval_s, **self.evaluator.last_info}
        if self.evaluator.notes:
            entries[NOTES_KEY] = " | ".join(self.evaluator.notes)
        return entries

    def _due(self, trainer, fitting: bool) -> bool:
        if not fitting:
            return True
        if self.every_n_epochs > 0 and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            return True
        if self.every_n_seconds:
            elapsed = self.train_elapsed_s()
            # every rank must agree, or some would wait in the gather forever
            elapsed = float(trainer.strategy.broadcast(elapsed, src=0))
            if elapsed >= self._next_due_s:
                while self._next_due_s <= elapsed:
                    self._next_due_s += self.every_n_seconds
                return True
        return False

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        fitting = trainer.state.fn == "fit"
        if trainer.is_global_zero:
            self.log_panels(trainer, pl_module, save=not fitting)
        if not self._due(trainer, fitting) or not self.evaluator.active:
            return
        world = trainer.world_size
        t0 = time.perf_counter()
        metrics = self.evaluator.evaluate(
            pl_module,
            n=None if not fitting else self.n_samples_during_fit,
            rank=trainer.global_rank,
            world_size=world,
            gather=(lambda t: pl_module.all_gather(t).flatten(0, 1)) if world > 1 else None,
        )
        self.last_metrics = metrics
        panel = self.evaluator.nearest_panel
        if trainer.is_global_zero and panel is not None:  # top row: samples; bottom: their nearest training images
            writer = tensorboard_writer(trainer)
            if writer is not None:
                writer.add_image("samples/nearest_training_images", grid_of(panel), trainer.global_step)
            if not fitting and self.output_dir:
                write_png(grid_of(panel), Path(self.output_dir) / "nearest_training_images.png")
        if fitting:
            # every rank takes the same (rank 0's) seconds off, so the ranks' clocks stay in step
            self.fit_eval_s += float(trainer.strategy.broadcast(time.perf_counter() - t0, src=0))
            metrics = {
                **metrics,
                ELAPSED_KEY: self.train_elapsed_s(),
                FIT_EVAL_SECONDS_KEY: self.fit_eval_s,
            }
        # identical on every rank (features were gathered): the mean over ranks changes nothing and, unlike
        # sync_dist=False, does not make Lightning warn under DDP
        pl_module.log_dict({k: float(v) for k, v in metrics.items()}, on_epoch=True, sync_dist=True)

    def log_panels(self, trainer, pl_module, save: bool) -> None:
        panels = self._panels(trainer, pl_module)
        writer = tensorboard_writer(trainer)  # None without a TensorBoard logger, and under fast_dev_run
        for name, panel in panels.items():
            if isinstance(panel, str):
                if writer is not None:
                    writer.add_text(f"samples/{name}", panel, trainer.global_step)
                continue
            grid = grid_of(panel)
            if writer is not None:
                writer.add_image(f"samples/{name}", grid, trainer.global_step)
            if save and self.output_dir:
                write_png(grid, Path(self.output_dir) / f"{name}.png")
        if save and self.output_dir:
            texts = {k: v for k, v in panels.items() if isinstance(v, str)}
            for name, text in texts.items():
                write_text_atomic(Path(self.output_dir) / f"{name}.txt", text, "hydra.run.dir")


class BudgetPoints(L.Callback):
    """Budget points: at each of ``seconds`` on the run's training clock, the model as it stands there is saved
    (``checkpoints/budget_<s>s.ckpt``) and evaluated as the final evaluation evaluates it — the evaluator's full
    ``n_samples``, every feature space, the same reference, the weights `eval.py` loads from that file (the EMA
    weights where the run has EMA) — into ``budget_points/budget_<s>s.json``.

    It acts at the end of the training batch whose clock reading reaches a point (every DDP rank at the same batch:
    rank 0's reading decides), after `TrainingClock` has counted that batch. The save and the evaluation are off
    the clock: the clock is told, as for a validation, that what follows is not training, so the seconds they take
    go neither into the budget nor into ``time/train_s`` (they are recorded as ``budget/eval_s``). A resumed run
    goes on with the first point after its restored clock.

    One run serves every budget point: the run's budget (``trainer.max_time``) is the largest point, so a schedule
    that follows the budget (the transformer's warm-up cosine) decays over the largest budget, and a smaller point
    sees a model whose learning rate has not yet decayed (``compare.py`` says so in its report).

    ``offset``: training seconds spent before this run on the same budget (stage 1 of a two-stage entry of
    ``compare.py``). The points are then of the whole budget: a point is made when ``offset`` plus this run's clock
    reaches it, named and recorded by the whole budget's seconds; the points inside the offset are not this run's.
    """

    def __init__(self, seconds, output_dir: str, offset: float = 0.0):
        points = sorted(float(s) for s in seconds)
        if not points or points[0] <= 0:
            raise ConfigError(
                f"budget points {list(seconds)}: each must be a positive number of training seconds",
                keys=("budgets",),
                fix="budgets=[1,2,4,8] (minutes of the training clock; fractions allowed: budgets=[0.25,0.5])",
            )
        self.offset = float(offset)
        if self.offset < 0:
            raise ConfigError(f"budget points: offset={offset} must be >= 0 training seconds", keys=("offset",))
        self.points, self.output_dir = [p for p in points if p > self.offset], Path(output_dir)
        self._reached = -1.0  # the clock reading at the last point made: the points up to it are done
        #: handed in by train.py (`gensuite.train.hand_in_clock`): the run's training clock and its evaluation
        self.clock: TrainingClock | None = None
        self.evaluation: Evaluation | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        clock = self.clock
        if clock is None:
            return
        elapsed = float(trainer.strategy.broadcast(clock.elapsed, src=0)) + self.offset
        due = [p for p in self.points if p <= elapsed and not self._done(p)]
        if not due:
            return
        evaluation = self.evaluation
        t0 = time.perf_counter()
        # every rank takes part, rank 0 writes (through the run's checkpoint IO); a batch that passes several
        # points at once (points closer than one batch) stands for each of them, under each one's name
        for point in due:
            trainer.save_checkpoint(self.output_dir / "checkpoints" / f"{budget_stem(point)}.ckpt")
        metrics = self._measure(trainer, pl_module, evaluation) if evaluation is not None else {}
        seconds = float(trainer.strategy.broadcast(time.perf_counter() - t0, src=0))
        clock.on_validation_start(trainer, pl_module)  # the time since the batch ended is not training
        if trainer.is_global_zero:
            for point in due:
                path = self.output_dir / "checkpoints" / f"{budget_stem(point)}.ckpt"
                record = {**metrics, BUDGET_SECONDS_KEY: point, "budget/train_s": elapsed,
                          "budget/step": trainer.global_step, "budget/eval_s": seconds,
                          "budget/ckpt_path": str(path),
                          **({"budget/offset_s": self.offset} if self.offset else {})}  # fmt: skip
                folder = self.output_dir / BUDGET_DIR
                folder.mkdir(parents=True, exist_ok=True)
                text = json.dumps(record, indent=2, sort_keys=True, default=str) + "\n"
                write_text_atomic(folder / f"{budget_stem(point)}.json", text, "hydra.run.dir")
        self._reached = elapsed

    def _done(self, point: float) -> bool:
        return point <= self._reached

    def on_train_start(self, trainer, pl_module) -> None:
        clock = self.clock
        # a resumed run: the points before its restored clock were made by the run it continues
        self._reached = clock.elapsed + self.offset if clock is not None and clock.elapsed > 0 else -1.0

    def _measure(self, trainer, pl_module, evaluation: Evaluation) -> dict:
        """The evaluator's full evaluation of the weights the checkpoint's ``state_dict`` holds."""
        from lightning.pytorch.callbacks import WeightAveraging

        averaging = [cb for cb in trainer.callbacks if isinstance(cb, WeightAveraging)]
        for cb in averaging:  # the averaged weights in (Lightning's own swap for validation), and out again after
            cb.on_validation_epoch_start(trainer, pl_module)
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.no_grad():
                world = trainer.world_size
                metrics = evaluation.evaluator.evaluate(
                    pl_module,
                    rank=trainer.global_rank,
                    world_size=world,
                    gather=(lambda t: pl_module.all_gather(t).flatten(0, 1)) if world > 1 else None,
                )
        finally:
            pl_module.train(was_training)
            for cb in averaging:
                cb.on_validation_epoch_end(trainer, pl_module)
        return {**metrics, **evaluation.evaluator.last_info}
