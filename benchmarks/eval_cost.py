"""Evaluation cost: one full evaluation (FID/KID/IS/precision-recall/coverage on ``metrics.n_samples`` samples)
as a share of one training epoch, per family, on the default configs.

    python -m benchmarks eval_cost                    # vae and gan on mnist5k
    python -m benchmarks.eval_cost --families vae gan diffusion

The epoch is timed by Lightning (the suite's callbacks without the evaluation); the evaluation is the shared
`Evaluator` of the run (the reference statistics and the classifier are cached once per dataset, so their one-off
cost is printed apart). The split of the evaluation into sampling and scoring shows where its time goes.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import lightning as L
import torch

from benchmarks.common import compose_cfg, machine, table
from gensuite.config import instantiate_checked
from gensuite.train import build_callbacks


class EpochClock(L.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        self.t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.seconds = time.perf_counter() - self.t0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=["vae", "gan"])
    parser.add_argument("--data", default="mnist5k")
    args, _ = parser.parse_known_args(argv)
    rows = []
    for family in args.families:
        with tempfile.TemporaryDirectory() as out:
            cfg = compose_cfg(
                [
                    f"model={family}",
                    f"data={args.data}",
                    "trainer.max_epochs=1",
                    "trainer.limit_val_batches=0",
                    "trainer.num_sanity_val_steps=0",
                    "trainer.enable_progress_bar=false",
                    "callbacks.progress_bar=null",
                ],
                out,
            )
            torch.manual_seed(0)
            dm, model = instantiate_checked(cfg, "data"), instantiate_checked(cfg, "model")
            clock = EpochClock()
            skip = ("Evaluation", "LearningRateMonitor")  # the evaluation is timed apart; no logger here
            callbacks = [cb for cb in build_callbacks(cfg) if type(cb).__name__ not in skip] + [clock]
            trainer = instantiate_checked(cfg, "trainer", callbacks=callbacks, logger=False)
            trainer.fit(model, datamodule=dm)

            evaluator = instantiate_checked(cfg, "metrics")
            t0 = time.perf_counter()
            evaluator.prepare(dm, "cpu")
            prepare_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            metrics = evaluator.evaluate(model)
            eval_s = time.perf_counter() - t0
            sampling_s = evaluator.n_samples / metrics["time/sample_images_per_s"]
            rows.append(
                {
                    "family": family,
                    "epoch s": clock.seconds,
                    "steps/epoch": trainer.num_training_batches,
                    "eval s": eval_s,
                    "of which sampling s": sampling_s,
                    "eval / epoch": eval_s / clock.seconds,
                    "n_samples": evaluator.n_samples,
                    "one-off prepare s (cached)": prepare_s,
                }
            )
            print(table(rows[-1:], COLUMNS).splitlines()[-1], flush=True)
    print(f"\nmachine: {machine()}; data={args.data}\n")
    print(table(rows, COLUMNS))


COLUMNS = [
    "family",
    "epoch s",
    "steps/epoch",
    "eval s",
    "of which sampling s",
    "eval / epoch",
    "n_samples",
    "one-off prepare s (cached)",
]

if __name__ == "__main__":
    main()
