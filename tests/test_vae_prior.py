"""The VAE's ex-post mixture prior (``model.prior=gmm``): fitted to the training posterior means at every validation,
sampled by `sample`, carried by the checkpoint, refused where it has no meaning."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from gensuite.cli.config import instantiate_checked
from gensuite.errors import ConfigError
from gensuite.families.vae import VAE

TINY = ["model=vae", "data=digits", "model.encoder.width=8", "model.decoder.width=8", "model.latent_dim=2"]


def g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_mixture_prior_samples_where_the_posterior_means_lie(make_cfg):
    model = instantiate_checked(make_cfg([*TINY, "model.prior=gmm", "model.prior_components=2"]), "model").eval()
    # before any fit it is N(0, I), like the normal prior
    z0 = model.prior_sample(4000, g())
    assert abs(z0.mean().item()) < 0.1 and abs(z0.std().item() - 1) < 0.1
    # two tight clusters of posterior means at (-5, 0) and (+5, 0), three times as many on the right
    means = torch.cat([torch.randn(500, 2) * 0.1 + torch.tensor([-5.0, 0.0]),
                       torch.randn(1500, 2) * 0.1 + torch.tensor([5.0, 0.0])])  # fmt: skip
    model.fit_prior(means)
    z = model.prior_sample(4000, g())
    right = z[:, 0] > 0
    assert abs(right.float().mean().item() - 0.75) < 0.04
    assert (z[right] - torch.tensor([5.0, 0.0])).norm(dim=1).max() < 1.0
    assert (z[~right] - torch.tensor([-5.0, 0.0])).norm(dim=1).max() < 1.0
    # the temperature scales each component's spread, not the distance between them
    zt = model.prior_sample(4000, g(), options=model.sampling_options({"temperature": 0.5}))
    assert zt[zt[:, 0] > 0, 1].std() == pytest.approx(z[right, 1].std().item() * 0.5, rel=0.15)
    torch.testing.assert_close(model.prior_sample(8, g(3)), model.prior_sample(8, g(3)))
    assert model.sample(3, g()).shape == (3, 1, 8, 8)


def test_mixture_prior_is_fitted_in_training_and_saved(make_cfg, tmp_path):
    cfg = make_cfg([*TINY, "model.prior=gmm", "model.prior_components=3"])
    dm, model = instantiate_checked(cfg, "data"), instantiate_checked(cfg, "model")
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=1, limit_train_batches=4, limit_val_batches=1, num_sanity_val_steps=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(model, datamodule=dm)
    # fitted at the validation to the epoch's means: no longer the identity start
    assert not torch.equal(model.gmm_tril, torch.eye(2).repeat(1, 3, 1, 1))
    assert sum(len(m) for _, m, _ in model._pool) == 4 * dm.batch_size
    assert torch.allclose(model.gmm_logits.exp().sum(1), torch.tensor([1.0]), atol=1e-5)
    path = tmp_path / "vae.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, weights_only=True)["state_dict"]
    fresh = instantiate_checked(cfg, "model")
    fresh.load_state_dict(state)
    for name in ("gmm_logits", "gmm_means", "gmm_tril"):
        torch.testing.assert_close(getattr(fresh, name), getattr(model, name))
    torch.testing.assert_close(fresh.eval().sample(4, g()), model.eval().sample(4, g()))


def test_conditional_vae_fits_one_mixture_per_class(make_cfg):
    model = instantiate_checked(
        make_cfg([*TINY, "model.prior=gmm", "model.prior_components=1", "model.num_classes=3"]), "model"
    ).eval()
    assert model.gmm_means.shape == (3, 1, 2)
    centres = torch.tensor([[-4.0, 0.0], [0.0, 4.0], [4.0, 0.0]])
    labels = torch.arange(3).repeat_interleave(50)
    model.fit_prior(centres[labels] + 0.1 * torch.randn(150, 2), labels)
    want = torch.tensor([2, 0, 1, 1, 2, 0])
    z = model.prior_sample(6, g(), want)
    assert (z - centres[want]).norm(dim=1).max() < 1.0
    # a class with too few means (fewer than 2K) keeps its last fit
    model.fit_prior(torch.randn(1, 2) + 9, torch.tensor([0]))
    assert (model.prior_sample(1, g(), torch.tensor([0])) - centres[0]).norm() < 1.0
    assert model.sample(6, g(), labels=want).shape == (6, 1, 8, 8)


def test_normal_prior_has_no_mixture_and_draws_the_same_as_before(make_cfg):
    model = instantiate_checked(make_cfg([*TINY, "model.prior=normal"]), "model").eval()
    assert not any(k.startswith("gmm_") for k in model.state_dict())
    torch.testing.assert_close(model.prior_sample(5, g()), torch.randn(5, 2, generator=g()))


@pytest.mark.parametrize(
    "overrides, setting",
    [
        (["model.prior=flow"], "prior"),
        (["model.prior=gmm", "model.prior_components=0"], "prior_components"),
    ],
)
def test_bad_prior_settings_are_named(make_cfg, overrides, setting):
    with pytest.raises(ConfigError, match=setting):
        instantiate_checked(make_cfg([*TINY, *overrides]), "model")
    assert issubclass(VAE, L.LightningModule)


def test_prior_is_a_sampling_knob(make_cfg):
    mixed = instantiate_checked(make_cfg([*TINY, "model.prior=gmm", "model.prior_components=2"]), "model").eval()
    mixed.fit_prior(torch.randn(100, 2) * 0.1 + 3)
    assert mixed.prior_sample(50, g()).mean() > 2
    normal = mixed.sampling_options({"prior": "normal"})  # the ablation: the same checkpoint through N(0, I)
    torch.testing.assert_close(mixed.prior_sample(5, g(), options=normal), torch.randn(5, 2, generator=g()))
    assert mixed.default_options.prior == "gmm" and mixed.prior == "gmm"  # the model itself is unchanged
    plain = instantiate_checked(make_cfg([*TINY, "model.prior=normal"]), "model")
    with pytest.raises(ConfigError, match="sampling.prior='gmm': this VAE samples from normal"):
        plain.sampling_options({"prior": "gmm"})
