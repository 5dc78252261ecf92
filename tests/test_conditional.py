"""Conditional generation in every image family, switched by one spelling (``model.num_classes=${data.num_classes}``):
the conditional VAE, the class-token transformer (pixels and VQ codes), the shared label rule, the shared class
grid, the labelled-data check in `gensuite.train`, and the intra-class FID of the family-blind evaluation."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gensuite.cli.config import instantiate_checked
from gensuite.errors import ConfigError
from gensuite.eval import evaluate
from gensuite.families import conditioning
from gensuite.families.autoregressive import Autoregressive
from gensuite.families.vae import VAE
from gensuite.metrics.evaluator import Evaluator
from gensuite.sample import sample
from gensuite.train import train

from .test_samples_io import eval_cfg, sample_cfg, untrained_checkpoint

COND = "model.num_classes=${data.num_classes}"  # the one documented spelling
TINY_VAE = ["model=vae", "data=digits", "data.batch_size=32", "model.latent_dim=4", COND]
TINY_PIXELS = [
    "model=transformer",
    "data=digits",
    "data.batch_size=32",
    "model/tokenizer=pixels",
    "model.tokenizer.levels=8",
    "model.net.width=16",
    "model.net.depth=1",
    "model.net.heads=2",
    "trainer.precision=32-true",
    COND,
]
TINY_VQVAE = [
    "model=vqvae",
    "data=digits",
    "model.grid_encoder.width=8",
    "model.grid_decoder.width=8",
    "model.grid_encoder.downsample=1",
    "model.grid_decoder.upsample=1",
    "model.num_codes=16",
    "model.code_dim=4",
]
FAMILIES = {
    "gan": ["model=gan", "model.latent_dim=8", "model.decoder.width=8", "model.discriminator.body.width=8"],
    "diffusion": ["model=diffusion", "model/denoiser=unet_small", "model.denoiser.base_width=8", "sampler.steps=2"],
    "flow_matching": [
        "model=flow_matching",
        "model/denoiser=unet_small",
        "model.denoiser.base_width=8",
        "sampler.steps=2",
    ],
    "vae": TINY_VAE,
    "transformer": TINY_PIXELS,
}


def g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def fit(cfg, steps: int = 3):
    """Data and model from ``cfg``, a few steps of a bare CPU trainer (no evaluation, no logger)."""
    dm, model = instantiate_checked(cfg, "data"), instantiate_checked(cfg, "model")
    conditioning.check_data_labels(model, dm)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=steps, limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(model, datamodule=dm)
    return model.eval(), dm


# -- the conditional VAE ---------------------------------------------------------------------------------------------
def test_conditional_vae_trains_and_samples_the_requested_labels(make_cfg):
    model, dm = fit(make_cfg(TINY_VAE))
    assert isinstance(model, VAE) and model.num_classes == 10
    labels = torch.tensor([3, 3, 7, 0, 9])
    x = model.sample(5, g(), labels=labels)
    assert x.shape == (5, 1, 8, 8) and x.min() >= 0 and x.max() <= 1
    # the label changes the output: same noise, other labels
    a, b = model.sample(4, g(1), labels=torch.full((4,), 2)), model.sample(4, g(1), labels=torch.full((4,), 5))
    assert (a - b).abs().max() > 1e-4
    # and the posterior reads it too
    batch = next(iter(dm.val_dataloader()))
    mu_a = model.encode(batch[0][:4], torch.full((4,), 2))[0]
    mu_b = model.encode(batch[0][:4], torch.full((4,), 5))[0]
    assert (mu_a - mu_b).abs().max() > 1e-4
    # nll, losses and reconstructions take the batch's labels
    assert model.nll(batch).shape == (len(batch[0]),) and torch.isfinite(model.losses(batch)["loss"])
    assert model.reconstruct_batch(batch).shape == batch[0].shape
    with pytest.raises(ValueError, match="needs labels"):
        model.reconstruct(batch[0])
    grid = model.panels(batch, g(), n=4)["class_grid"]
    assert grid.shape == (10, 8, 1, 8, 8)
    assert not torch.equal(grid[0], grid[1])


def test_unconditional_vae_keeps_its_parameters(make_cfg):
    """``model.num_classes=0`` builds exactly the VAE of before (old checkpoints load)."""
    cond = instantiate_checked(make_cfg(TINY_VAE), "model")
    plain = instantiate_checked(make_cfg(TINY_VAE[:-1]), "model")
    extra = set(cond.state_dict()) - set(plain.state_dict())
    assert extra == {"label_embed.weight", "decoder_in.weight", "decoder_in.bias"}
    assert plain.num_classes == 0 and plain.to_stats.in_features == plain.encoder.out_dim
    assert plain.sample(3, g()).shape == (3, 1, 8, 8)


# -- the class-token transformer -------------------------------------------------------------------------------------
def test_conditional_transformer_trains_and_samples_the_requested_labels(make_cfg):
    model, dm = fit(make_cfg(TINY_PIXELS))
    assert isinstance(model, Autoregressive) and model.net.num_classes == 10
    x = model.sample(3, g(), labels=torch.tensor([1, 4, 4]))
    assert x.shape == (3, 1, 8, 8)
    # the label changes the prediction (comparing samples would be chance: a barely trained model's close
    # probabilities can draw the same tokens from the same uniforms)
    with torch.no_grad():
        first = [model.net(model.net.start_tokens(1, torch.tensor([c])))[0, -1] for c in (0, 6)]  # (vocab,) logits
    assert not torch.allclose(first[0], first[1])
    # the key/value cache gives the same samples as recomputing every step
    cached = model.sample(4, g(1), labels=torch.full((4,), 6))
    model.use_cache = False
    torch.testing.assert_close(model.sample(4, g(1), labels=torch.full((4,), 6)), cached)
    batch = next(iter(dm.val_dataloader()))
    panels = model.panels(batch, g(), n=4)
    assert panels["class_grid"].shape == (10, 8, 1, 8, 8) and panels["completions"].shape[:2] == (8, 4)


def test_class_token_is_read_but_never_a_target(make_cfg):
    model = instantiate_checked(make_cfg(TINY_PIXELS), "model").eval()
    net = model.net
    tokens = torch.randint(0, net.vocab_size, (2, model.tokenizer.seq_len))
    labels = torch.tensor([3, 8])
    nats, logits = model.token_nats(tokens, labels)
    # T targets for T tokens: the class token is the first input, not a predicted position
    assert nats.shape == tokens.shape and logits.shape[-1] == net.vocab_size  # class tokens cannot be predicted
    inputs = torch.cat([net.vocab_size + 1 + labels[:, None], tokens[:, :-1]], 1)
    want = F.cross_entropy(net(inputs).flatten(0, 1), tokens.flatten(), reduction="none").view_as(tokens)
    torch.testing.assert_close(nats, want)
    assert not torch.allclose(model.token_nats(tokens, torch.tensor([0, 0]))[0], nats)  # the label is read


def test_transformer_over_vq_codes_takes_the_class_token(make_cfg, tmp_path):
    vq = untrained_checkpoint(tmp_path / "vq.ckpt", TINY_VQVAE)
    cfg = make_cfg(
        [
            "experiment=transformer_vq",
            "data=digits",
            f"model.tokenizer.path={vq}",
            "model.net.width=16",
            "model.net.depth=1",
            "model.net.heads=2",
            "trainer.precision=32-true",
            COND,
        ]
    )
    model, _ = fit(cfg, steps=2)
    assert model.net.num_classes == 10 and model.tokenizer.modality == "image"
    a = model.sample(4, g(2), labels=torch.full((4,), 1))
    assert a.shape == (4, 1, 8, 8)
    model.use_cache = False
    torch.testing.assert_close(model.sample(4, g(2), labels=torch.full((4,), 1)), a)


def test_text_with_classes_is_refused_naming_the_setting(make_cfg):
    with pytest.raises(ConfigError) as err:
        instantiate_checked(make_cfg(["model=transformer", "data=pydoc", "model.num_classes=3"]), "model")
    text = err.value.render()
    assert "model.num_classes" in text and "fix: model.num_classes=0" in text


# -- one check, one rule, one grid for every family ------------------------------------------------------------------
def test_unlabelled_data_with_classes_is_refused_before_training(make_cfg, tmp_path):
    from PIL import Image

    folder = tmp_path / "flat"
    folder.mkdir()
    for i in range(12):
        Image.fromarray((torch.rand(8, 8) * 255).byte().numpy()).save(folder / f"{i}.png")
    for family in ("vae", "gan"):
        cfg = make_cfg(
            [
                *FAMILIES[family][:1],
                "data=image_folder",
                f"data.path={folder}",
                "data.channels=1",
                "data.image_size=8",
                "model.num_classes=3",
            ],
            output_dir=tmp_path / family,
        )
        with pytest.raises(ConfigError) as err:
            train(cfg)
        text = err.value.render()
        assert "model.num_classes=3" in text and "has no labels" in text and "fix: model.num_classes=0" in text
        assert not (tmp_path / family / "checkpoints").exists()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_conditional_family_draws_balanced_labels_and_a_class_grid(family, make_cfg):
    cfg = make_cfg([*FAMILIES[family], "data=digits", COND])
    model = instantiate_checked(cfg, "model").eval()
    assert model.num_classes == 10
    for n in (1, 7, 23):
        assert torch.equal(model.sample_labels(n), torch.arange(n) % 10), family
    assert torch.equal(model.sample_labels(4, start=8), torch.tensor([8, 9, 0, 1]))  # sample 8.. of a larger set
    # sample() without labels is sample() with the balanced rule's labels
    balanced = torch.arange(12) % 10
    with torch.no_grad():
        torch.testing.assert_close(model.sample(12, g(3)), model.sample(12, g(3), labels=balanced))
    grid = model.class_grid(g(4), per_class=2)
    assert grid.shape == (10, 2, 1, 8, 8)


# -- intra-class FID -------------------------------------------------------------------------------------------------
def _evaluator_with_reference(k: int = 3, per_class: int = 300, dim: int = 4) -> tuple[Evaluator, torch.Tensor]:
    """An evaluator whose 'x' space holds Gaussian class clusters as train and held-out features."""
    gen = g(0)
    means = torch.randn(k, dim, generator=gen, dtype=torch.float64) * 4

    def cloud(n):
        y = torch.arange(k).repeat_interleave(n)
        return means[y] + torch.randn(len(y), dim, generator=gen, dtype=torch.float64), y

    ev = Evaluator(features="none", bootstrap=0)
    (train_f, train_y), (test_f, test_y) = cloud(per_class), cloud(per_class)
    ev.references["x"] = {
        "train": {"features": train_f, "labels": train_y},
        "test": {"features": test_f, "labels": test_y},
    }
    return ev, means


def test_intra_class_fid_sees_wrong_labels_that_the_overall_fid_misses():
    ev, means = _evaluator_with_reference()
    labels = torch.arange(600) % 3  # balanced, as a conditional model draws them
    right = means[labels] + torch.randn(600, 4, generator=g(1), dtype=torch.float64)
    good, n_c = ev._score_intra("x", right, labels)
    bad, _ = ev._score_intra("x", right, (labels + 1) % 3)  # the same samples, drawn for the wrong classes
    assert n_c == 200 and set(good) == {"val/fid_x_intra", "val/fid_x_intra_floor"}
    assert good["val/fid_x_intra"] < 3 * good["val/fid_x_intra_floor"] + 0.5
    assert bad["val/fid_x_intra"] > 10 * good["val/fid_x_intra"]


def test_conditional_vae_run_reports_intra_class_fid(make_cfg):
    result = train(make_cfg([*TINY_VAE, "metrics.features=classifier", "metrics.bootstrap=0"]))
    m = result["metrics"]
    for key in ("val/fid_classifier_intra", "val/fid_classifier_intra_floor"):
        assert key in m and math.isfinite(m[key]) and m[key] >= 0, key
    assert m["eval/n_per_class_intra"] == 20  # 200 samples, 10 classes
    assert m["val/fid_classifier_intra"] > m["val/fid_classifier_intra_floor"]


def test_eval_of_a_checkpoint_and_of_its_labelled_samples_give_the_same_intra_fid(make_cfg, tmp_path, cache_dir):
    """eval.py of a conditional checkpoint draws balanced labels; sample.py stores the labels it drew in the .npz,
    and eval.py samples= reads them: the same draw gives the same intra-class FID."""
    ckpt = untrained_checkpoint(tmp_path / "cvae.ckpt", [*TINY_VAE, f"paths.cache_dir={cache_dir}"])
    space = ["metrics.features=classifier"]
    m = evaluate(
        eval_cfg(cache_dir, f"ckpt_path={ckpt}", "use_run_metrics=false", f"out={tmp_path / 'c.json'}", *space)
    )
    assert math.isfinite(m["val/fid_classifier_intra"]) and m["eval/n_per_class_intra"] == 20
    npz = sample(sample_cfg(ckpt, "n=200", "seed=1234", "batch_size=100", "format=npz", f"out={tmp_path / 's.npz'}"))
    from_file = evaluate(eval_cfg(cache_dir, f"samples={npz}", "data=digits", *space))
    # the same samples (up to 8-bit rounding) for the same classes: the same score
    assert from_file["val/fid_classifier_intra"] == pytest.approx(m["val/fid_classifier_intra"], rel=0.02)
    unlabelled = tmp_path / "u.npz"
    np.savez(unlabelled, samples=np.load(npz)["samples"])
    assert "val/fid_classifier_intra" not in evaluate(
        eval_cfg(cache_dir, f"samples={unlabelled}", "data=digits", *space)
    )
