"""Checkpoints written by an older main still load and sample the same.

``tests/fixtures/checkpoints_4b46262/`` holds one tiny checkpoint per family (plus a conditional diffusion and a
conditional GAN), each written by ``python train.py`` at commit 4b46262 (before the family kernel, issue 29), and
``samples.pt``: what each one's ``sample(4, generator=torch.Generator().manual_seed(0))`` returned then. The
tolerance (1e-5) allows only for float reductions that may run in another order on another CPU; the same code on
the same machine gives bit-identical samples.
"""

from __future__ import annotations

import shutil

import pytest
import torch

from gensuite.runs.checkpoint import load_model
from gensuite.runs.checkpoint_file import read_checkpoint

from .conftest import ROOT

FIXTURES = ROOT / "tests" / "fixtures" / "checkpoints_4b46262"
EXPECTED = torch.load(FIXTURES / "samples.pt", weights_only=True)


def _with_autoencoder(path, tmp_path):
    """The latent diffusion checkpoint names its VAE by the absolute path it was trained with; here the same VAE
    lies beside it, so a copy of the checkpoint names that file instead (the only change)."""
    ckpt = torch.load(path, weights_only=False, map_location="cpu")
    vae = tmp_path / "vae.ckpt"
    shutil.copy(FIXTURES / "vae.ckpt", vae)
    ckpt["gensuite"]["config"]["model"]["autoencoder_ckpt"] = str(vae)
    out = tmp_path / path.name
    torch.save(ckpt, out)
    return out


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_old_checkpoint_loads_and_samples_the_same(name, tmp_path):
    path = FIXTURES / f"{name}.ckpt"
    if name == "latent_diffusion":
        path = _with_autoencoder(path, tmp_path)
    model, cfg = load_model(path)
    stored = read_checkpoint(path)
    assert model.family == stored["gensuite"]["family"]
    model.eval()
    got = model.sample(4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(got, EXPECTED[name], rtol=1e-5, atol=1e-5)


def test_every_renamed_target_is_one_the_suite_still_builds():
    """A module that moved keeps its old checkpoints: the old ``_target_`` maps to a name on today's allowlist."""
    from gensuite.runs.checkpoint import RENAMED_TARGETS
    from gensuite.runs.trust import allowlist

    assert RENAMED_TARGETS, "no renames recorded"
    missing = {old: new for old, new in RENAMED_TARGETS.items() if new not in allowlist()}
    assert not missing
