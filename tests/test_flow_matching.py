"""Flow matching: the ODE samplers and the likelihood against a Gaussian problem solved in closed form, samplers by
process at every entry, the shared conditioning rule, and a tiny run through `train` and ``sample.py``.

The Gaussian problem: noise x_0 ~ N(0, I) and data x_1 ~ N(μ, diag(s²)) joined by the straight path
x_t = (1 - t) x_0 + t x_1. Then x_t ~ N(tμ, diag(σ_t²)) with σ_t² = (1 - t)² + t² s², the marginal velocity is
``v(x, t) = μ + (t s² - (1 - t)) / σ_t² · (x - tμ)`` (the regression of x_1 - x_0 on x_t), its flow maps x_0 to
``μ + s x_0`` exactly, and the model density at t = 1 is N(μ, diag(s²)).
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from gensuite.cli.config import instantiate_checked
from gensuite.diffusion.samplers import DDIM
from gensuite.errors import ConfigError
from gensuite.eval import evaluate
from gensuite.families.diffusion import Diffusion
from gensuite.families.flow_matching import FlowMatching
from gensuite.families.gan import GAN
from gensuite.families.options import Guidance
from gensuite.flow.likelihood import ode_log_likelihood
from gensuite.flow.samplers import Euler, Heun, Midpoint
from gensuite.nets.unet import UNet
from gensuite.sample import sample
from gensuite.train import train

from .conftest import TINY, compose_cfg, run_entry
from .test_samples_io import untrained_checkpoint

MU = torch.tensor([2.0, -1.0, 0.5, 0.0])
S = torch.tensor([0.5, 2.0, 1.0, 0.1])


def gaussian_velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The exact marginal velocity of the straight path from N(0, I) to N(MU, diag(S²)); x ``(B, 4)``."""
    t = t.double()[:, None]
    var = (1 - t) ** 2 + t**2 * S.double() ** 2
    return (MU + (t * S.double() ** 2 - (1 - t)) / var * (x.double() - t * MU)).to(x.dtype)


def gaussian_log_prob(x: torch.Tensor) -> torch.Tensor:
    return torch.distributions.Normal(MU.double(), S.double()).log_prob(x.double()).sum(1)


# -- samplers ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "sampler_cls,steps,rtol",
    [(Euler, 64, 0.08), (Heun, 16, 0.04), (Midpoint, 16, 0.04)],
    ids=["euler", "heun", "midpoint"],
)
def test_samplers_with_the_exact_velocity_reach_the_analytic_endpoint(sampler_cls, steps, rtol):
    x0 = torch.randn(4000, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = MU + S * x0  # where the flow takes each noise point
    errors = [(sampler_cls(n)(gaussian_velocity, x0) - exact).abs().max().item() for n in (4, 16)]
    assert errors[1] < errors[0] / 3, errors  # converges (first order: /4, second order: /16)
    out = sampler_cls(steps)(gaussian_velocity, x0)
    assert torch.allclose(out.mean(0), exact.mean(0), atol=0.02)
    assert torch.allclose(out.std(0), exact.std(0), rtol=rtol)
    assert torch.allclose(exact.std(0), S.double(), rtol=0.05)  # and the exact map is the analytic endpoint


def test_second_order_samplers_beat_euler_at_equal_steps_and_equal_calls():
    x0 = torch.randn(500, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    exact = MU + S * x0

    def err(sampler):
        return (sampler(gaussian_velocity, x0) - exact).abs().max().item()

    assert err(Heun(8)) < err(Euler(8)) / 10
    assert err(Midpoint(8)) < err(Euler(8)) / 10
    assert err(Heun(8)) < err(Euler(16))  # at 16 network calls each
    assert Heun(8).nfe == 16 and Euler(8).nfe == 8 and Heun(8).describe() == "heun-8-nfe16"


def test_samplers_follow_the_grid_they_are_given_both_ways():
    x0 = torch.randn(200, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x1 = Heun(32)(gaussian_velocity, x0)
    back = Heun(32)(gaussian_velocity, x1, Heun(32).times().flip(0))  # data -> noise
    assert torch.allclose(back, x0, atol=1e-2)  # the s = 0.1 coordinate is expanded 10x on the way back
    with pytest.raises(ConfigError, match="steps must be >= 1"):
        Euler(0)


# -- likelihood --------------------------------------------------------------------------------------------------
def test_likelihood_of_the_gaussian_flow_matches_its_closed_form():
    g = torch.Generator().manual_seed(3)
    x1 = (MU + S * torch.randn(256, 4, generator=g)).double()
    want = gaussian_log_prob(x1)
    # the Jacobian is diagonal: a Rademacher probe gives the divergence exactly, only the solver's error is left,
    # and it falls as Heun's second order says (x4 per halved step)
    errors = {}
    for steps in (32, 64):
        got = ode_log_likelihood(gaussian_velocity, x1, Heun(steps), "rademacher", g)
        errors[steps] = (got - want).abs()
    assert got.shape == (256,)
    assert errors[64].max() < 0.03 and errors[64].mean() < 5e-3, errors[64].max()
    assert errors[32].mean() > 3 * errors[64].mean()
    # a Gaussian probe is unbiased but noisy on this diagonal field
    noisy = ode_log_likelihood(gaussian_velocity, x1, Heun(64), "gaussian", g)
    assert (noisy - want).abs().max() > 1e-2 and abs((noisy - want).mean()) < 0.3


def test_hutchinson_estimate_of_a_mixing_linear_flow_is_unbiased_and_seeded():
    """v = A x with a non-diagonal A: x_1 = e^A x_0, log p_1(x_1) = log N(e^{-A} x_1) - tr A; the probe's
    off-diagonal terms average out over examples, and a fixed seed gives the same numbers."""
    a = torch.tensor([[0.3, 0.8, 0.0], [-0.5, -0.2, 0.4], [0.1, 0.0, 0.5]], dtype=torch.float64)
    x1 = torch.randn(4000, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    x0 = x1 @ torch.linalg.matrix_exp(-a).T
    want = torch.distributions.Normal(0.0, 1.0).log_prob(x0).sum(1) - torch.trace(a)

    def velocity(x, t):
        return x @ a.T

    def estimate(seed):
        return ode_log_likelihood(velocity, x1, Heun(16), "rademacher", torch.Generator().manual_seed(seed))

    got = estimate(0)
    assert (got - want).abs().max() > 0.05  # single-probe estimates scatter ...
    assert abs((got - want).mean()) < 0.03  # ... around the truth
    assert torch.equal(got, estimate(0))


# -- the family --------------------------------------------------------------------------------------------------
SMALL_UNET = {"base_width": 8, "channel_mults": [1, 2], "num_res_blocks": 1, "attention_levels": []}


def tiny_flow(num_classes: int = 0, **kwargs) -> FlowMatching:
    torch.manual_seed(0)
    return FlowMatching(UNet(1, 8, num_classes=num_classes, **SMALL_UNET), num_classes=num_classes, **kwargs)


def test_guidance_0_is_the_unconditional_velocity_and_1_the_conditional():
    model = tiny_flow(num_classes=3).eval()
    for p in model.denoiser.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x, t, y = torch.randn(4, 1, 8, 8), torch.tensor([0.1, 0.3, 0.6, 0.9]), torch.tensor([0, 1, 2, 1])
    cond, uncond = model.denoiser(x, t * 1000, y), model.denoiser(x, t * 1000, None)
    assert not torch.allclose(cond, uncond)
    assert torch.allclose(model.velocity(x, t, y, guidance_scale=0.0), uncond, atol=1e-6)
    assert torch.allclose(model.velocity(x, t, y, guidance_scale=1.0), cond, atol=1e-6)
    assert torch.allclose(model.velocity(x, t, y, guidance_scale=3.0), uncond + 3 * (cond - uncond), atol=1e-5)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    model.set_sampler(Euler(2))
    unguided = model.sample(4, g(), labels=y, options=Guidance(0.0))
    assert torch.allclose(unguided, model.sample(4, g(), labels=torch.full_like(y, -1)), atol=1e-6)
    assert not torch.allclose(unguided, model.sample(4, g(), labels=y, options=Guidance(1.0)))
    assert model.class_grid(g(), per_class=2).shape == (3, 2, 1, 8, 8)


def test_loss_targets_the_straight_path_velocity_and_times_follow_the_setting():
    model = tiny_flow(time_sampling="uniform", dequantize=False)
    seen = {}

    def spy(x, t, y):
        seen.update(x=x, t=t)
        return torch.zeros_like(x)

    model.denoiser.forward = spy
    x = torch.rand(64, 1, 8, 8)
    torch.manual_seed(5)
    loss = model.losses((x, None))["loss"]
    torch.manual_seed(5)
    noise = torch.randn_like(x)
    t = seen["t"] / 1000  # the network was given t * time_scale
    tb = t.view(-1, 1, 1, 1)
    assert torch.allclose(seen["x"], (1 - tb) * noise + tb * (2 * x - 1), atol=1e-5)
    assert torch.allclose(loss, ((2 * x - 1) - noise).pow(2).mean(), atol=1e-5)  # v = 0: E|x_1 - x_0|²
    lognormal = tiny_flow(time_sampling="logit_normal").sample_times(20000, "cpu")
    uniform = model.sample_times(20000, "cpu")
    assert lognormal.min() > 0 and lognormal.max() < 1 and lognormal.median().item() == pytest.approx(0.5, abs=0.02)
    assert ((lognormal - 0.5).abs() < 0.25).float().mean() > ((uniform - 0.5).abs() < 0.25).float().mean() + 0.1
    with pytest.raises(ConfigError, match="time_sampling"):
        tiny_flow(time_sampling="cosine")


def test_nll_is_a_fixed_seed_estimate_in_nats_per_image_and_can_be_switched_off():
    model = tiny_flow(nll_steps=2).eval()
    batch = (torch.randint(0, 256, (3, 1, 8, 8)).float() / 255, None)
    nats = model.nll(batch)
    assert nats.shape == (3,) and torch.equal(nats, model.nll(batch))
    with torch.inference_mode():  # as in Lightning's validation: the trace estimate still gets its gradients
        assert torch.allclose(model.nll((batch[0].clone(), None)), nats)
    bpd = nats / (64 * math.log(2))
    # untrained: v = 0 (zero-initialised output), so -log p is the N(0, I) density of y plus D log 128
    assert ((bpd > 7.0) & (bpd < 9.5)).all(), bpd
    off = tiny_flow(nll_steps=0)
    assert not off.has_likelihood() and "eval/nll_estimator" not in off.eval_info()


def test_conditional_label_rule_is_the_same_for_gan_diffusion_and_flow(make_cfg):
    models = {}
    for family, extra in {
        "gan": ["model.latent_dim=8", "model.decoder.width=8", "model.discriminator.body.width=8"],
        "diffusion": ["model/denoiser=unet_small", "model.denoiser.base_width=8"],
        "flow_matching": ["model/denoiser=unet_small", "model.denoiser.base_width=8"],
    }.items():
        cfg = make_cfg([f"model={family}", "data=digits", "model.num_classes=10", *extra])
        models[family] = instantiate_checked(cfg, "model")
    assert isinstance(models["gan"], GAN) and isinstance(models["diffusion"], Diffusion)
    for n in (1, 7, 25):
        want = torch.arange(n) % 10  # balanced
        for family, model in models.items():
            assert torch.equal(model.sample_labels(n), want), family


# -- samplers by process, at every entry --------------------------------------------------------------------------
def test_a_sampler_of_the_wrong_process_is_refused_at_training(make_cfg):
    with pytest.raises(ConfigError, match="sampler=ddim is a diffusion-process sampler") as err:
        instantiate_checked(make_cfg(["model=flow_matching", "sampler=ddim"]), "model")
    assert "sampler=euler | heun | midpoint" in err.value.render()
    with pytest.raises(ConfigError, match="sampler=heun is a flow-process sampler") as err:
        instantiate_checked(make_cfg(["model=diffusion", "sampler=heun"]), "model")
    assert "sampler=ddim | ddpm | dpm_solver | dpm_solver_sde" in err.value.render()
    with pytest.raises(ConfigError, match="flow_matching model needs a flow sampler"):
        tiny_flow().set_sampler(DDIM(5))


def test_heun_on_a_diffusion_checkpoint_is_refused_by_sample_and_eval(tmp_path, cache_dir):
    ckpt = untrained_checkpoint(
        tmp_path / "diff.ckpt",
        ["model=diffusion", "data=digits", "model/denoiser=unet_small", f"paths.cache_dir={cache_dir}"],
    )
    with pytest.raises(ConfigError, match="sampler=heun is a flow-process sampler"):
        sample(compose_cfg([f"ckpt_path={ckpt}", "sampler=heun"], config_name="sample"))
    with pytest.raises(ConfigError, match="sampler=heun is a flow-process sampler"):
        evaluate(compose_cfg([f"ckpt_path={ckpt}", "sampler=heun"], config_name="eval"))


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory, cache_dir):
    """A tiny conditional flow-matching run with the full evaluation (classifier features, copy rate, likelihood)."""
    out = tmp_path_factory.mktemp("flow_run") / "run"
    cfg = compose_cfg(
        TINY
        + [
            "model=flow_matching",
            "model/denoiser=unet_small",
            "model.denoiser.base_width=8",
            "model.num_classes=${data.num_classes}",
            "model.nll_steps=1",
            "data.eval_batch_size=100",
            "sampler.steps=2",
            "trainer.check_val_every_n_epoch=1",
            f"paths.cache_dir={cache_dir}",
        ],
        out,
    )
    return train(cfg), out


def test_flow_matching_trains_and_reports_the_shared_metrics(flow_run):
    result, out = flow_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["run/family"] == "flow_matching"
    assert metrics["val/fid_classifier"] > 0 and 0 <= metrics["val/copy_rate_classifier"] <= 1
    assert 0 < metrics["val/nll_bpd"] < 30 and metrics["val/nll_nats"] > 0
    assert metrics["eval/sampler"] == "euler-2-nfe2" and "Hutchinson" in metrics["eval/nll_estimator"]
    assert "val/psnr" not in metrics  # no encoder: absent, not zero
    assert (out / "path.png").is_file() and (out / "class_grid.png").is_file()


def test_the_flow_checkpoint_samples_through_sample_py_and_refuses_ddim(flow_run, tmp_path):
    _, out = flow_run
    ckpt = out / "checkpoints" / "last.ckpt"
    # the function sample.py calls (the checkpoint is rebuilt through the trust allowlist: flow yaml targets on it)
    png = sample(compose_cfg([f"ckpt_path={ckpt}", "n=4", f"out={tmp_path / 'grid.png'}", "sampler=euler",
                              "sampler.steps=2"], config_name="sample"))  # fmt: skip
    assert png.is_file()
    # the real entry, refusing a diffusion sampler: one line, exit 2, nothing written
    proc = run_entry("sample.py", f"ckpt_path={ckpt}", "n=4", "sampler=ddim", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[0] == (
        "ConfigError: sampler=ddim is a diffusion-process sampler; a flow_matching model needs a flow sampler"
    )
    assert "Traceback" not in proc.stderr and not (out / "samples-4-seed0.png").exists()
