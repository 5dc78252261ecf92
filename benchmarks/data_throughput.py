"""The data pipeline: images/s the loader delivers, and the data time per training step.

1. **Loader** (``loader``): images/s at 64x64 RGB from a folder of 10,000 generated PNGs (crops of scikit-learn's
   two sample photographs, made once under /tmp), batches of 128, through the suite's ``data=image_folder`` —
   decoded once into the cache then held in memory (the default up to ``in_memory_limit`` images), served mapped
   from the cache by 0 or 2 workers (``in_memory_limit=0``, as a folder too large to hold), or decoded per item by
   the workers without a cache — beside torchvision's ``ImageFolder`` + ``DataLoader`` (``ToTensor``; pinned memory
   and workers as given) with the same workers. One epoch of the training loader per row, after one warm-up batch.
2. **Steps** (``steps``): data time per training step against the whole step. Lightning's SimpleProfiler times
   ``train_dataloader_next`` (fetching the next batch) and ``run_training_batch`` (forward, backward, optimiser)
   separately inside one real ``trainer.fit``: the default configs, and the 64 px experiments on the photo folder.

    python -m benchmarks data_throughput                    # both
    python benchmarks/data_throughput.py loader             # the loader table only (steps: the other)
    python benchmarks/data_throughput.py model=gan data=digits   # the step table for one config
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.profilers import SimpleProfiler
from PIL import Image

from benchmarks.common import compose_cfg, machine, table
from gensuite.cli.config import instantiate_checked

STEPS = 30
PHOTOS = Path("/tmp/gensuite-bench-photos64")  # 10,000 PNGs, 64x64 RGB, in one sub-folder (torchvision's layout)
N_PHOTOS = 10_000
BATCH = 128
FOLDER = ["data=image_folder", f"data.path={PHOTOS}", "data.image_size=64"]
DEFAULTS = [
    ["model=vae"],
    ["model=gan"],
    ["model=diffusion"],
    ["model=transformer", "data=pydoc", "model.scheduler.warmup_steps=0"],
    # the published-size 64 px experiments that a CPU steps in seconds, on the photo folder (cached, in memory)
    ["experiment=celeba64_vae", *FOLDER, "data.num_workers=2"],
    ["experiment=celeba64_gan", *FOLDER, "data.num_workers=2"],
    # the same VAE with the folder served from the mapped cache by 2 workers (a folder too large to hold)
    ["experiment=celeba64_vae", *FOLDER, "data.num_workers=2", "data.in_memory_limit=0"],
]


def photo_folder(path: Path = PHOTOS, n: int = N_PHOTOS, size: int = 64) -> Path:
    """``n`` PNGs of ``size`` x ``size`` RGB: random square crops (64 to 300 px) of the two sample photographs that
    ship with scikit-learn, resized (made once; ~1 min)."""
    done = path / ".complete"
    if done.exists():
        return path
    from sklearn.datasets import load_sample_images

    shutil.rmtree(path, ignore_errors=True)
    (path / "all").mkdir(parents=True)
    photos = load_sample_images().images  # 2 x (427, 640, 3) uint8
    rng = np.random.default_rng(0)
    for i in range(n):
        photo = photos[i % 2]
        side = int(rng.integers(64, 300))
        top, left = int(rng.integers(0, photo.shape[0] - side)), int(rng.integers(0, photo.shape[1] - side))
        crop = Image.fromarray(photo[top : top + side, left : left + side])
        crop.resize((size, size), Image.BICUBIC).save(path / "all" / f"{i:05d}.png")
    done.touch()
    return path


def _epoch(loader, limit: int | None = None) -> tuple[float, int]:
    """Images/s over one pass of ``loader`` (after its first batch, which pays for starting workers)."""
    it = iter(loader)
    next(it)
    n, t0 = 0, time.perf_counter()
    for i, (x, _) in enumerate(it):
        n += len(x)
        if limit and i + 1 >= limit:
            break
    return n / (time.perf_counter() - t0), n


def suite_loader(workers: int, mode: str, cache_dir: str) -> tuple[float, int, float | None]:
    """(images/s, images, first-decode seconds) of the suite's training loader in ``mode``: memory | mapped | files."""
    from gensuite.data.image_folder import ImageFolder

    kw = {"path": str(PHOTOS), "channels": 3, "image_size": 64, "batch_size": BATCH, "num_workers": workers}
    if mode == "files":
        kw.update(in_memory_limit=0)  # no cache: every item decoded by the workers, every epoch
    else:
        kw.update(cache_dir=cache_dir, in_memory_limit=0 if mode == "mapped" else 60000)
    dm = ImageFolder(**kw)
    t0 = time.perf_counter()
    dm.setup()
    setup_s = time.perf_counter() - t0
    rate, n = _epoch(dm.train_dataloader(), limit=None if mode != "files" else 25)
    return rate, n, setup_s


def torchvision_loader(workers: int) -> tuple[float, int]:
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    ds = datasets.ImageFolder(str(PHOTOS), transform=transforms.ToTensor())
    loader = DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=workers, drop_last=True,
                        persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())  # fmt: skip
    return _epoch(loader, limit=25)


def loader_table() -> None:
    photo_folder()
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        # the first run decodes the folder into the cache (on 2 threads); every later run maps it
        rate, n, decode_s = suite_loader(2, "memory", cache)
        rows.append({"loader": "suite: first run, decode 10k PNGs into the cache (2 threads)",
                     "workers": 2, "setup s": decode_s, "images/s": N_PHOTOS / decode_s})  # fmt: skip
        for workers in (0, 2):
            rate, n, setup_s = suite_loader(workers, "memory", cache)
            rows.append({"loader": "suite: cached, held in memory (default up to 60k images)", "workers": "-",
                         "setup s": setup_s, "images/s": rate, "images": n})  # fmt: skip
            if workers:
                break  # in memory, a batch is one fancy index: no workers
        for workers in (0, 2):
            rate, n, setup_s = suite_loader(workers, "mapped", cache)
            rows.append({"loader": "suite: cached, mapped file (in_memory_limit=0)", "workers": workers,
                         "setup s": setup_s, "images/s": rate, "images": n})  # fmt: skip
    for workers in (0, 2):
        rate, n, setup_s = suite_loader(workers, "files", "")
        rows.append({"loader": "suite: no cache, PIL per item (cache_dir=null, in_memory_limit=0)",
                     "workers": workers, "setup s": setup_s, "images/s": rate, "images": n})  # fmt: skip
    for workers in (0, 2):
        rate, n = torchvision_loader(workers)
        rows.append({"loader": "torchvision ImageFolder + DataLoader (ToTensor)", "workers": workers,
                     "images/s": rate, "images": n})  # fmt: skip
    print(f"machine: {machine()}; {N_PHOTOS} PNGs of 64x64 RGB, batches of {BATCH}")
    print(table(rows, ["loader", "workers", "setup s", "images/s", "images"]))


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
            f"paths.cache_dir={tempfile.gettempdir()}/gensuite-bench-cache",
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
    label = " ".join(o for o in overrides if o.startswith(("model=", "data=", "experiment=")) and "path" not in o)
    if "data.in_memory_limit=0" in overrides:
        label += " (mapped, 2 workers)"
    return {
        "config": label or "model=vae",
        "batch": int(cfg.data.batch_size),
        "data ms/step": data_ms,
        "step ms": step_ms,
        "data share": f"{100 * data_ms / (data_ms + step_ms):.2f} %",
    }


def steps_table(configs: list[list[str]]) -> None:
    rows = []
    for overrides in configs:
        if any(str(PHOTOS) in o for o in overrides):
            photo_folder()
        try:
            rows.append(measure(overrides))
        except Exception as err:  # a family not in this checkout: say so, keep going
            rows.append({"config": " ".join(overrides[:2]), "data ms/step": f"skipped: {type(err).__name__}: {err}"})
    print(f"machine: {machine()}; median over {STEPS - 5} steps (SimpleProfiler)")
    print(table(rows, ["config", "batch", "data ms/step", "step ms", "data share"]))


def main(argv: list[str] | None = None) -> None:
    argv = argv if argv is not None else sys.argv[1:]
    overrides = [a for a in argv if "=" in a]
    parts = [a for a in argv if a in ("loader", "steps")] or ["loader", "steps"]
    if "loader" in parts and not overrides:
        loader_table()
    if "steps" in parts:
        steps_table([overrides] if overrides else DEFAULTS)


if __name__ == "__main__":
    main()
