"""Sampling throughput per family (and per sampler for diffusion), on the networks of the default configs.

    python -m benchmarks sampling                     # every family on mnist5k, 256 images per row
    python -m benchmarks.sampling --n 64 --families vae gan

Speed does not depend on the weights, so each model is built from its default config with random weights (no
checkpoint needed). Every row draws ``n`` images in batches of ``metrics.batch_size`` through ``model.sample`` —
the same call the evaluation makes — after one warm-up batch; images/s counts sampling only (no feature
extraction). The transformer samples 784 pixel tokens per image with its key/value cache.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import compose_cfg, machine, table
from gensuite import registry
from gensuite.cli.config import instantiate_checked
from gensuite.diffusion.samplers import DDIM, DDPM, DPMSolver, DPMSolverSDE

FAMILIES = registry.names(from_nothing=True)


def images_per_s(model, n: int, batch: int) -> float:
    g = torch.Generator().manual_seed(0)
    model.eval()
    with torch.no_grad():
        model.sample(min(batch, 8), generator=g)  # warm-up
        t0, done = time.perf_counter(), 0
        while done < n:
            b = min(batch, n - done)
            model.sample(b, generator=g)
            done += b
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256, help="images per row")
    parser.add_argument("--families", nargs="+", default=FAMILIES)
    parser.add_argument("--data", default="mnist5k")
    args, _ = parser.parse_known_args(argv)
    rows = []
    for family in args.families:
        cfg = compose_cfg([f"model={family}", f"data={args.data}"])
        model = instantiate_checked(cfg, "model")
        batch = int(cfg.metrics.batch_size)
        params = sum(p.numel() for p in model.parameters())
        if family == "diffusion":
            for sampler in (DDPM(1000), DDIM(50), DPMSolver(20), DPMSolverSDE(20), DPMSolver(10)):
                model.set_sampler(sampler)
                n = max(8, args.n // 16) if sampler.steps >= 1000 else args.n  # DDPM-1000: a smaller share
                rows.append(
                    {"family": family, "sampler": sampler.name, "NFE": sampler.steps, "parameters": params,
                     "images/s": images_per_s(model, n, batch), "n": n}
                )  # fmt: skip
                print(table(rows[-1:], COLUMNS).splitlines()[-1], flush=True)
            continue
        n = max(8, args.n // 8) if family == "transformer" else args.n
        sampler = getattr(model, "sampler", None)  # flow matching: steps x network calls per step
        nfe = sampler.steps * getattr(sampler, "nfe_per_step", 1) if sampler is not None else None
        nfe = nfe or getattr(getattr(model, "tokenizer", None), "seq_len", 1)
        rows.append(
            {"family": family, "sampler": "-", "NFE": nfe, "parameters": params,
             "images/s": images_per_s(model, n, batch), "n": n}
        )  # fmt: skip
        print(table(rows[-1:], COLUMNS).splitlines()[-1], flush=True)
    print(f"\nmachine: {machine()}; data={args.data}; NFE = network evaluations per image\n")
    print(table(rows, COLUMNS))


COLUMNS = ["family", "sampler", "NFE", "parameters", "images/s", "n"]

if __name__ == "__main__":
    main()
