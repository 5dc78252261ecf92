"""Samplers of one trained diffusion model: FID and speed per sampler and step count.

    python -m benchmarks.diffusion_samplers                       # newest logs/runs/diffusion-mnist5k/*/last.ckpt
    python -m benchmarks.diffusion_samplers --ckpt <path> --n 500 --steps 10 20 50 100 --ddpm-steps 1000

Every row samples the same ``n`` images with the same seed (FID is biased by n: compare rows, not other tables)
through the shared `Evaluator` (classifier features, the run's own metric settings). ``images/s`` is sampling
only (no feature extraction), on this machine as loaded at the time: on a shared CPU compare the ``NFE`` column
(network evaluations per image) and the speed ratio of rows measured back to back. DDIM, DPM-Solver++ and its
SDE variant run at every ``--steps``; DDPM (ancestral) at ``--ddpm-steps`` (it needs hundreds of steps).

The last lines check the acceptance of issue 4: DPM-Solver++ (SDE and ODE) at 20 steps at least 30x faster than
DDPM at 1000, with ``fid_classifier`` within 25% of DDPM-1000's.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from benchmarks.common import machine, table
from gensuite.cli.config import instantiate_checked
from gensuite.diffusion.samplers import DDIM, DDPM, DPMSolver, DPMSolverSDE
from gensuite.runs.checkpoint import load_model

COLUMNS = ["sampler", "steps", "NFE", "fid", "kid", "precision", "recall", "coverage", "images/s", "seconds"]


def newest_checkpoint(root: Path = Path("logs/runs")) -> Path:
    found = sorted(root.glob("diffusion-*/*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit("no diffusion checkpoint under logs/runs: python train.py model=diffusion, or --ckpt <path>")
    return found[-1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, default=None, help="a diffusion checkpoint (default: the newest)")
    parser.add_argument("--n", type=int, default=500, help="samples per row (the same for every row)")
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20, 50, 100], help="DDIM / DPM-Solver steps")
    parser.add_argument("--ddpm-steps", type=int, nargs="+", default=[100, 1000], help="DDPM steps")
    parser.add_argument("--samplers", nargs="+", default=["dpm_solver_sde", "dpm_solver", "ddim", "ddpm"])
    parser.add_argument("--threads", type=int, default=None)
    args, _ = parser.parse_known_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ckpt = args.ckpt or newest_checkpoint()
    model, run_cfg = load_model(ckpt)
    if not hasattr(model, "set_sampler"):
        raise SystemExit(f"{ckpt} holds a {getattr(model, 'family', '?')} model, not a diffusion model")
    run_cfg.metrics.n_samples = args.n
    run_cfg.metrics.batch_size = max(args.n, 2)
    run_cfg.metrics.kid_subset_size = min(run_cfg.metrics.kid_subset_size, args.n)
    datamodule = instantiate_checked(run_cfg, "data")
    evaluator = instantiate_checked(run_cfg, "metrics")
    evaluator.prepare(datamodule, "cpu")

    plan = []
    for name in args.samplers:
        if name == "ddpm":
            plan += [DDPM(s) for s in args.ddpm_steps]
        elif name == "ddim":
            plan += [DDIM(s) for s in args.steps]
        elif name == "dpm_solver":
            plan += [DPMSolver(s) for s in args.steps]
        elif name == "dpm_solver_sde":
            plan += [DPMSolverSDE(s) for s in args.steps]
        else:
            raise SystemExit(f"unknown sampler {name!r} (ddpm, ddim, dpm_solver, dpm_solver_sde)")
    print(f"checkpoint {ckpt}\nmachine {machine()}\nn = {args.n} samples per row, seed {evaluator.seed}\n", flush=True)
    rows = []
    for sampler in plan:
        model.set_sampler(sampler)
        t0 = time.perf_counter()
        m = evaluator.evaluate(model, n=args.n)
        row = {
            "sampler": sampler.name,
            "steps": sampler.steps,
            "NFE": sampler.steps,
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
    print("\n" + table(rows, COLUMNS))
    print(f"FID floor (real vs real, same n): {m['val/fid_classifier_floor']:.4g}")

    def find(name: str, steps: int) -> dict | None:
        return next((r for r in rows if r["sampler"] == name and r["steps"] == steps), None)

    ref = find("ddpm", 1000)
    for fast in (find("dpm_solver_sde", 20), find("dpm_solver", 20)):
        if ref and fast:
            speedup = fast["images/s"] / ref["images/s"]
            ratio = fast["fid"] / ref["fid"]
            print(
                f"\n{fast['sampler']}-20 vs DDPM-1000: {speedup:.1f}x faster (measured; {1000 / 20:.0f}x fewer "
                f"network calls), FID {fast['fid']:.4g} vs {ref['fid']:.4g} ({100 * (ratio - 1):+.1f}%). "
                f"Acceptance (>= 30x faster, FID within 25%): {'met' if speedup >= 30 and ratio <= 1.25 else 'NOT met'}"
            )


if __name__ == "__main__":
    main()
