"""GPU path check (not part of ``make bench``'s CPU figures): each family trains a few hundred steps on one GPU
in bf16 through the real entry point, then prints training and sampling images/s.

    python -m benchmarks.gpu_check                           # every family, 300 steps each, trainer=gpu
    python -m benchmarks.gpu_check --steps 200 --families vae gan
    python -m benchmarks.gpu_check --ddp                     # trainer=ddp on all visible GPUs instead

On a machine without CUDA it stops at once with the suite's own message (trainer=gpu needs a GPU).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import table
from gensuite import registry

ROOT = Path(__file__).resolve().parents[1]
# every family that trains from nothing on its default data (mnist5k), and the transformer on text too
FAMILIES = {f: [f"model={f}"] for f in registry.names(from_nothing=True)} | {
    "transformer-text": ["model=transformer", "data=pydoc"]
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--families", nargs="+", default=list(FAMILIES))
    parser.add_argument("--ddp", action="store_true", help="trainer=ddp over all visible GPUs")
    args, _ = parser.parse_known_args(argv)
    import torch

    if not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device here (this check is for a GPU machine)")
    trainer = ["trainer=ddp", "trainer.accelerator=gpu", f"trainer.devices={torch.cuda.device_count()}"]
    trainer = trainer if args.ddp else ["trainer=gpu"]
    rows = []
    for name in args.families:
        with tempfile.TemporaryDirectory() as logs:
            cmd = [
                sys.executable,
                str(ROOT / "train.py"),
                *FAMILIES[name],
                *trainer,
                "trainer.precision=bf16-mixed",
                "trainer.max_epochs=-1",
                f"trainer.max_steps={args.steps}",
                "trainer.val_check_interval=null",
                "metrics.n_samples=1000",
                "callbacks.progress_bar=null",
                f"paths.log_dir={logs}",
            ]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                print(f"{name}: failed\n{proc.stderr[-3000:]}", flush=True)
                continue
            metrics = json.loads(next(Path(logs).rglob("metrics.json")).read_text())
            batch = 32 if name.startswith("transformer") else 128
            steps = metrics.get("train/global_step", args.steps)
            train_s = metrics.get("time/train_s", float("nan"))
            rows.append(
                {
                    "family": name,
                    "steps": steps,
                    "train s": train_s,
                    "train images/s": steps * batch / train_s,
                    "sample images/s": metrics.get("time/sample_images_per_s", ""),
                    "train tokens/s": metrics.get("time/train_tokens_per_s", ""),
                    "fid_classifier": metrics.get("val/fid_classifier", ""),
                    "bits/dim": metrics.get("val/nll_bpd", ""),
                    "wall s": wall,
                }
            )
            print(table(rows[-1:], COLUMNS).splitlines()[-1], flush=True)
    print(f"\n{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}, bf16-mixed, {args.steps} steps\n")
    print(table(rows, COLUMNS))


COLUMNS = ["family", "steps", "train s", "train images/s", "sample images/s", "train tokens/s", "fid_classifier",
           "bits/dim", "wall s"]  # fmt: skip

if __name__ == "__main__":
    main()
