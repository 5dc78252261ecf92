"""Every experiment config (each ``conf/experiment/*.yaml``, picked up by itself) composes, builds its model at
the size it promises, and trains a debug budget through `train(cfg)` — the function ``python train.py`` runs.

CIFAR-10 and CelebA cannot be downloaded here, so their experiments run on ``data=image_folder`` over 32x32 /
64x64 RGB crops of scikit-learn's two sample photographs, at the experiment's own image size, batch settings and
``augment``. Published-size networks (a 78.7M-parameter UNet) are built once to count their parameters, then
trained at a few channels wide: the budget, the precision, the schedule and the data path stay the experiment's.
A GPT over VQ-VAE codes first trains its stage 1 (the matching ``*_vqvae`` experiment) on the same budget.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from gensuite.cli.config import instantiate_checked
from gensuite.errors import ConfigError
from gensuite.train import train

from .conftest import CONF, TINY, compose_cfg

EXPERIMENTS = sorted(p.stem for p in (Path(CONF) / "experiment").glob("*.yaml"))
DOWNLOADED = ("cifar10", "celeba", "mnist", "fashion_mnist")  # data this machine cannot fetch
# parameter counts (millions) of the published models the configs follow: DDPM's CIFAR-10 UNet (Ho et al. 2020,
# 35.7M) and DDIM's CelebA-64 UNet (Song et al. 2021, 78.7M), also under flow matching (the same UNets); the
# DCGAN of PyTorch's CelebA example (Radford et al. 2016 at ngf = ndf = 64: G 3.58M + D 2.77M)
PUBLISHED = {"cifar10_diffusion": 35.7, "celeba64_diffusion": 78.7, "cifar10_flow": 35.7, "celeba64_flow": 78.7,
             "celeba64_gan": 6.35}  # fmt: skip
# size settings of the parts zoo and the value they take in the debug run
SMALL = {"width": 16, "base_width": 16, "max_width": 32, "num_res_blocks": 1, "blocks": 1, "num_heads": 1, "heads": 2}
RUN = [
    "data.batch_size=4",
    "data.eval_batch_size=4",
    "trainer.limit_train_batches=2",
    "metrics.features=none",  # the sample metrics are tested elsewhere; here: the run and a few samples
    "metrics.n_samples=8",
    "metrics.batch_size=8",
    "callbacks.evaluation.n_samples_during_fit=8",
    "callbacks.evaluation.grid_size=4",
    "callbacks.lr_monitor=null",
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Few-channel nets run fastest on one thread (two oversubscribe a shared machine badly); restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def photo_folders(tmp_path_factory) -> dict[int, Path]:
    """32x32 and 64x64 RGB PNGs: random square crops of scikit-learn's two sample photographs, resized."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images  # 2 x (427, 640, 3) uint8
    root = tmp_path_factory.mktemp("photos")
    folders = {}
    for size in (32, 64):
        folder = root / f"{size}px"
        folder.mkdir()
        rng = np.random.default_rng(size)
        for i in range(24):
            photo = photos[i % 2]
            side = int(rng.integers(size, 200))
            top, left = rng.integers(0, photo.shape[0] - side), rng.integers(0, photo.shape[1] - side)
            crop = Image.fromarray(photo[top : top + side, left : left + side])
            crop.resize((size, size), Image.BICUBIC).save(folder / f"{i:03d}.png")
        folders[size] = folder
    return folders


def shrink(node, prefix: str = "model") -> list[str]:
    """Overrides that make every network of ``node`` a few channels wide (its layout otherwise kept)."""
    out = []
    for key, value in node.items():
        path = f"{prefix}.{key}"
        if isinstance(value, dict):
            out += shrink(value, path)
        elif key in SMALL and isinstance(value, int) and value > SMALL[key]:
            out.append(f"{path}={SMALL[key]}")
        elif key == "depth" and isinstance(value, int) and "Transformer" in str(node.get("_target_", "")):
            out.append(f"{path}=1")
        elif key == "nll_timesteps" and isinstance(value, int):  # network calls of the likelihood bound
            out.append(f"{path}=2")
    return out


def data_overrides(cfg: DictConfig, folders: dict[int, Path]) -> list[str]:
    """The experiment's data, or a folder of photos at its image size when that data would be downloaded."""
    name = OmegaConf.select(cfg, "data.name", default=None) or cfg.data._target_.rsplit(".", 1)[-1].lower()
    if name not in DOWNLOADED:
        return []
    size = int(cfg.data.image_size)
    return ["data=image_folder", f"data.path={folders[size]}", f"data.image_size={size}", "data.num_workers=0"]


def n_params(model) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


_stage1: dict[tuple, Path] = {}


def stage1_checkpoint(experiment: str, data: list[str], tmp: Path) -> Path:
    """The ``last.ckpt`` of the VQ-VAE that a VQ-code GPT experiment reads (its ``<prefix>_vqvae`` experiment)."""
    vq = experiment.split("_")[0] + "_vqvae"
    spec = [f"experiment={vq}"] if vq in EXPERIMENTS else ["model=vqvae"]
    key = (*spec, *data)
    if key not in _stage1:
        cfg = compose_cfg([*TINY, *spec, *data], tmp)
        cfg = compose_cfg([*TINY, *spec, *data, *shrink(OmegaConf.to_container(cfg.model)), *RUN], tmp)
        train(cfg)
        _stage1[key] = tmp / "checkpoints" / "last.ckpt"
    return _stage1[key]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_builds_at_size_and_trains_a_debug_budget(experiment, photo_folders, cache_dir, tmp_path):
    base = [*TINY, f"experiment={experiment}", f"paths.cache_dir={cache_dir}"]
    data = data_overrides(compose_cfg(base), photo_folders)
    cfg = compose_cfg([*base, *data])
    extra = []
    if OmegaConf.select(cfg, "model.tokenizer._target_", default="").endswith("vq_tokenizer"):
        with pytest.raises(ConfigError, match="tokenizer.path"):  # stage 2 without its stage 1: a clear error
            instantiate_checked(cfg, "model")
        extra = [f"model.tokenizer.path={stage1_checkpoint(experiment, data, tmp_path / 'stage1')}"]
        cfg = compose_cfg([*base, *data, *extra])

    start = time.perf_counter()
    full = instantiate_checked(cfg, "model")  # the published size
    size = n_params(full)
    print(
        f"\n{experiment}: {size:.2f}M parameters ({type(full).__name__}), built in {time.perf_counter() - start:.1f} s"
    )
    if experiment in PUBLISHED:
        assert abs(size / PUBLISHED[experiment] - 1) < 0.02, (size, PUBLISHED[experiment])
    del full

    small = shrink(OmegaConf.to_container(cfg.model))
    if OmegaConf.select(cfg, "sampler.steps") is not None:
        small.append("sampler.steps=2")
    run = compose_cfg([*base, *data, *extra, *small, *RUN], tmp_path / "run")
    if experiment.startswith(("cifar10_", "celeba64_")):  # the promised data shape and precision
        assert run.data.channels == 3 and run.data.image_size == (32 if "cifar10" in experiment else 64)
        assert run.trainer.precision == "bf16-mixed" and run.data.augment == "flip"
    start = time.perf_counter()
    result = train(run)
    print(f"{experiment}: debug run {time.perf_counter() - start:.1f} s")
    metrics = result["metrics"]
    assert result["trainer"].global_step > 0 and not result["trainer"].interrupted
    assert any(k.startswith("val/") and np.isfinite(v) for k, v in metrics.items() if isinstance(v, float))
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
