"""Exact resume from any checkpoint, every family: the weights, the optimiser states and the averaged (EMA) weights
after a resume equal those of a run never interrupted.

Per family, one uninterrupted reference run of 2 epochs x 3 batches writes an epoch-end checkpoint and a checkpoint
after every step (``every_n_train_steps=1``). Each kind of checkpoint is then resumed in a fresh folder to the same
end: the epoch-0 checkpoint, a step checkpoint inside epoch 1, and ``interrupted.ckpt`` written by a real SIGTERM
(the signal Lightning handles, sent to this process) inside epoch 1. The VAE also resumes from the step checkpoint
written on the last batch of epoch 0 (Lightning's "restarted on train batch end, epoch at its end" case).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

import gensuite.train as train_module
from gensuite.data.order import EpochShuffle, ResumableLoader
from gensuite.train import train

from .conftest import TINY

EMA = ["callbacks.ema.update_starting_at_step=1"]
FAMILIES = {
    "vae": ["model=vae", "data=digits", "model.encoder.width=8", "model.decoder.width=8"],
    # n_critic=2: the step rule (every 2nd batch of an epoch updates the generator) must survive a resume
    "gan": ["model=gan", "data=digits", "model.latent_dim=8", "model.decoder.width=8",
            "model.discriminator.body.width=8", "model.discriminator.body.out_dim=16", "model.n_critic=2", *EMA],
    "diffusion": ["model=diffusion", "data=digits", "model/denoiser=unet_small", "model.denoiser.base_width=8",
                  "model.nll_timesteps=2", "sampler.steps=2", *EMA],
    "flow_matching": ["model=flow_matching", "data=digits", "model/denoiser=unet_small", "model.denoiser.base_width=8",
                      "model.nll_steps=1", "sampler.steps=2", *EMA],
    "transformer_text": ["model=transformer", "data=pydoc", "data.seq_len=16", "model.net.width=16",
                         "model.net.depth=1", "model.net.heads=2", "model.text_length=8", "model.text_samples=1",
                         "trainer.val_check_interval=null", "model.scheduler.warmup_steps=1"],
    # random horizontal flips (data.augment=flip) of a folder of noise images: the flips resume with the order
    "vae_flip": ["model=vae", "data=image_folder", "data.path={photos}", "data.image_size=8", "data.augment=flip",
                 "model.encoder.width=8", "model.decoder.width=8"],
    "vqvae": ["model=vqvae", "data=digits", "model.grid_encoder.width=8", "model.grid_decoder.width=8",
              "model.grid_encoder.downsample=1", "model.grid_decoder.upsample=1", "model.num_codes=16",
              "model.code_dim=4"],
}  # fmt: skip
COMMON = [
    "trainer.max_epochs=2",
    "trainer.max_steps=-1",
    "trainer.check_val_every_n_epoch=1",
    "data.batch_size=16",
    "callbacks.evaluation=null",  # the sample metrics are not what is compared here
    "callbacks.lr_monitor=null",
    "callbacks.model_checkpoint.save_top_k=-1",
    "callbacks.model_checkpoint.monitor=null",
    "callbacks.model_checkpoint.every_n_epochs=1",
    "+callbacks.steps._target_=lightning.pytorch.callbacks.ModelCheckpoint",
    "+callbacks.steps.dirpath=${paths.output_dir}/steps",
    "+callbacks.steps.filename='s{step}'",
    "+callbacks.steps.auto_insert_metric_name=false",
    "+callbacks.steps.every_n_train_steps=1",
    "+callbacks.steps.save_top_k=-1",
]


def _cfg(make_cfg, family: str, out: Path, *extra: str):
    return make_cfg([*FAMILIES[family], *COMMON, *extra], output_dir=out)


def _state(ckpt: Path) -> dict[str, torch.Tensor]:
    """Every tensor a resumed run carries on: weights, optimiser states, callback states (EMA weights)."""
    raw = torch.load(ckpt, weights_only=True)
    out = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, torch.Tensor):
            out[prefix] = value
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}/{k}", v)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(f"{prefix}/{i}", v)

    # with EMA, state_dict holds the averaged weights and current_model_state the trained ones
    for key in ("state_dict", "current_model_state", "averaging_state", "optimizer_states", "callbacks"):
        walk(key, raw.get(key, {}))
    return out


def max_difference(a: Path, b: Path) -> float:
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys(), sorted(set(sa) ^ set(sb))
    return max(((x.double() - sb[k].double()).abs().max().item() if x.numel() else 0.0) for k, x in sa.items())


class SigtermAt(L.Callback):
    """Sends this process a real SIGTERM after the first training batch of epoch 1 (Lightning's handler turns it
    into an orderly stop at the end of the batch; PreemptionCheckpoint writes interrupted.ckpt). For the GAN with
    n_critic=2 that batch updates only the discriminator: the stop falls inside its step rule."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == 1 and batch_idx == 0 and not trainer.received_sigterm:
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None), "Lightning's handler is missing"
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.fixture(scope="module")
def references(tmp_path_factory, cache_dir):
    """family -> (folder of its uninterrupted run, make_cfg-like composer) — trained once per module."""
    from .conftest import compose_cfg

    root = tmp_path_factory.mktemp("exact-resume")
    photos = root / "photos"  # 64 RGB noise images (not mirror-symmetric: a flip changes the batch)
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(64):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(photos / f"{i:02d}.png")

    def make(overrides, output_dir):
        overrides = [o.replace("{photos}", str(photos)) for o in overrides]
        return compose_cfg(TINY + [f"paths.cache_dir={cache_dir}"] + overrides, output_dir)

    done: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in done:
            out = root / family / "whole"
            result = train(_cfg(make, family, out))
            assert result["trainer"].current_epoch == 2, family
            done[family] = out
        return done[family]

    return get, make, root


def _position(ckpt: Path) -> tuple[int, int]:
    """(epoch, batches of it trained) where the data order stood when ``ckpt`` was written."""
    state = torch.load(ckpt, weights_only=True)["gensuite_data_position"]
    return state["epoch"], state["batches"]


KINDS = ["epoch_end", "every_n_train_steps", "sigterm"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_resume_ends_with_the_weights_of_an_uninterrupted_run(references, family, kind, monkeypatch):
    get, make, root = references
    ref = get(family)
    out = root / family / kind
    if kind == "epoch_end":
        (ckpt,) = (ref / "checkpoints").glob("epoch000-*.ckpt")
    elif kind == "every_n_train_steps":  # the first step checkpoint inside epoch 1
        ckpt = next(p for p in sorted((ref / "steps").glob("s*.ckpt"), key=_global_step) if _position(p)[0] == 1)
    else:  # a SIGTERM inside epoch 1, then resume from the interrupted.ckpt it wrote
        built = train_module.build_callbacks
        monkeypatch.setattr(train_module, "build_callbacks", lambda cfg: [*built(cfg), SigtermAt()])
        with pytest.raises(SystemExit) as info:
            train(_cfg(make, family, out / "killed"))
        assert info.value.code == 143
        monkeypatch.setattr(train_module, "build_callbacks", built)
        ckpt = out / "killed" / "checkpoints" / "interrupted.ckpt"
    epoch, batches = _position(ckpt)
    assert (epoch, batches) == (0, 3) if kind == "epoch_end" else (epoch == 1 and 0 < batches < 3), (epoch, batches)
    assert torch.load(ckpt, weights_only=True)["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["batches"] \
        == batches  # Lightning's stateful-loader record says the same  # fmt: skip
    result = train(_cfg(make, family, out / "resumed", f"ckpt_path={ckpt}"))
    assert result["trainer"].current_epoch == 2
    assert any(k.startswith("current_model_state/") for k in _state(ckpt)) == (EMA[0] in FAMILIES[family])
    diff = max_difference(ref / "checkpoints" / "last.ckpt", out / "resumed" / "checkpoints" / "last.ckpt")
    print(f"[exact-resume] {family:16s} {kind:20s} from epoch {epoch} batch {batches}: max abs difference {diff:.3g}")
    assert diff == 0.0, (family, kind, diff)


def test_resume_from_the_step_checkpoint_on_the_last_batch_of_an_epoch(references):
    """Saved on the last batch of epoch 0, before its validation: the resumed run starts epoch 1 whole."""
    get, make, root = references
    ref = get("vae")
    (ckpt,) = [p for p in (ref / "steps").glob("s*.ckpt") if _position(p) == (0, 3)]
    out = root / "vae" / "last-batch"
    assert train(_cfg(make, "vae", out, f"ckpt_path={ckpt}"))["trainer"].current_epoch == 2
    assert max_difference(ref / "checkpoints" / "last.ckpt", out / "checkpoints" / "last.ckpt") == 0.0
    # and the checkpoints that resumed run writes resume exactly too: Lightning 2.6.6 left its epoch counters one
    # epoch behind there, so that a second resume trained an epoch twice (gensuite.lightning_compat)
    (again,) = [p for p in (out / "steps").glob("s*.ckpt") if _position(p) == (1, 1)]
    (same,) = [p for p in (ref / "steps").glob("s*.ckpt") if _position(p) == (1, 1)]
    progress = [torch.load(p, weights_only=True)["loops"]["fit_loop"]["epoch_progress"] for p in (again, same)]
    assert progress[0] == progress[1], progress
    second = train(_cfg(make, "vae", root / "vae" / "second", f"ckpt_path={again}"))
    assert second["trainer"].current_epoch == 2 and second["trainer"].global_step == 6
    assert max_difference(ref / "checkpoints" / "last.ckpt", root / "vae" / "second" / "checkpoints" / "last.ckpt") == 0


def _global_step(ckpt: Path) -> int:
    return torch.load(ckpt, weights_only=True)["global_step"]


# -- the sampler itself ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("mirror", [False, True])
def test_epoch_shuffle_splits_ranks_and_skips_the_trained_batches(mirror):
    """Also with random flips (``mirror``: item i comes as i + n, mirrored): the coins are part of the order."""
    ranks = [EpochShuffle(103, seed=5, world=3, rank=r, batch_size=4, mirror=mirror) for r in range(3)]
    for s in ranks:
        s.set_epoch(2)
    shares = [list(s) for s in ranks]
    assert all(len(x) == 34 for x in shares) and len(set().union(*shares)) == 102  # disjoint, equal, cut to 3x34
    assert shares[0] != EpochShuffle(103, seed=5, world=3, rank=0, batch_size=4, epoch=3, mirror=mirror).order(3)

    sampler = EpochShuffle(103, seed=5, world=3, rank=1, batch_size=4, epoch=2, mirror=mirror)
    for _ in range(2):
        sampler.trained()
    state = sampler.state_dict()
    assert state["epoch"] == 2 and state["batches"] == 2
    resumed = EpochShuffle(103, seed=5, world=3, rank=1, batch_size=4, epoch=2, mirror=mirror)
    resumed.load_state_dict(state)
    assert list(resumed) == shares[1][8:]  # the rest of the epoch, from the batch after the trained ones
    assert list(resumed) == shares[1][8:]  # a second iterator before any batch is trained: still the rest
    resumed.trained()
    resumed.set_epoch(3)
    assert list(resumed) == resumed.order(3)  # the next epoch is whole
    assert len(resumed) == 34
    plain = EpochShuffle(103, seed=5, world=3, rank=1, batch_size=4).order(2)
    assert [i % 103 for i in shares[1]] == plain  # flips or not, the same order
    flipped = sum(i >= 103 for i in shares[1])
    assert (5 < flipped < 29) if mirror else flipped == 0


def test_lightning_uses_the_resumable_loader_as_given(make_cfg):
    """The loader is Lightning's `_Stateful` (its state goes into the fit loop's checkpoint state) and, as a
    DistributedSampler, is not replaced by Lightning's own distributed sampler under DDP."""
    from lightning.fabric.utilities.types import _Stateful  # the protocol Lightning checks (isinstance)

    from gensuite.cli.config import instantiate_checked

    dm = instantiate_checked(make_cfg(FAMILIES["vae"]), "data")
    loader = dm.train_dataloader()
    assert isinstance(loader, ResumableLoader) and isinstance(loader, _Stateful)
    assert isinstance(loader.sampler, torch.utils.data.DistributedSampler)
    assert not isinstance(dm.val_dataloader(), ResumableLoader)
