"""Peak memory of training, per family, at its default batch: the default config of each family that trains from
nothing (``python train.py model=<family>``, data=mnist5k, the batch size of its preset), a few training steps
through the suite's Trainer, in a fresh process per family.

    python -m benchmarks memory
    python -m benchmarks.memory --families vae gan --steps 3 --json memory.json

Columns: the process's peak resident set size (``getrusage(RUSAGE_SELF).ru_maxrss``) after the steps; the same
minus the baseline measured after the imports (torch, Lightning, the suite), i.e. what the data, the model, its
optimiser state and the steps' activations added; and on a GPU the peak of ``torch.cuda.max_memory_allocated``
over the steps (the tensors PyTorch allocated, not the allocator's cache). The evaluation, checkpoints and
progress bar are off: this is the memory of training alone. A batch that does not fit ends a real run with the
largest batch that does (`gensuite.cli.memory`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from gensuite import registry

FAMILIES = registry.names(from_nothing=True)
COLUMNS = ["family", "batch", "parameters", "peak RSS MiB", "RSS over baseline MiB", "CUDA peak MiB"]
MARK = "MEMORY-ROW "


def peak_rss_mib() -> float:
    """This process's peak resident set size so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def measure(family: str, steps: int, overrides: list[str]) -> dict:
    """Train ``steps`` steps of ``family``'s default config in this process; its peak memory."""
    import torch  # the imports a training run makes, before the baseline

    from benchmarks.common import compose_cfg
    from gensuite.cli.config import instantiate_checked
    from gensuite.train import build_callbacks

    baseline = peak_rss_mib()
    gpu = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as out:
        cfg = compose_cfg(
            [
                f"model={family}",
                f"trainer.accelerator={'gpu' if gpu else 'cpu'}",
                f"trainer.max_steps={steps}",
                "trainer.limit_val_batches=0",
                "trainer.num_sanity_val_steps=0",
                "trainer.enable_progress_bar=false",
                "callbacks.progress_bar=null",
                "callbacks.evaluation=null",
                "callbacks.model_checkpoint=null",
                "callbacks.lr_monitor=null",
                *overrides,
            ],
            output_dir=out,
        )
        torch.manual_seed(0)
        datamodule, model = instantiate_checked(cfg, "data"), instantiate_checked(cfg, "model")
        trainer = instantiate_checked(cfg, "trainer", callbacks=build_callbacks(cfg), logger=False)
        if gpu:
            torch.cuda.reset_peak_memory_stats()
        trainer.fit(model, datamodule=datamodule)
        cuda_peak = torch.cuda.max_memory_allocated() / 2**20 if gpu else None
    peak = peak_rss_mib()
    return {
        "family": family,
        "batch": int(cfg.data.batch_size),
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": trainer.global_step,
        "baseline RSS MiB": round(baseline, 1),
        "peak RSS MiB": round(peak, 1),
        "RSS over baseline MiB": round(peak - baseline, 1),
        "CUDA peak MiB": round(cuda_peak, 1) if cuda_peak is not None else "—",
        "device": torch.cuda.get_device_name(0) if gpu else "cpu",
    }


def in_fresh_process(family: str, steps: int, overrides: list[str]) -> dict:
    """`measure` in a new Python process, so that one family's peak is not another's (ru_maxrss never falls)."""
    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "benchmarks.memory", "--one", family, "--steps", str(steps), *overrides]
    run = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    rows = [line[len(MARK) :] for line in run.stdout.splitlines() if line.startswith(MARK)]
    if run.returncode != 0 or not rows:
        last = ((run.stderr or run.stdout).strip().splitlines() or ["no output"])[-1]
        return {"family": family, "peak RSS MiB": f"failed (exit {run.returncode}): {last[:200]}"}
    return json.loads(rows[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=FAMILIES, choices=FAMILIES)
    parser.add_argument("--steps", type=int, default=3, help="training steps per family (default 3)")
    parser.add_argument("--json", default=None, help="also write the rows here")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # the child process: one family
    args, rest = parser.parse_known_args(argv if argv is not None else sys.argv[1:])
    overrides = [a for a in rest if "=" in a]  # e.g. data=digits, trainer.precision=bf16-mixed
    if args.one:
        print(MARK + json.dumps(measure(args.one, args.steps, overrides)), flush=True)
        return

    from benchmarks.common import machine, table

    rows = []
    for family in args.families:
        rows.append(in_fresh_process(family, args.steps, overrides))
        print(f"{family}: {rows[-1].get('peak RSS MiB')} MiB peak RSS", flush=True)
    device = next((r["device"] for r in rows if "device" in r), "cpu")
    base = sorted(r["baseline RSS MiB"] for r in rows if "baseline RSS MiB" in r)
    print(f"\nmachine: {machine()}; device: {device}; data=mnist5k, {args.steps} training steps per family, "
          f"one fresh process each; baseline after the imports {base[0] if base else '?'}-"
          f"{base[-1] if base else '?'} MiB RSS\n")  # fmt: skip
    print(table(rows, COLUMNS))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "rows": rows}, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
