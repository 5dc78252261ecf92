"""Each family's suite default against the library a user would otherwise pick, each configured as its authors
recommend, tuned with the same care on a validation split, at an equal training budget, three seeds a side.

    pip install .[peers]                                   # pythae, denoising-diffusion-pytorch, x-transformers
    nice python -m benchmarks peers                        # everything: about 3.8 h on the 2-core CPU (see below)
    nice python -m benchmarks.peers --only gan,text        # some families; rows already in the file are skipped
    python -m benchmarks.peers --minutes-scale 0.02 --samples 200 --tune-samples 100 --out /tmp/p   # a smoke run

| family    | peer (`recipes.SOURCES`: where every setting comes from)                          | budget |
|-----------|-----------------------------------------------------------------------------------|--------|
| vae       | pythae ``VAE`` with its MNIST convnets, its MNIST example config                  | 4 min  |
| gan       | the DCGAN recipe (Radford et al. 2016; pytorch/examples dcgan), plain PyTorch     | 4 min  |
| diffusion | denoising-diffusion-pytorch ``Unet`` + ``GaussianDiffusion``, its README's Trainer | 4 min  |
| text      | x-transformers ``TransformerWrapper(Decoder(rotary_pos_emb=True))``, train_enwik8 | 4 min  |

The protocol, the same for both sides of every family, in one invocation:

1. *Tuning* (`TRIALS` = 4 trainings a side, seed 0, ``--tune-scale`` x the budget, ``--tune-samples`` images):
   trial 0 is the recipe as its authors give it (the suite: its current default, composed by ``train.py``),
   trials 1-2 scale the learning rate (``lr_factors``), trial 3 turns the family's knob (``knob``) at the best
   learning rate of trials 0-2. Trials alternate between the sides. A trial's score is its best sampling variant's
   score on the **validation** split: ``val/fid_classifier_val`` (the samples against the data's val split, from
   ``eval.py samples=<npz> data=mnist5k``) or the bits per byte of the text's validation slice. The held-out
   numbers of a trial are recorded and shown, never read by a choice.
2. *Final rows*: each side's chosen trial at the full budget for seeds 1, 2, 3, interleaved (seed 1 peer, seed 1
   suite, seed 2 peer, ...). Every sampling variant of the peer is scored from the same trained weights: with and
   without the technique the suite uses (pythae: N(0, I) and the fitted Gaussian mixture; DCGAN: raw G and its
   EMA; diffusion: DDIM eta 0 and eta 1). Text has two protocols: (a) equal wall-clock, each side tuned; (b)
   x-transformers with the suite's recipe (width, depth, heads, AdamW, warm-up + cosine, clipping, batch: read from
   the composed config) against the suite's default, which isolates the implementation.
3. *Scores*, all on the held-out test split, ``--samples`` images a row (the same N everywhere; the FID floor, real
   training images against the same reference at the same N, is the evaluator's ``val/fid_<space>_floor``): FID
   (classifier and ssl features), precision, recall, classes covered; text: bits per byte of the held-out topics
   (the last 10 % of Python's help topics) and of the validation slice (the 10 % of topics before them); both sides
   train on the rest. Mean and 95 % interval over seeds (`gensuite.compare.stats`: Student-t, FID on the log
   scale), and ``(peer FID - floor) / (suite FID - floor)`` with its interval for every image row.
4. *Clock*: training steps only, on both sides (the suite: ``trainer.max_time`` on its `TrainingClock`); sampling
   and scoring are off it; sampling seconds per image are recorded for both sides.

Everything goes to ``benchmarks/results/peers/peers.jsonl`` (a row per family x side x variant x seed, tuning trials
included, each with date, commit, the machine's load before and after, library versions, budget and settings) and
``peers.md`` (the tables). Working files (runs, sample files) go under ``--work``.

Expected time with the default budgets on this 2-core CPU, quiet (`--minutes-scale` and `--tune-scale` scale the
first item; the rest is per row): training, which the clock fixes, 2 sides x (4 x 0.25 + 3) x 4 min for each image
family (96 min) and 44 min for text (56 if the suite's chosen text trial is not its default: protocol (b) then
trains the default too); ``train.py``'s start-ups, checkpoints and in-run evaluations on the suite's side ~25 min;
scoring (63 sample files, in-process ``eval.py``) ~8 min; the diffusion peer's DDIM-50 sampling ~45 min (its
``Unet`` at dim 16 costs 11-15 ms of one thread's CPU time per image and network call, ~7 ms on two, 5.6x the
suite's UNet of the same size: its default DDPM-1000 would take ~2 h per 1,000 images and is not run); about
3.8 h in all. On a loaded machine the overheads
stretch and the steps bought by each budget shrink: record the load (every row does) and run it alone.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmarks.common import machine
from benchmarks.peers import measure, results
from benchmarks.peers.measure import SELECT
from benchmarks.peers.recipes import PEERS, SOURCES, xtransformers_suite_recipe
from benchmarks.peers.suite import ROOT, suite_recipe

BUDGET_MINUTES = {"vae": 4.0, "gan": 4.0, "diffusion": 4.0, "text": 4.0}
TUNE_SCALE = 0.25  # a tuning trial's share of the row's budget
TRIALS = 4  # per side: the recipe, two learning rates, the knob
TUNE_SEED, SEEDS = 0, (1, 2, 3)
N_SAMPLES, N_TUNE_SAMPLES = 1000, 300  # the same on both sides; the FID floor is at the same N
VERSIONS = ("torch", "lightning", "pythae", "denoising-diffusion-pytorch", "x-transformers", "ema-pytorch")


def versions() -> dict[str, str | None]:
    out = {}
    for name in VERSIONS:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def commit() -> str:
    """The checkout's commit, ``+changes`` when tracked files differ from it."""

    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    return git("rev-parse", "HEAD") + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def trial_settings(recipe: dict, i: int, earlier: list[list[dict]], key: str) -> dict:
    """Trial ``i``'s settings: 0 the recipe's, 1-2 its learning rate(s) scaled by ``lr_factors``, 3 the knob at the
    best learning rate of trials 0-2 (``earlier``, chosen on ``key``, a validation score)."""
    base = recipe["settings"]
    if i == 0:
        return dict(base)
    if i <= 2:
        factor = recipe["lr_factors"][i - 1]
        return base | {k: float(f"{base[k] * factor:.4g}") for k in recipe["lr"]}
    return earlier[results.choose(earlier[:3], key)][0]["settings"] | recipe["knob"]


@dataclass
class Run:
    """One invocation: where rows go, what is measured already, and what every row records."""

    path: Path
    work: Path
    meta: dict
    done: dict[str, list[dict]] = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)

    def measure(self, recipe: dict, data, **row) -> list[dict]:
        """The rows of one training (one per sampling variant) of ``recipe`` with ``row``'s stage, family, side,
        settings, budget, seed and n: from the file if measured already, else trained, sampled and scored now."""
        row = row | {"fingerprint": recipe.get("fingerprint"), "implementation": recipe["name"]}
        key = results.training_key(row)
        if key in self.done:
            return self.done[key]
        print(f"  {row['stage']} {row['family']} {row['side']} [{row['config']}] seed {row['seed']}: "
              f"{row['budget_s']:.0f} s of training", flush=True)  # fmt: skip
        before = os.getloadavg()
        facts, sampler = recipe["train"](row["settings"], data, row["budget_s"], row["seed"])
        out = []
        for variant in recipe["variants"]:
            if row["n"] is None:  # text: no samples, the bytes are scored
                metrics, per_image = measure.text_scores(sampler, data), None
            else:
                images, per_image = measure.timed(lambda v=variant: sampler(v, row["n"], row["seed"]), row["n"])
                npz = self.work / f"{row['stage']}-{row['family']}-{row['side']}-{len(self.rows)}-{variant}.npz"
                metrics = measure.score_images(measure.write_samples(npz, images), row["n"])
            out.append(row | facts | self.meta | {
                "variant": variant, "metrics": metrics, "sample_s_per_image": per_image, "load_before": before,
                "load_after": os.getloadavg(), "date": datetime.datetime.now().isoformat(timespec="seconds"),
            })  # fmt: skip
        results.append_rows(self.path, out)
        self.done[key] = out
        self.rows += out
        score = results.score(out, SELECT[results.modality(row["family"])])
        print(f"    {facts['steps']} steps; validation score {score:.4g}", flush=True)
        return out


def family_rows(run: Run, family: str, args) -> None:
    """Tuning trials, then the final rows of ``family``, both sides interleaved."""
    image = family != "text"
    if image:
        data = measure.train_images()
    else:
        data = measure.text_splits()
        text_file = run.work / "pydoc-fit.txt"
        text_file.write_bytes(data["fit"])
    recipes = {"peer": PEERS[family], "suite": suite_recipe(family, run.work, None if image else text_file)}
    key = SELECT["image" if image else "text"]
    budget = BUDGET_MINUTES[family] * 60 * args.minutes_scale
    common = {"family": family, "tune_scale": args.tune_scale, "minutes_scale": args.minutes_scale}
    trials: dict[str, list[list[dict]]] = {side: [] for side in recipes}
    for i in range(TRIALS):
        for side, recipe in recipes.items():
            settings = trial_settings(recipe, i, trials[side], key)
            trials[side].append(run.measure(
                recipe, data, **common, stage="tune", side=side, config=f"trial {i}", trial=i, settings=settings,
                budget_s=round(budget * args.tune_scale, 3), seed=TUNE_SEED, n=args.tune_samples if image else None,
            ))  # fmt: skip
    finals = [(side, "tuned", recipe, trials[side][results.choose(trials[side], key)][0]["settings"])
              for side, recipe in recipes.items()]  # fmt: skip
    if not image:  # protocol (b): the same recipe on both sides
        peer_b = xtransformers_suite_recipe(recipes["suite"]["config"])
        default = recipes["suite"]["settings"]
        if finals[1][3] == default:
            finals[1] = ("suite", "tuned, default", recipes["suite"], default)
        else:
            finals.append(("suite", "default", recipes["suite"], default))
        finals.append(("peer", "suite recipe", peer_b, peer_b["settings"]))
    for seed in SEEDS[: args.seeds]:
        for side, label, recipe, settings in finals:
            run.measure(recipe, data, **common, stage="final", side=side, config=label, trial=None, settings=settings,
                        budget_s=round(budget, 3), seed=seed, n=args.samples if image else None)  # fmt: skip


def header(meta: dict, args, rows: list[dict]) -> list[str]:
    loads = [x for r in rows for x in (r["load_before"][0], r["load_after"][0])]
    dates = sorted(r["date"] for r in rows)
    return [
        "# Peers: each suite default against the library a user would otherwise pick",
        "",
        f"`python -m benchmarks.peers {' '.join(args.argv)}` (`benchmarks/peers/__init__.py` says how every number is"
        f" made). Rows from {dates[0] if dates else '-'} to {dates[-1] if dates else '-'}; commits "
        f"{', '.join(sorted({r['commit'] for r in rows})) or '-'}; {meta['machine']}; 1-minute load "
        f"{min(loads, default=0):.2f}-{max(loads, default=0):.2f} over the rows; "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".",
        "",
        "Budgets (training seconds, both sides): "
        + ", ".join(f"{f} {m * 60 * args.minutes_scale:.0f}" for f, m in BUDGET_MINUTES.items())
        + f"; tuning trials at {args.tune_scale} x that, seed {TUNE_SEED}, {args.tune_samples} samples; final rows "
        f"seeds {list(SEEDS[: args.seeds])}, {args.samples} samples.",
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes-scale", type=float, default=1.0, help="multiplies every budget (0.02: a smoke run)")
    parser.add_argument("--tune-scale", type=float, default=TUNE_SCALE, help="a tuning trial's share of the budget")
    parser.add_argument("--only", default=",".join(BUDGET_MINUTES), help="families, comma-separated")
    parser.add_argument("--samples", type=int, default=N_SAMPLES, help="samples per final image row")
    parser.add_argument("--tune-samples", type=int, default=N_TUNE_SAMPLES, help="samples per tuning trial")
    parser.add_argument("--seeds", type=int, default=len(SEEDS), help=f"final seeds a side (at most {len(SEEDS)})")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "peers")
    parser.add_argument("--work", type=Path, default=None, help="runs and sample files (default: logs/peers)")
    args = parser.parse_args(argv)
    args.argv = argv if argv is not None else sys.argv[1:]
    families = [f.strip() for f in args.only.split(",") if f.strip()]
    unknown = sorted(set(families) - set(BUDGET_MINUTES))
    if unknown:
        raise SystemExit(f"--only: unknown {', '.join(unknown)}; choose from {', '.join(BUDGET_MINUTES)}")
    if min(args.samples, args.tune_samples) < 10:
        raise SystemExit(f"--samples and --tune-samples must be >= 10, got {args.samples}, {args.tune_samples}")
    if not 1 <= args.seeds <= len(SEEDS):
        raise SystemExit(f"--seeds must be in 1..{len(SEEDS)}, got {args.seeds}")
    if not 0 < args.tune_scale <= 1 or args.minutes_scale <= 0:
        raise SystemExit(
            f"--tune-scale must be in (0, 1] and --minutes-scale > 0, got {args.tune_scale}, {args.minutes_scale}"
        )
    out = args.out.resolve()
    work = (args.work or ROOT / "logs" / "peers").resolve()
    work.mkdir(parents=True, exist_ok=True)
    meta = {"commit": commit(), "versions": versions(), "machine": machine(), "threads": torch.get_num_threads()}
    run = Run(out / "peers.jsonl", work, meta)
    earlier = results.read_rows(run.path)
    run.done = results.by_training(earlier)
    print(f"{meta['machine']}; budgets x{args.minutes_scale}; {len(run.done)} trainings in {run.path}", flush=True)
    for family in families:
        print(f"{family}:", flush=True)
        family_rows(run, family, args)
        rows = results.read_rows(run.path)
        (out / "peers.md").write_text(results.render(rows, SOURCES, header(meta, args, rows)))
    print(f"\n{out / 'peers.md'}\n{run.path}")
