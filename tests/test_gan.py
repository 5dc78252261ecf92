"""The GAN family: losses against their formulas, every loss x discriminator training, updates that touch only
the network being stepped, the step rule (global_step = generator updates), EMA of the generator, the
class-conditional GAN honouring its labels, diagnostics, and config errors."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from gensuite.callbacks.ema import EMA
from gensuite.cli.config import instantiate_checked
from gensuite.errors import ConfigError
from gensuite.families.conditioning import check_data_labels
from gensuite.families.gan_losses import Hinge, NonSaturating, WassersteinGP
from gensuite.nets.discriminators import Discriminator
from gensuite.nets.encoders import ConvEncoder

LOSSES = ["ns", "hinge", "wgan_gp"]
DISCRIMINATORS = ["mlp", "conv", "resnet"]
# tiny parts on the 8x8 digits: a training step takes milliseconds
TINY_GAN = [
    "model=gan",
    "data=digits",
    "data.batch_size=32",
    "model.latent_dim=8",
    "model.decoder.width=8",
    "model.discriminator.body.width=8",
    "model.discriminator.body.out_dim=16",
]


def fit(cfg, callbacks=(), **trainer_args):
    """Build data and model from ``cfg`` and fit with a bare CPU trainer (no evaluation, no logger)."""
    dm, model = instantiate_checked(cfg, "data"), instantiate_checked(cfg, "model")
    args = dict(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=3,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    args.update(trainer_args)
    trainer = L.Trainer(callbacks=list(callbacks), **args)
    trainer.fit(model, datamodule=dm)
    return model, trainer


def params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


# -- losses on hand-made logits -------------------------------------------------------------------------------
REAL = torch.tensor([2.0, -1.0, 0.5])
FAKE = torch.tensor([-3.0, 0.0, 1.5])


def test_non_saturating_loss_matches_its_formula():
    sig = torch.sigmoid
    expected_d = -(torch.log(sig(REAL)).mean() + torch.log(1 - sig(FAKE)).mean())
    expected_g = -torch.log(sig(FAKE)).mean()
    loss = NonSaturating()
    assert loss.discriminator_loss(REAL, FAKE).item() == pytest.approx(expected_d.item(), rel=1e-6)
    assert loss.generator_loss(FAKE).item() == pytest.approx(expected_g.item(), rel=1e-6)


def test_hinge_loss_matches_its_formula():
    # D: mean(max(0, 1 - r)) + mean(max(0, 1 + f)); G: -mean(f)
    expected_d = (0 + 2 + 0.5) / 3 + (0 + 1 + 2.5) / 3
    loss = Hinge()
    assert loss.discriminator_loss(REAL, FAKE).item() == pytest.approx(expected_d)
    assert loss.generator_loss(FAKE).item() == pytest.approx(-(-3 + 0 + 1.5) / 3)


def test_wasserstein_loss_and_gradient_penalty_match_their_formulas():
    loss = WassersteinGP(gp_weight=10.0)
    assert loss.discriminator_loss(REAL, FAKE).item() == pytest.approx(FAKE.mean() - REAL.mean())
    assert loss.generator_loss(FAKE).item() == pytest.approx(-FAKE.mean().item())
    # a linear critic D(x) = <w, x> has input gradient w everywhere: gp = lambda * (||w|| - 1)^2
    w = torch.full((1, 2, 2), 1.0)  # ||w|| = 2
    critic = lambda x: (x * w).flatten(1).sum(1)  # noqa: E731
    real, fake = torch.randn(5, 1, 2, 2), torch.randn(5, 1, 2, 2)
    terms = loss.penalties(critic, real, critic(real), fake)
    assert set(terms) == {"gp"}
    assert terms["gp"].item() == pytest.approx(10.0 * (2.0 - 1.0) ** 2)


def test_r1_penalty_matches_its_formula_and_trains_the_critic():
    w = torch.nn.Parameter(torch.full((1, 2, 2), 3.0))  # ||w||^2 = 36
    critic = lambda x: (x * w).flatten(1).sum(1)  # noqa: E731
    loss = Hinge(r1_weight=2.0)
    assert loss.needs_real_grad and loss.has_gradient_penalty
    real = torch.randn(4, 1, 2, 2, requires_grad=True)
    terms = loss.penalties(critic, real, critic(real), torch.randn(4, 1, 2, 2))
    assert terms["r1"].item() == pytest.approx(0.5 * 2.0 * 36.0)
    terms["r1"].backward()  # d/dw (gamma/2 * ||w||^2) = gamma * w
    assert torch.allclose(w.grad, 2.0 * w.detach())


def test_losses_refuse_negative_weights():
    with pytest.raises(ConfigError, match="r1_weight"):
        NonSaturating(r1_weight=-1)
    with pytest.raises(ConfigError, match="gp_weight"):
        WassersteinGP(gp_weight=-1)


# -- parts -----------------------------------------------------------------------------------------------------
def test_projection_discriminator_reads_labels_and_spectral_norm_bounds_the_weights():
    torch.manual_seed(0)
    d = Discriminator(ConvEncoder(1, 8, out_dim=16, width=8, norm="none"), num_classes=3, spectral_norm=True)
    x = torch.randn(6, 1, 8, 8)
    a, b = d(x, torch.zeros(6, dtype=torch.long)), d(x, torch.full((6,), 2))
    assert a.shape == (6,) and not torch.allclose(a, b)
    with pytest.raises(ValueError, match="needs labels"):
        d(x)
    for _ in range(20):  # power iterations converge in training mode
        d(x, torch.zeros(6, dtype=torch.long))
    d.eval()
    head = d.head.weight  # the parametrised (normalised) weight
    assert torch.linalg.matrix_norm(head, ord=2).item() == pytest.approx(1.0, rel=0.05)


# -- training --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("discriminator", DISCRIMINATORS)
def test_every_loss_and_discriminator_trains(make_cfg, loss, discriminator):
    overrides = TINY_GAN + [f"model/loss={loss}", f"model/discriminator={discriminator}"]
    if discriminator == "resnet":
        overrides.append("model.discriminator.spectral_norm=true")
    torch.manual_seed(0)
    model, trainer = fit(make_cfg(overrides))
    assert trainer.global_step == 3
    logged = trainer.callback_metrics
    for key in ("train/loss_d", "train/loss_g", "train/d_real", "train/d_fake", "train/grad_norm_d"):
        assert math.isfinite(float(logged[key])), key
    if loss == "wgan_gp":
        assert float(logged["train/gp"]) >= 0
    x = model.sample(5, generator=torch.Generator().manual_seed(0))
    assert x.shape == (5, 1, 8, 8) and x.min() >= 0 and x.max() <= 1


def test_each_update_moves_only_its_own_network(make_cfg, monkeypatch):
    """The discriminator step leaves the generator's weights bit-identical and vice versa."""
    cfg = make_cfg(TINY_GAN + ["model/loss=wgan_gp", "model.loss.r1_weight=1.0"])
    dm, model = instantiate_checked(cfg, "data"), instantiate_checked(cfg, "model")
    checked = {"d": 0, "g": 0}

    def spy(step, stepped, frozen, key):
        def wrapped(*args, **kwargs):
            before_s, before_f = params(stepped), params(frozen)
            out = step(*args, **kwargs)
            assert not same(before_s, params(stepped)), f"{key} step did not change its network"
            assert same(before_f, params(frozen)), f"{key} step changed the other network"
            checked[key] += 1
            return out

        return wrapped

    monkeypatch.setattr(
        model, "discriminator_step", spy(model.discriminator_step, model.discriminator, model.decoder, "d")
    )
    monkeypatch.setattr(model, "generator_step", spy(model.generator_step, model.decoder, model.discriminator, "g"))
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=dm)
    assert checked == {"d": 2, "g": 2}


def test_step_rule_global_step_counts_generator_updates(make_cfg, tmp_path):
    """n_critic=2: two discriminator updates per generator update; max_steps, checkpoints and EMA count the
    generator updates."""
    cfg = make_cfg(TINY_GAN + ["model.n_critic=2"])
    counts = {"d": 0, "g": 0}

    class Count(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            counts["d"] += 1
            counts["g"] = trainer.global_step

    ema = EMA(decay=0.9, module="decoder")
    ckpt = ModelCheckpoint(dirpath=tmp_path, filename="{step}", every_n_train_steps=2, save_top_k=-1)
    _, trainer = fit(
        cfg,
        callbacks=[Count(), ema, ckpt],
        max_steps=5,
        max_epochs=-1,
        limit_train_batches=None,
        enable_checkpointing=True,
    )
    assert trainer.global_step == 5
    assert counts == {"d": 10, "g": 5}  # 10 batches: each a D update, every second one also a G update
    assert int(ema._average_model.n_averaged) == 5  # one EMA update per generator update
    assert sorted(p.stem for p in tmp_path.glob("*.ckpt")) == ["step=2", "step=4"]


def test_step_rule_without_n_critic_is_one_step_per_batch(make_cfg):
    _, trainer = fit(make_cfg(TINY_GAN), max_epochs=2, limit_train_batches=4)
    assert trainer.global_step == 8


def test_gradient_clipping_per_network(make_cfg, monkeypatch):
    cfg = make_cfg(TINY_GAN + ["model.clip_grad_g=0.5", "model.clip_grad_d=0.25"])
    dm, model = instantiate_checked(cfg, "data"), instantiate_checked(cfg, "model")
    seen = []
    original = model.clip_gradients

    def record(opt, gradient_clip_val=None, gradient_clip_algorithm=None):
        seen.append(gradient_clip_val)
        original(opt, gradient_clip_val=gradient_clip_val, gradient_clip_algorithm=gradient_clip_algorithm)
        net = model.decoder if gradient_clip_val == 0.5 else model.discriminator
        grads = [p.grad.norm() for p in net.parameters() if p.grad is not None]
        assert torch.linalg.vector_norm(torch.stack(grads)) <= gradient_clip_val * 1.001

    monkeypatch.setattr(model, "clip_gradients", record)
    L.Trainer(
        accelerator="cpu",
        max_steps=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    ).fit(model, datamodule=dm)
    assert seen == [0.25, 0.5, 0.25, 0.5]


def test_ema_weights_differ_from_raw_and_are_the_ones_sampled(make_cfg, tmp_path):
    from gensuite.runs.checkpoint import load_model
    from gensuite.train import train

    cfg = make_cfg(
        TINY_GAN
        + [
            "callbacks.ema.decay=0.5",
            "callbacks.ema.update_starting_at_step=0",
            "metrics.features=none",
            "callbacks.model_checkpoint.monitor=null",
            "callbacks.evaluation.every_n_epochs=0",
            "callbacks.model_checkpoint.every_n_epochs=1",
        ]
    )
    result = train(cfg)
    model = result["model"]
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    ema_state, raw_state = ckpt["state_dict"], ckpt["current_model_state"]
    gen_keys = [k for k in ema_state if k.startswith("decoder.") and ema_state[k].is_floating_point()]
    assert any(not torch.equal(ema_state[k], raw_state[k]) for k in gen_keys)
    dis_keys = [k for k in ema_state if k.startswith("discriminator.")]
    assert all(torch.equal(ema_state[k], raw_state[k]) for k in dis_keys)  # the discriminator is not averaged

    # the trained model holds the EMA weights, and its samples are those of the EMA generator, not the raw one
    def draw(state):
        model.load_state_dict(state)
        return model.sample(8, generator=torch.Generator().manual_seed(3))

    model.eval()
    current = model.sample(8, generator=torch.Generator().manual_seed(3))
    assert torch.equal(current, draw(ema_state))
    assert not torch.equal(current, draw(raw_state))
    loaded, _ = load_model(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert torch.equal(loaded.sample(8, generator=torch.Generator().manual_seed(3)), current)


def test_training_diagnostics_and_panels(make_cfg):
    cfg = make_cfg(TINY_GAN + ["model.num_classes=10"])
    model, trainer = fit(cfg)
    logged = trainer.callback_metrics
    for key in (
        "train/loss_d",
        "train/loss_g",
        "train/d_real",
        "train/d_fake",
        "train/grad_norm_d",
        "train/grad_norm_g",
    ):
        assert key in logged, key
    model.eval()
    a = model.panels(None, generator=torch.Generator().manual_seed(0), n=16)
    b = model.panels(None, generator=torch.Generator().manual_seed(0), n=16)
    assert torch.equal(a["samples"], b["samples"])  # fixed noise: the grid changes only with the weights
    rows = a["class_grid"]
    assert rows.shape == (10, 8, 1, 8, 8)
    assert not torch.equal(rows[0], rows[1])  # rows are classes, with the same noise in every row


def test_conditional_gan_honours_its_labels(make_cfg, cache_dir):
    """After a short run on mnist5k, the shared feature classifier reads the requested class far above chance."""
    from gensuite.metrics.features import ClassifierFeatures

    cfg = make_cfg(
        [
            "model=gan",
            "model.num_classes=${data.num_classes}",
            # the plain DCGAN recipe learns fastest in a 150-step run (spectral norm slows the first steps)
            "model/loss=ns",
            "model.discriminator.spectral_norm=false",
            "data.batch_size=64",
            "model.decoder.width=16",
            "model.discriminator.body.width=16",
            "model.optimizer.lr=1e-3",
            "model.optimizer_d.lr=1e-3",
        ]
    )
    torch.manual_seed(0)
    model, trainer = fit(cfg, max_steps=150, max_epochs=-1, limit_train_batches=None)
    classifier = ClassifierFeatures.for_data(trainer.datamodule, cache_dir)
    labels = torch.arange(500) % 10
    model.eval()
    images = model.sample(500, generator=torch.Generator().manual_seed(0), labels=labels)
    _, logits = classifier(images)
    agreement = (logits.argmax(1) == labels).float().mean().item()
    assert agreement > 0.5, agreement  # chance: 0.1


# -- configuration ---------------------------------------------------------------------------------------------
def test_documented_part_swaps_compose(make_cfg):
    cfg = make_cfg(["model=gan", "model/decoder=resnet", "model/discriminator=resnet", "model/loss=hinge"])
    model = instantiate_checked(cfg, "model")
    assert type(model.decoder).__name__ == "ResNetDecoder"
    assert type(model.discriminator.body).__name__ == "ResNetEncoder"
    assert type(model.loss).__name__ == "Hinge"
    cfg = make_cfg(["model=gan", "model/decoder=mlp", "model/discriminator=mlp", "model/loss=wgan_gp"])
    model = instantiate_checked(cfg, "model")
    assert type(model.decoder).__name__ == "MLPDecoder" and type(model.discriminator.body).__name__ == "MLPEncoder"
    assert cfg.callbacks.ema.module == "decoder"  # the preset averages the generator only


def test_gradient_penalty_with_batch_norm_fails_at_construction(make_cfg):
    cfg = make_cfg(["model=gan", "model/loss=wgan_gp", "model.discriminator.body.norm=batch"])
    with pytest.raises(ConfigError) as err:
        instantiate_checked(cfg, "model")
    assert "model.discriminator.body.norm" in err.value.render()


def test_conditional_settings_must_agree(make_cfg):
    cfg = make_cfg(["model=gan", "model.discriminator.num_classes=10"])
    with pytest.raises(ConfigError, match="num_classes"):
        instantiate_checked(cfg, "model")
    cfg = make_cfg(TINY_GAN + ["model.num_classes=7"])
    with pytest.raises(ConfigError, match="data.num_classes"):  # the check train.py makes for every family
        check_data_labels(instantiate_checked(cfg, "model"), instantiate_checked(cfg, "data"))


def test_trainer_gradient_clipping_is_refused_with_a_pointer_to_the_gan_settings(make_cfg):
    with pytest.raises(ConfigError, match="clip_grad_g"):
        fit(make_cfg(TINY_GAN), gradient_clip_val=1.0)
