"""Evaluation cost: one full evaluation (FID/KID/IS/precision-recall/coverage on ``metrics.n_samples`` samples)
as a share of one training epoch, per family, on the default configs.

    python -m benchmarks eval_cost                    # vae and gan on mnist5k
    python -m benchmarks.eval_cost --families vae gan diffusion
    python -m benchmarks.eval_cost --scoring-only     # feature-network training + scoring 2,000 given images

Scoring alone (target: <= 15 s for 2,000 samples on 2 CPU cores with every feature space) is timed on given images
(real test images resampled to 2,000) in each space alone and in all of them, with and without the bootstrap
intervals: features, held-out and train-referenced FID / KID, precision / recall / density / coverage, the copy
rates and the nearest-image panel. Before it, the one-off training of the feature networks (target for the ssl
network: <= 3 min on mnist5k on 2 cores) is timed in a fresh cache.

The epoch is timed by Lightning (the suite's callbacks without the evaluation); the evaluation is the shared
`Evaluator` of the run (the reference statistics and the classifier are cached once per dataset, so their one-off
cost is printed apart). The split of the evaluation into sampling and scoring shows where its time goes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import lightning as L
import torch

from benchmarks.common import compose_cfg, machine, table
from gensuite.cli.config import instantiate_checked
from gensuite.train import build_callbacks


class EpochClock(L.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        self.t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.seconds = time.perf_counter() - self.t0


def feature_training_cost(data: str) -> None:
    """The one-off training of each trained feature network at its default budget, in a fresh cache (then copied
    into the run cache, ``paths.cache_dir``)."""
    from gensuite.metrics.features import ClassifierFeatures
    from gensuite.metrics.ssl import SSLFeatures

    with tempfile.TemporaryDirectory() as out:
        cfg = compose_cfg([f"data={data}"], out)
        dm = instantiate_checked(cfg, "data")
        rows = []
        t0, c0 = time.perf_counter(), time.process_time()
        ssl = SSLFeatures.for_data(dm, out, steps=cfg.metrics.ssl_steps)
        seconds = time.perf_counter() - t0
        rows.append({"extractor": "ssl", "budget": f"{cfg.metrics.ssl_steps} steps", "train s": seconds,
                     "train CPU s": time.process_time() - c0, "check": f"5-NN val acc {ssl.knn_acc:.3f}"})  # fmt: skip
        if dm.labelled:
            t0, c0 = time.perf_counter(), time.process_time()
            clf = ClassifierFeatures.for_data(dm, out, epochs=cfg.metrics.classifier_epochs)
            rows.append({"extractor": "classifier", "budget": f"{cfg.metrics.classifier_epochs} epochs",
                         "train s": time.perf_counter() - t0, "train CPU s": time.process_time() - c0,
                         "check": f"val acc {clf.val_acc:.3f}"})  # fmt: skip
        # the scoring below finds them in the run cache as a second run would (the cache key is the data's)
        shutil.copytree(out, cfg.paths.cache_dir, dirs_exist_ok=True)
    print(f"\nfeature networks, trained once per dataset (machine: {machine()}; data={data}; load {_load()})\n")
    print(table(rows, list(rows[0])))


def scoring_cost(data: str, n: int = 2000) -> None:
    with tempfile.TemporaryDirectory() as out:
        cfg = compose_cfg([f"data={data}", f"metrics.n_samples={n}"], out)
        dm = instantiate_checked(cfg, "data")
        rows = []
        spaces = [["classifier"], ["ssl"], "all"] if dm.labelled else ["all"]
        for features in spaces:
            for bootstrap in (0, cfg.metrics.bootstrap):
                evaluator = instantiate_checked(cfg, "metrics", features=features)
                evaluator.bootstrap = bootstrap
                t0 = time.perf_counter()
                evaluator.prepare(dm, "cpu")
                prepare_s = time.perf_counter() - t0
                images, _ = dm.real_images("test")
                images = images[torch.arange(n) % len(images)]
                t0, c0 = time.perf_counter(), time.process_time()
                metrics = evaluator.evaluate_images(images)
                rows.append({"spaces": ",".join(evaluator.extractors), "bootstrap resamples": bootstrap, "n": n,
                             "score s": time.perf_counter() - t0, "score CPU s": time.process_time() - c0,
                             "metrics": len(metrics),
                             "prepare s (first: trains + caches)": prepare_s})  # fmt: skip
                print(table(rows[-1:], list(rows[0])).splitlines()[-1], flush=True)
    print(f"\nscoring {n} given images (machine: {machine()}; data={data}; load {_load()})\n")
    print(table(rows, list(rows[0])))


def _load() -> str:
    """The 1-minute load average against the cores: on a shared machine, how contended the timings were. There,
    the CPU seconds of this process are the steadier figure: with ``--threads 1`` they are the wall time on one
    idle core, an upper bound for two."""
    return f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=["vae", "gan"])
    parser.add_argument("--data", default="mnist5k")
    parser.add_argument("--scoring-only", action="store_true")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the target is for 2 CPU cores)")
    args, _ = parser.parse_known_args(argv)
    torch.set_num_threads(args.threads)
    feature_training_cost(args.data)
    scoring_cost(args.data)
    if args.scoring_only:
        return
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
