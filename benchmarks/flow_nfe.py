"""Samplers of one trained flow-matching model: FID against network calls, Euler vs Heun (and midpoint).

    python -m benchmarks.flow_nfe                         # newest logs/runs/flow_matching-mnist5k/*/last.ckpt
    python -m benchmarks.flow_nfe --ckpt <path> --n 200 --steps 4 8 16 32 --samplers euler heun
    python -m benchmarks.flow_nfe --diffusion-ckpt <diffusion last.ckpt>   # + SDE-DPM-Solver++ and DDIM rows

Every row samples the same ``n`` images with the same seed (the run's evaluator seed, as
`benchmarks.diffusion_samplers`: its rows at the same ``n`` are comparable) through the shared `Evaluator`
(classifier features, the run's own metric settings). ``steps`` is the sampler's step count and ``NFE`` its network
calls per image (Heun and midpoint: 2 per step), so compare rows at equal NFE as well as at equal steps.
``images/s`` is sampling only, on this machine as loaded at the time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from benchmarks.common import machine, table
from gensuite.cli.config import instantiate_checked
from gensuite.diffusion.samplers import DDIM, DPMSolverSDE
from gensuite.flow.samplers import Euler, Heun, Midpoint
from gensuite.runs.checkpoint import load_model

COLUMNS = ["model", "sampler", "steps", "NFE", "fid", "kid", "precision", "recall", "coverage", "images/s"]
FLOW = {"euler": Euler, "heun": Heun, "midpoint": Midpoint}
DIFFUSION = {"dpm_solver_sde": DPMSolverSDE, "ddim": DDIM}


def newest_checkpoint(family: str, root: Path = Path("logs/runs")) -> Path:
    found = sorted(root.glob(f"{family}-*/*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"no {family} checkpoint under {root}: python train.py model={family}, or --ckpt <path>")
    return found[-1]


def rows_of(ckpt: Path, samplers: list, n: int, label: str) -> list[dict]:
    """Evaluate ``n`` samples of the checkpoint's model with each sampler (same seed for every row)."""
    model, run_cfg = load_model(ckpt)
    run_cfg.metrics.n_samples = n
    run_cfg.metrics.batch_size = max(n, 2)
    run_cfg.metrics.kid_subset_size = min(run_cfg.metrics.kid_subset_size, n)
    datamodule = instantiate_checked(run_cfg, "data")
    evaluator = instantiate_checked(run_cfg, "metrics")
    evaluator.prepare(datamodule, "cpu")
    print(f"{label}: {ckpt} (n = {n}, seed {evaluator.seed})", flush=True)
    rows = []
    for sampler in samplers:
        model.set_sampler(sampler)
        t0 = time.perf_counter()
        m = evaluator.evaluate(model, n=n)
        row = {
            "model": label,
            "sampler": sampler.name,
            "steps": sampler.steps,
            "NFE": getattr(sampler, "nfe", sampler.steps),
            "fid": m["val/fid_classifier"],
            "kid": m["val/kid_classifier"],
            "precision": m["val/precision_classifier"],
            "recall": m["val/recall_classifier"],
            "coverage": m.get("val/coverage_classes", float("nan")),
            "images/s": m["time/sample_images_per_s"],
            "seconds": time.perf_counter() - t0,
        }
        rows.append(row)
        print(table([row], COLUMNS).splitlines()[-1], flush=True)
    print(f"FID floor (real vs real, n = {n}): {m['val/fid_classifier_floor']:.4g}")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, default=None, help="a flow_matching checkpoint (default: the newest)")
    parser.add_argument("--diffusion-ckpt", type=Path, default=None, help="a diffusion checkpoint for the rows beside")
    parser.add_argument("--n", type=int, default=200, help="samples per row (the same for every row)")
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 8, 16, 32])
    parser.add_argument("--samplers", nargs="+", default=["euler", "heun"], choices=sorted(FLOW))
    parser.add_argument(
        "--diffusion-samplers", nargs="+", default=["dpm_solver_sde", "ddim"], choices=sorted(DIFFUSION)
    )
    parser.add_argument("--threads", type=int, default=None)
    args, _ = parser.parse_known_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine {machine()}\n", flush=True)
    ckpt = args.ckpt or newest_checkpoint("flow_matching")
    rows = rows_of(ckpt, [FLOW[s](n) for s in args.samplers for n in args.steps], args.n, "flow_matching")
    if args.diffusion_ckpt:
        plan = [DIFFUSION[s](n) for s in args.diffusion_samplers for n in args.steps]
        rows += rows_of(args.diffusion_ckpt, plan, args.n, "diffusion")
    print("\n" + table(rows, COLUMNS))


if __name__ == "__main__":
    main()
