"""The diffusion family: schedules, samplers, likelihood bound, guidance, EMA in the evaluation, latent diffusion.

Sampler correctness is checked against data whose exact denoiser is known in closed form (Gaussian data), so
no trained network is needed; the end-to-end tests use tiny UNets and a few optimisation steps.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image

from gensuite.cli.config import instantiate_checked
from gensuite.cli.sampling import apply_sampler
from gensuite.diffusion.likelihood import discretized_gaussian_log_likelihood, normal_kl, variational_bound
from gensuite.diffusion.samplers import DDIM, DDPM, DPMSolver, DPMSolverSDE
from gensuite.diffusion.schedules import CosineSchedule, LinearSchedule, NoiseSchedule
from gensuite.errors import CheckpointError, ConfigError
from gensuite.families.diffusion import Diffusion
from gensuite.families.options import Guidance
from gensuite.nets.mlp_denoiser import MLPDenoiser
from gensuite.nets.unet import UNet
from gensuite.runs.checkpoint import load_model
from gensuite.train import train

from .conftest import TINY, compose_cfg, run_entry

SCHEDULES = [LinearSchedule(), CosineSchedule()]
SMALL_UNET = {"base_width": 8, "channel_mults": [1, 2], "num_res_blocks": 1, "attention_levels": [-1]}
# a tiny diffusion run: small UNet, cheap validation (2-call bound estimate, 100 images), 4-step sampler
TINY_DIFFUSION = [
    "model=diffusion",
    "model/denoiser=unet_small",
    "model.denoiser.base_width=8",
    "model.nll_timesteps=2",
    "data.batch_size=32",
    "data.eval_batch_size=100",
    "sampler.steps=4",
]


# -- schedules -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: s.name)
def test_schedule_alpha_bar_is_monotone_and_spans_data_to_noise(schedule):
    ab = schedule.alpha_bar
    assert ab.shape == (1000,) and ab.dtype == torch.float64
    assert (ab[1:] < ab[:-1]).all() and (ab > 0).all() and (ab < 1).all()
    assert ab[0] > 0.999  # step 0: almost clean
    assert ab[-1] < 1e-3  # step T-1: almost pure noise
    assert torch.allclose(ab, torch.cumprod(1 - schedule.betas, 0))


def test_linear_and_cosine_schedules_match_their_closed_forms():
    lin = LinearSchedule(1000, 1e-4, 0.02)
    assert lin.betas[0].item() == pytest.approx(1e-4) and lin.betas[-1].item() == pytest.approx(0.02)
    assert torch.allclose(lin.betas[1:] - lin.betas[:-1], torch.full((999,), (0.02 - 1e-4) / 999, dtype=torch.float64))
    cos = CosineSchedule(1000, s=0.008)
    t = torch.arange(1, 1001, dtype=torch.float64) / 1000
    f = torch.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2 / math.cos(0.008 / 1.008 * math.pi / 2) ** 2
    unclipped = cos.betas < 0.999
    assert torch.allclose(cos.alpha_bar[:900], f[:900], rtol=1e-9)  # eq. 17 until β reaches its clip
    assert unclipped[:900].all() and cos.betas.max().item() == pytest.approx(0.999)


@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: s.name)
def test_q_sample_then_a_perfect_predictor_recovers_x0(schedule, prediction):
    torch.manual_seed(0)
    x0 = torch.rand(16, 1, 8, 8) * 2 - 1
    noise = torch.randn_like(x0)
    # up to step 980: at the very last steps of the cosine schedule sqrt(ᾱ) ~ 1e-4, and recovering x_0 from ε
    # divides float32 rounding by it (the ill-conditioning that v-prediction avoids)
    t = torch.linspace(0, 980, 16).long()
    x_t = schedule.q_sample(x0, t, noise)
    ab = schedule.alpha_bar[t].float().view(-1, 1, 1, 1)
    assert torch.allclose(x_t, ab.sqrt() * x0 + (1 - ab).sqrt() * noise)  # eq. 4
    perfect = schedule.target(x0, noise, t, prediction)
    assert torch.allclose(schedule.predict_x0(perfect, x_t, t, prediction), x0, atol=2e-3)
    assert torch.allclose(schedule.eps_from_x0(x0, x_t, t), noise, atol=1e-3)


# -- samplers --------------------------------------------------------------------------------------------------
def gaussian_denoiser(schedule: NoiseSchedule, mu: float, s: float):
    """The exact E[x_0 | x_t] for data x_0 ~ N(mu, s²) per dimension: what a perfectly trained model predicts."""

    def denoise(x, t):
        ab = schedule.alpha_bar_at(t, x.dim())
        return mu + ab.sqrt() * s**2 / (ab * s**2 + 1 - ab) * (x - ab.sqrt() * mu)

    return denoise


@pytest.mark.parametrize(
    "sampler,tol",
    [
        (DDPM(1000), 0.04),
        (DDPM(100), 0.1),
        (DDIM(50), 0.08),
        (DDIM(50, eta=1.0), 0.15),
        (DPMSolver(20), 0.05),
        (DPMSolverSDE(20), 0.08),
    ],
    ids=lambda v: getattr(v, "describe", lambda: None)() or str(v),
)
@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: s.name)
def test_samplers_with_the_exact_denoiser_reproduce_the_data_distribution(schedule, sampler, tol):
    mu, s = 0.3, 0.5
    g = torch.Generator().manual_seed(0)
    out = sampler(gaussian_denoiser(schedule, mu, s), schedule, torch.randn(4000, 2, generator=g), g)
    assert out.shape == (4000, 2)
    assert out.mean().item() == pytest.approx(mu, abs=0.03)
    assert out.std().item() == pytest.approx(s, rel=tol)


def test_dpm_solver_converges_with_more_steps_and_beats_ddim_at_equal_cost():
    schedule, mu, s = LinearSchedule(), 0.0, 0.5
    denoise = gaussian_denoiser(schedule, mu, s)
    x = torch.randn(4000, 2, generator=torch.Generator().manual_seed(1))

    def err(sampler):
        return abs(sampler(denoise, schedule, x.clone()).std().item() - s)

    assert err(DPMSolver(100)) < err(DPMSolver(20)) < err(DDIM(20))
    assert err(DPMSolver(100)) < 0.005


@pytest.mark.parametrize("sampler", [DDPM(7), DDIM(7), DPMSolver(7), DPMSolverSDE(7)], ids=lambda s: s.name)
def test_sampler_visits_distinct_descending_steps_from_the_noisiest(sampler):
    for schedule in SCHEDULES:
        ts = sampler.timesteps(schedule)
        assert len(ts) == 7 and ts[0] == 999 and ts[-1] == 0 and all(a > b for a, b in zip(ts, ts[1:], strict=False))
    assert DPMSolver(1000).timesteps(SCHEDULES[0]) == list(range(999, -1, -1))


def test_ddim_eta0_is_deterministic_and_ddpm_is_not():
    schedule = LinearSchedule()
    denoise = gaussian_denoiser(schedule, 0.0, 0.5)
    x_T = torch.randn(64, 3)

    def run(sampler, seed):
        return sampler(denoise, schedule, x_T.clone(), torch.Generator().manual_seed(seed))

    assert torch.equal(run(DDIM(20, eta=0.0), 0), run(DDIM(20, eta=0.0), 1))  # same x_T -> same sample
    assert not torch.allclose(run(DDPM(20), 0), run(DDPM(20), 1))  # fresh noise at every step
    assert torch.equal(run(DDPM(20), 3), run(DDPM(20), 3))  # but reproducible for a fixed seed
    assert not torch.allclose(run(DDIM(20, eta=1.0), 0), run(DDIM(20, eta=1.0), 1))
    assert torch.equal(run(DPMSolver(20), 0), run(DPMSolver(20), 1))  # the ODE solver is deterministic
    assert not torch.allclose(run(DPMSolverSDE(20), 0), run(DPMSolverSDE(20), 1))  # its SDE twin is not
    assert torch.equal(run(DPMSolverSDE(20), 3), run(DPMSolverSDE(20), 3))


def test_sampler_settings_fail_early_naming_the_key():
    with pytest.raises(ConfigError) as info:
        DDIM(steps=0)
    assert info.value.keys == ("steps",)
    with pytest.raises(ConfigError) as info:
        DDPM(2000).timesteps(LinearSchedule(1000))
    assert info.value.keys == ("steps",) and "<= 1000" in info.value.fix
    with pytest.raises(ConfigError):
        DDIM(10, eta=-1)
    with pytest.raises(ConfigError):
        DPMSolver(10, spacing="karras")


# -- denoisers -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "channels,size,scale_shift",
    [(1, 8, True), (3, 8, True), (1, 28, True), (3, 28, True), (1, 32, True), (3, 32, False), (1, 64, True),
     (3, 64, False)],
)  # fmt: skip
def test_unet_maps_noisy_images_to_their_shape(channels, size, scale_shift):
    net = UNet(channels, size, base_width=8, channel_mults=[1, 2, 4], attention_levels=[-1], dropout=0.1,
               scale_shift=scale_shift)  # fmt: skip
    x, t = torch.randn(2, channels, size, size), torch.tensor([0, 999])
    out = net(x, t)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert torch.count_nonzero(out) == 0  # zero-initialised output: training starts from the trivial predictor
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_class_conditional_denoisers_use_labels_and_a_no_label_class():
    torch.manual_seed(0)
    for net, x in [
        (UNet(1, 8, num_classes=3, **SMALL_UNET), torch.randn(2, 1, 8, 8)),
        (UNet(1, 8, num_classes=3, scale_shift=False, **SMALL_UNET), torch.randn(2, 1, 8, 8)),  # DDPM's block
        (MLPDenoiser(dim=6, width=16, depth=2, num_classes=3), torch.randn(2, 6)),
    ]:
        for p in net.parameters():  # leave the zero initialisation, so outputs depend on the inputs
            torch.nn.init.normal_(p, std=0.2)
        t = torch.tensor([5, 5])
        a, b = net(x, t, torch.tensor([0, 0])), net(x, t, torch.tensor([1, 2]))
        assert not torch.allclose(a, b)
        assert torch.equal(net(x, t), net(x, t, torch.tensor([-1, -1])))  # None == "no label" (-1)


def test_unet_shape_errors_name_the_keys():
    with pytest.raises(ConfigError) as info:
        UNet(1, 28, channel_mults=[1, 2, 2, 2])  # 28 -> 14 -> 7 -> 3.5
    assert set(info.value.keys) == {"channel_mults", "image_size"} and "at most 3" in info.value.fix
    with pytest.raises(ConfigError) as info:
        UNet(1, 28, channel_mults=[1, 2], attention_levels=[2])
    assert "attention_levels" in info.value.keys
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\)"):
        UNet(1, 28, **SMALL_UNET)(torch.zeros(1, 1, 32, 32), torch.zeros(1))


# -- the family ------------------------------------------------------------------------------------------------
def tiny_family(num_classes: int = 0, **kwargs) -> Diffusion:
    torch.manual_seed(0)
    return Diffusion(
        UNet(1, 8, num_classes=num_classes, **SMALL_UNET), LinearSchedule(), num_classes=num_classes, **kwargs
    )


@pytest.mark.parametrize(
    "sampler", [DDPM(5), DDIM(5), DDIM(5, eta=0.5), DPMSolver(5), DPMSolverSDE(5)], ids=lambda s: s.describe()
)
def test_every_sampler_gives_images_of_the_right_shape_and_range(sampler):
    model = tiny_family().eval()
    for p in model.parameters():  # an untrained but non-trivial network: predictions leave the data range
        torch.nn.init.normal_(p, std=0.3)
    model.set_sampler(sampler)
    images = model.sample(3, generator=torch.Generator().manual_seed(0))
    assert images.shape == (3, 1, 8, 8) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
    assert model.eval_info()["eval/sampler"] == sampler.describe()


def test_guidance_scale_0_is_unconditional_and_1_is_conditional():
    model = tiny_family(num_classes=3).eval()
    for p in model.denoiser.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x, t, y = torch.randn(4, 1, 8, 8), torch.tensor([10, 200, 500, 900]), torch.tensor([0, 1, 2, 1])
    cond, uncond = model.denoiser(x, t, y), model.denoiser(x, t, None)
    assert not torch.allclose(cond, uncond)
    assert torch.allclose(model.model_output(x, t, y, guidance_scale=0.0), uncond, atol=1e-6)
    assert torch.allclose(model.model_output(x, t, y, guidance_scale=1.0), cond, atol=1e-6)
    # the batched guided path (s not in {0, 1}) is the same linear mix
    mixed = model.model_output(x, t, y, guidance_scale=2.5)
    assert torch.allclose(mixed, uncond + 2.5 * (cond - uncond), atol=1e-5)
    # sampling: s = 1 with labels y is the conditional sampler, s = 0 the unconditional one
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    model.set_sampler(DDIM(4))
    s0, s1 = (
        model.sample(4, g(), labels=y, options=Guidance(0.0)),
        model.sample(4, g(), labels=y, options=Guidance(1.0)),
    )
    assert torch.allclose(s0, model.sample(4, g(), labels=torch.full_like(y, -1)), atol=1e-6)
    assert not torch.allclose(s0, s1)
    grid = model.class_grid(g(), per_class=2)
    assert grid.shape == (3, 2, 1, 8, 8)


def test_label_dropout_replaces_labels_with_no_label():
    model = tiny_family(num_classes=3, label_dropout=0.5).train()
    torch.manual_seed(0)
    y = model.training_labels((None, torch.zeros(2000, dtype=torch.long)))
    assert set(y.unique().tolist()) == {-1, 0}
    assert (y == -1).float().mean().item() == pytest.approx(0.5, abs=0.05)
    assert tiny_family().training_labels((None, torch.zeros(4, dtype=torch.long))) is None  # unconditional


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_min_snr_weights_follow_hang_et_al(prediction):
    model = tiny_family(prediction=prediction, min_snr_gamma=5.0)
    t = torch.tensor([0, 100, 500, 999])
    snr = model.schedule.snr(t)
    expected = snr.clamp(max=5) / (snr if prediction == "eps" else snr + 1)
    assert torch.allclose(model.loss_weight(t), expected)
    assert tiny_family().loss_weight(t) is None
    loss = model.losses((torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)))
    assert set(loss) == {"loss", "mse"} and torch.isfinite(loss["loss"])


def test_family_config_errors_name_the_keys():
    with pytest.raises(ConfigError) as info:
        tiny_family(prediction="x0")
    assert info.value.keys == ("prediction",)
    with pytest.raises(ConfigError) as info:
        Diffusion(UNet(1, 8, **SMALL_UNET), LinearSchedule(), num_classes=10)
    assert set(info.value.keys) == {"num_classes", "denoiser.num_classes"}
    with pytest.raises(ConfigError):
        Diffusion(UNet(1, 8, **SMALL_UNET), LinearSchedule(100), sampler=DDPM(1000))


# -- likelihood ------------------------------------------------------------------------------------------------
def test_discretized_gaussian_is_a_distribution_over_256_levels():
    levels = torch.arange(256, dtype=torch.float64) / 255 * 2 - 1
    for mean, std in [(0.0, 0.01), (0.37, 0.2), (-1.0, 0.003), (0.99, 1.0)]:
        logp = discretized_gaussian_log_likelihood(levels, torch.full_like(levels, mean), std)
        assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-6)


def test_bound_of_a_perfect_denoiser_is_prior_plus_decoder_terms():
    """Data = one image: the perfect denoiser predicts it from any x_t, so every KL term is 0 (exact bound)."""
    schedule = LinearSchedule()
    x0 = (torch.randint(0, 256, (2, 1, 4, 4)).double() / 255 * 2 - 1).float()
    nats = variational_bound(lambda x, t: x0, schedule, x0, k=999, generator=torch.Generator().manual_seed(0))
    ab_T = schedule.alpha_bar[-1].item()
    prior = normal_kl(math.sqrt(ab_T) * x0.double(), torch.tensor(1 - ab_T), torch.zeros(1), torch.ones(1))
    decoder = -discretized_gaussian_log_likelihood(x0.double(), x0.double(), math.sqrt(schedule.betas[0].item()))
    assert torch.allclose(nats.double(), (prior + decoder).flatten(1).sum(1), rtol=1e-4)


def test_stratified_bound_estimate_is_unbiased_and_tight():
    """A predictor off by a constant makes every term a fixed function of t (no noise dependence): the exact bound
    is deterministic, and the 10-call estimates scatter closely around it."""
    schedule = LinearSchedule()
    x0 = torch.randint(0, 256, (4, 16)).float() / 255 * 2 - 1

    def bound(k, seed):
        return variational_bound(
            lambda x, t: x0 + 0.05, schedule, x0, k=k, generator=torch.Generator().manual_seed(seed)
        )

    exact = bound(999, 0)
    assert torch.allclose(exact, bound(999, 1))
    estimates = torch.stack([bound(10, seed) for seed in range(40)])
    assert torch.allclose(estimates.mean(0), exact, rtol=0.03)
    assert (estimates.std(0) / exact).max() < 0.15


def test_model_nll_is_a_fixed_seed_estimate_in_nats_per_image():
    model = tiny_family().eval()
    batch = (torch.randint(0, 256, (4, 1, 8, 8)).float() / 255, torch.zeros(4, dtype=torch.long))
    a, b = model.nll(batch), model.nll(batch)
    assert a.shape == (4,) and torch.equal(a, b) and (a > 0).all()
    assert model.has_likelihood()


# -- training ----------------------------------------------------------------------------------------------------
def test_tiny_model_loss_falls_on_mnist5k(make_cfg):
    cfg = make_cfg(TINY_DIFFUSION + ["model.optimizer.lr=2e-3"])
    torch.manual_seed(0)
    dm, model = instantiate_checked(cfg, "data"), instantiate_checked(cfg, "model")
    opt = model.configure_optimizers()
    loader, losses = iter(dm.train_dataloader()), []
    for _ in range(40):
        loss = model.losses(next(loader))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-10:]) / 10
    assert first > 0.8  # zero-initialised output: the loss of predicting ε = 0 is E[ε²] = 1
    assert last < 0.5 * first, (first, last)


def test_sampler_override_reaches_the_model_of_a_training_run(make_cfg):
    cfg = make_cfg(["model=diffusion", "model/denoiser=unet_small", "sampler=ddim", "sampler.steps=7"])
    model = instantiate_checked(cfg, "model")
    assert isinstance(model.sampler, DDIM) and model.sampler.steps == 7
    default = instantiate_checked(make_cfg(["model=diffusion", "model/denoiser=unet_small"]), "model")
    assert isinstance(default.sampler, DPMSolverSDE) and default.sampler.steps == 20
    assert make_cfg(["model=diffusion"]).callbacks.ema.module == "denoiser"


@pytest.fixture(scope="module")
def diffusion_run(tmp_path_factory, cache_dir):
    """A tiny training run (bf16 autocast) with a strong EMA (decay 0.5), panels every validation, and a record of
    the weights that every `sample` call saw."""
    out = tmp_path_factory.mktemp("diffusion_run") / "run"
    cfg = compose_cfg(
        TINY
        + TINY_DIFFUSION
        + [
            f"paths.cache_dir={cache_dir}",
            "metrics.features=none",  # no FID here (test_train covers the evaluator): keeps this file fast
            "callbacks.ema.decay=0.5",
            "callbacks.ema.update_starting_at_step=null",
            "trainer.check_val_every_n_epoch=1",
            "trainer.precision=bf16-mixed",  # mixed precision is a trainer switch: the family needs nothing
        ],
        out,
    )
    seen = []
    original = Diffusion.sample

    def recording_sample(self, n, generator=None, **kwargs):
        state = self.trainer.state.fn if self._trainer is not None else None
        seen.append((str(state), {k: v.detach().clone() for k, v in self.denoiser.state_dict().items()}))
        return original(self, n, generator, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Diffusion, "sample", recording_sample)
        result = train(cfg)
    return result, out, seen


def test_evaluation_samples_from_the_ema_weights(diffusion_run):
    _, out, seen = diffusion_run
    ckpt = torch.load(next((out / "checkpoints").glob("epoch000*.ckpt")), weights_only=True)
    ema = {k[len("denoiser.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("denoiser.")}
    raw = {k[len("denoiser.") :]: v for k, v in ckpt["current_model_state"].items() if k.startswith("denoiser.")}
    assert any(not torch.equal(ema[k], raw[k]) for k in ema)  # decay 0.5 over 3 steps: clearly different
    fit_calls = [w for fn, w in seen if "fit" in fn.lower()]
    final_calls = [w for fn, w in seen if "validat" in fn.lower()]
    assert fit_calls and final_calls
    for weights in fit_calls + final_calls:
        assert all(torch.equal(weights[k], ema[k]) for k in ema)


def test_run_reports_the_bound_and_the_sampler(diffusion_run):
    result, out, _ = diffusion_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert result["trainer"].precision == "bf16-mixed"
    assert metrics["eval/sampler"] == "dpm_solver_sde-4"
    assert 0 < metrics["val/nll_bpd"] < 30 and metrics["val/nll_nats"] > 0
    assert "val/psnr" not in metrics  # no encoder, no reconstructions: absent, not zero
    assert Image.open(out / "samples.png").size[0] > 28
    assert Image.open(out / "noising.png").size == (8 * 29 + 1, 8 * 29 + 1)


def test_sample_entry_point_swaps_the_sampler(diffusion_run, tmp_path):
    _, out, _ = diffusion_run
    png = tmp_path / "grid.png"
    ckpt = out / "checkpoints" / "last.ckpt"
    proc = run_entry(
        "sample.py", f"ckpt_path={ckpt}", "n=4", f"out={png}", "sampler=ddim", "sampler.steps=3", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert Image.open(png).size == (2 * 29 + 1, 2 * 29 + 1)
    cfg = compose_cfg([f"ckpt_path={ckpt}", "sampler=ddpm", "sampler.steps=5000"], config_name="sample")
    with pytest.raises(ConfigError, match=r"sampler.steps=5000 .* 1000 timesteps"):
        apply_sampler(load_model(ckpt)[0], cfg)


# -- latent diffusion --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vae_ckpt(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("vae_for_ldm") / "run"
    cfg = compose_cfg(
        TINY
        + [f"paths.cache_dir={cache_dir}", "metrics.features=none", "model.encoder.width=8", "model.decoder.width=8"],
        out,
    )
    train(cfg)
    return out / "checkpoints" / "last.ckpt"


def test_latent_diffusion_trains_on_a_frozen_vae(vae_ckpt, make_cfg, tmp_path):
    cfg = make_cfg(
        [
            "model=latent_diffusion",
            f"autoencoder_ckpt={vae_ckpt}",
            "model.denoiser.width=32",
            "model.denoiser.depth=1",
            "data.batch_size=32",
            "data.eval_batch_size=100",
            "sampler.steps=3",
            "metrics.features=none",
        ],
        output_dir=tmp_path / "ldm",
    )
    vae_before = torch.load(vae_ckpt, weights_only=True)["state_dict"]
    result = train(cfg)
    model = result["model"]
    assert model.family == "latent_diffusion" and type(model.autoencoder).__name__ == "VAE"
    assert model.denoiser.dim == model.autoencoder.latent_dim == 16
    assert model.latent_scale.item() > 0 and not model.autoencoder.training
    assert all(not p.requires_grad for p in model.autoencoder.parameters())
    for k, v in model.autoencoder.state_dict().items():  # the autoencoder did not move
        assert torch.equal(v, vae_before[k]), k
    images = model.sample(5, generator=torch.Generator().manual_seed(0))
    assert images.shape == (5, 1, 28, 28) and images.min() >= 0 and images.max() <= 1
    assert "val/nll_bpd" not in result["metrics"]  # a latent bound is no pixel likelihood
    again, _ = load_model(tmp_path / "ldm" / "checkpoints" / "last.ckpt", expect_family="latent_diffusion")
    assert again.latent_scale.item() == pytest.approx(model.latent_scale.item())


def test_latent_diffusion_rejects_a_missing_or_wrong_autoencoder(diffusion_run, make_cfg, tmp_path):
    _, out, _ = diffusion_run
    with pytest.raises(ConfigError) as info:
        instantiate_checked(make_cfg(["model=latent_diffusion"]), "model")
    assert "autoencoder_ckpt" in info.value.render() and "model=vae" in info.value.fix
    with pytest.raises(CheckpointError) as info:
        instantiate_checked(make_cfg(["model=latent_diffusion", f"autoencoder_ckpt={tmp_path / 'nope.ckpt'}"]), "model")
    assert "autoencoder_ckpt" in info.value.message and "no such file" in info.value.message
    wrong = out / "checkpoints" / "last.ckpt"  # a diffusion checkpoint, not a VAE
    with pytest.raises(CheckpointError) as info:
        instantiate_checked(make_cfg(["model=latent_diffusion", f"autoencoder_ckpt={wrong}"]), "model")
    assert "'diffusion'" in info.value.message and "vae" in info.value.message


def test_latent_diffusion_rejects_an_autoencoder_of_other_images(vae_ckpt, make_cfg):
    with pytest.raises(ConfigError) as info:
        instantiate_checked(
            make_cfg(["model=latent_diffusion", f"autoencoder_ckpt={vae_ckpt}", "data=digits"]), "model"
        )
    assert "1x28x28" in info.value.message and "1x8x8" in info.value.message
