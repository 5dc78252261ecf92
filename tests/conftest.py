"""Shared fixtures: composing the real Hydra config, a session-wide cache (the feature classifier is trained once
per test session), and tiny run settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from gensuite.cli.hydra_hooks import register_resolvers

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")

torch.set_num_threads(min(2, os.cpu_count() or 1))
register_resolvers()

# settings that make any family's run take seconds: a few batches, a small evaluation, quiet output
SSL_STEPS = 20  # see TINY
TINY = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=1",
    "trainer.num_sanity_val_steps=0",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "+trainer.enable_model_summary=false",
    "trainer.accelerator=cpu",
    "callbacks.progress_bar=null",
    "metrics.n_samples=200",
    "metrics.batch_size=100",
    "metrics.kid_subset_size=50",
    "metrics.reference_size=400",
    # the ssl feature network at a tiny budget (trained once per session and data, cached in cache_dir)
    f"metrics.ssl_steps={SSL_STEPS}",
]

# the smallest nets of each family (for tests of the machinery around a model, not of its quality); a family not
# listed runs at its default size
SMALL_NETS = {
    "vae": ["model.encoder.width=8", "model.decoder.width=8"],
    "gan": ["model.latent_dim=8", "model.decoder.width=8", "model.discriminator.body.width=8"],
    "diffusion": ["model/denoiser=unet_small", "model.denoiser.base_width=8", "sampler.steps=2"],
    "flow_matching": ["model/denoiser=unet_small", "model.denoiser.base_width=8", "sampler.steps=2"],
    "latent_diffusion": ["sampler.steps=2"],
    "transformer": ["model.net.width=16", "model.net.depth=1", "model.net.heads=2"],
    "vqvae": ["model.grid_encoder.width=8", "model.grid_decoder.width=8"],
}


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gensuite-cache")
    os.environ["GENSUITE_CACHE_DIR"] = str(path)
    return path


def compose_cfg(overrides: list[str], output_dir: Path | None = None, config_name: str = "train") -> DictConfig:
    """The config `python train.py <overrides>` would run, with the run folder at ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
            if not any(o.startswith("paths.log_dir=") for o in overrides):
                cfg.paths.log_dir = str(output_dir.parent)
    return cfg


@pytest.fixture
def make_cfg(cache_dir, tmp_path):
    """``make_cfg(["model=vae", ...], tiny=True)`` -> a composed config writing into a fresh tmp folder."""

    def make(overrides: list[str] = (), tiny: bool = True, output_dir: Path | None = None) -> DictConfig:
        out = output_dir or tmp_path / "run"
        return compose_cfg((TINY if tiny else []) + [f"paths.cache_dir={cache_dir}"] + list(overrides), out)

    return make


def run_entry(
    script: str, *args: str, cwd: Path | None = None, timeout: int = 900, env: dict | None = None, real: bool = False
):
    """Run a real entry point (``python train.py ...``); returns a CompletedProcess. By default in a child forked
    from an interpreter that imported the suite once (`tests.forked_entries`: the script as ``__main__``, the same
    status, output and environment, without ~5 s of imports per run); ``real=True``: a new interpreter."""
    if not real:
        from .forked_entries import run_entry_forked

        return run_entry_forked(script, *args, cwd=cwd, timeout=timeout, env=env)
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0", **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )
