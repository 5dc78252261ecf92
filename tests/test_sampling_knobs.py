"""Sampling knobs at sample time (``sampling.<knob>=`` of sample.py and eval.py) and chosen labels: each knob has
the effect it names, a knob the family lacks is a one-line error listing the family's own, knobs are passed and never
set on the model, the yaml and resume read the families' declarations, labels reach the model."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from gensuite.cli.sampling import apply_sampler, options_from
from gensuite.cli.sweep import parse_sweep, quote_sweep
from gensuite.errors import ConfigError
from gensuite.eval import evaluate
from gensuite.families.catalog import builtin_families, builtin_knobs, sampling_only_model_keys
from gensuite.families.draw import draw
from gensuite.families.options import Guidance
from gensuite.runs.checkpoint import load_model
from gensuite.runs.resume import _SAMPLING
from gensuite.sample import sample

from .conftest import run_entry
from .test_samples_io import DIFFUSION, EVAL, GAN, SMALL_VAE, sample_cfg, untrained_checkpoint

TEXT = ["model=transformer", "data=pydoc", "model.net.width=32", "model.net.depth=1", "model.net.heads=2",
        "model.context=32", "model.text_length=24"]  # fmt: skip


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, cache_dir):
    """Untrained checkpoints of each family with knobs (sampling needs weights, not training)."""
    root = tmp_path_factory.mktemp("knobs")
    cache = f"paths.cache_dir={cache_dir}"
    return {
        "vae": untrained_checkpoint(root / "vae.ckpt", [*SMALL_VAE, cache]),
        "gan": untrained_checkpoint(root / "gan.ckpt", [*GAN, cache]),
        "diffusion": untrained_checkpoint(root / "diffusion.ckpt", [*DIFFUSION, cache]),
        "transformer": untrained_checkpoint(root / "text.ckpt", [*TEXT, cache]),
    }


def knobbed(ckpt, *overrides):
    """The checkpoint's model and the options sample.py would pass it for ``overrides`` (the model's own: None)."""
    model, _ = load_model(ckpt)
    cfg = sample_cfg(ckpt, *overrides)
    apply_sampler(model, cfg)
    return model, options_from(model, cfg)


def test_lower_temperature_lowers_the_transformers_per_position_entropy(ckpts):
    def entropy(knobbed) -> float:
        model, options = knobbed
        tokens = model.sample(32, torch.Generator().manual_seed(0), options=options)  # (32, 24) token ids
        ent = []
        for col in tokens.T:  # the empirical entropy of each position across the 32 samples
            p = torch.bincount(col).float()
            p = p[p > 0] / len(col)
            ent.append(float(-(p * p.log()).sum()))
        return float(np.mean(ent))

    cold, warm = knobbed(ckpts["transformer"], "sampling.temperature=0.05"), knobbed(ckpts["transformer"])
    assert cold[1].temperature == 0.05 and warm[1] is None and warm[0].default_options.temperature == 1.0
    greedy = knobbed(ckpts["transformer"], "sampling.temperature=0")
    assert entropy(greedy) == 0.0 < entropy(cold) < entropy(warm)
    top = knobbed(ckpts["transformer"], "sampling.top_k=1")  # top-1: every sample alike too
    assert entropy(top) == 0.0


def test_truncation_shrinks_the_gan_latents_and_changes_samples(ckpts):
    model, cut = knobbed(ckpts["gan"], "sampling.truncation=0.5")
    z_plain = model.latents(2000, torch.Generator().manual_seed(0))
    z_cut = model.latents(2000, torch.Generator().manual_seed(0), cut.truncation)
    assert z_cut.abs().max() <= 0.5 and z_plain.abs().max() > 2
    assert z_cut.norm(dim=1).mean() < 0.4 * z_plain.norm(dim=1).mean()
    a = model.sample(4, torch.Generator().manual_seed(1), options=cut)
    assert a.shape == model.sample(4, torch.Generator().manual_seed(1)).shape


def test_vae_temperature_scales_the_prior(ckpts):
    seen = []
    model, options = knobbed(ckpts["vae"], "sampling.temperature=0.5")
    model.decoder.register_forward_pre_hook(lambda _, args: seen.append(args[0].std().item()))
    model.sample(4000, torch.Generator().manual_seed(0), options=options)
    assert seen[-1] == pytest.approx(0.5, rel=0.05)


def test_guidance_zero_is_the_unconditional_model(ckpts):
    model, options = knobbed(ckpts["diffusion"], "sampling.guidance_scale=0", "sampler=ddim", "sampler.steps=2")
    a = model.sample(4, torch.Generator().manual_seed(0), labels=torch.full((4,), 3), options=options)
    b = model.sample(4, torch.Generator().manual_seed(0), labels=torch.full((4,), 7), options=options)
    torch.testing.assert_close(a, b)  # the labels are ignored: only the "no label" prediction is used
    _, guided = knobbed(ckpts["diffusion"], "sampling.guidance_scale=3", "sampler=ddim", "sampler.steps=2")
    assert guided.guidance_scale == 3


@pytest.mark.parametrize(
    ("family", "override", "lists"),
    [
        ("vae", "sampling.truncation=0.7", "sampling.temperature"),
        ("gan", "sampling.temperature=0.8", "sampling.truncation"),
        ("transformer", "sampling.guidance_scale=2", "sampling.top_p"),
    ],
)
def test_a_knob_the_family_lacks_lists_its_knobs(ckpts, family, override, lists):
    with pytest.raises(ConfigError, match=lists) as err:
        knobbed(ckpts[family], override)
    assert override.split("=")[0] in str(err.value)


def test_knob_values_are_checked_before_sampling(ckpts):
    with pytest.raises(ConfigError, match="truncation must be > 0"):
        knobbed(ckpts["gan"], "sampling.truncation=0")
    with pytest.raises(ConfigError, match="top_p"):
        knobbed(ckpts["transformer"], "sampling.top_p=1.5")


def test_knobs_are_passed_and_leave_the_model_as_it_was(ckpts):
    """sample.py's way (options built from sampling.*, passed to every draw) changes no setting of the model: later
    samples without options are those of a model that never saw the knob."""
    model, options = knobbed(ckpts["vae"], "sampling.temperature=0.5", "sampling.prior=normal")
    defaults = model.default_options
    cold = [x for x, _ in draw(model, 6, 4, torch.Generator().manual_seed(0), options=options)]
    assert model.default_options is defaults and (defaults.temperature, defaults.prior) == (1.0, "gmm")
    assert (options.temperature, options.prior) == (0.5, "normal") and model.prior == "gmm"
    fresh, _ = load_model(ckpts["vae"])
    after = model.sample(6, torch.Generator().manual_seed(1))
    torch.testing.assert_close(after, fresh.sample(6, torch.Generator().manual_seed(1)), rtol=0, atol=0)
    assert not torch.equal(torch.cat(cold), model.sample(6, torch.Generator().manual_seed(0)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        defaults.temperature = 0.5  # the declaration is immutable: a knob cannot be set on it either


def test_the_yaml_and_resume_read_the_declared_knobs():
    """conf/sample.yaml and conf/eval.yaml offer exactly the knobs the families declare; resume applies the
    sampling-only ones (not model.prior, which also decides what the VAE's training fits)."""
    declared = builtin_knobs()
    conf = Path(__file__).resolve().parents[1] / "conf"
    for name in ("sample.yaml", "eval.yaml"):
        assert set(yaml.safe_load((conf / name).read_text())["sampling"]) == set(declared), name
    assert {"temperature", "top_k", "top_p", "guidance_scale", "truncation"} <= set(sampling_only_model_keys())
    assert set(sampling_only_model_keys()) <= set(_SAMPLING) and "prior" not in _SAMPLING
    assert {"diffusion", "flow_matching"} <= declared["guidance_scale"].keys()
    guided = {cls.Options for cls in builtin_families() if "guidance_scale" in cls.Options.knobs()}
    assert guided == {Guidance}  # one mechanism for every guided family


def test_labels_reach_the_samples(ckpts, tmp_path):
    path = sample(sample_cfg(ckpts["gan"], "n=6", "labels=[3,3,7]", "format=npz", f"out={tmp_path / 'a.npz'}"))
    assert np.load(path)["labels"].tolist() == [3, 3, 7, 3, 3, 7]
    path = sample(sample_cfg(ckpts["diffusion"], "n=4", "label=5", "sampler=ddim", "sampler.steps=2",
                             "format=npz", f"out={tmp_path / 'b.npz'}"))  # fmt: skip
    assert np.load(path)["labels"].tolist() == [5, 5, 5, 5]
    with pytest.raises(ConfigError, match="0..9"):
        sample(sample_cfg(ckpts["gan"], "label=12", f"out={tmp_path / 'c.png'}"))
    with pytest.raises(ConfigError, match="unconditional"):
        sample(sample_cfg(ckpts["vae"], "label=3", f"out={tmp_path / 'd.png'}"))


def test_eval_takes_the_knobs_and_records_them(ckpts, cache_dir, tmp_path):
    from .conftest import compose_cfg

    cfg = compose_cfg([f"ckpt_path={ckpts['vae']}", "sampling.temperature=0.7", *EVAL, f"paths.cache_dir={cache_dir}",
                       f"out={tmp_path / 'e.json'}"], config_name="eval")  # fmt: skip
    metrics = evaluate(cfg)
    assert metrics["eval/sampling.temperature"] == 0.7
    assert "val/fid_classifier" in metrics


def test_the_knob_error_is_one_line_through_the_entry(ckpts):
    proc = run_entry("sample.py", f"ckpt_path={ckpts['vae']}", "sampling.truncation=0.7")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "sampling.temperature" in proc.stderr + proc.stdout


def test_a_sweep_writes_one_evaluation_per_value_and_the_curve(ckpts, cache_dir, tmp_path):
    out = tmp_path / "curve"
    proc = run_entry("eval.py", f"ckpt_path={ckpts['vae']}", "sweep=sampling.temperature=0.3,1.0", *EVAL,
                     f"paths.cache_dir={cache_dir}", f"out={out}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert [float(r["sampling.temperature"]) for r in rows] == [0.3, 1.0]
    assert all(float(r["fid"]) > 0 and 0 <= float(r["precision"]) <= 1 for r in rows)
    assert rows[0]["fid"] != rows[1]["fid"]  # the knob changed the samples
    assert (out / "sweep.png").stat().st_size > 10_000 and (out / "sampling.temperature=0.3.json").exists()


def test_sweep_mistakes_are_named(ckpts, cache_dir):
    from .conftest import compose_cfg

    assert quote_sweep(["sweep=sampler.steps=4,8", "n=3"]) == ["sweep='sampler.steps=4,8'", "n=3"]
    for bad, words in (("model.lr=1,2", "sampling.<knob>"), ("sampling.temperature=0.5", "two values")):
        with pytest.raises(ConfigError, match=words):
            parse_sweep(bad)
    cfg = compose_cfg([f"ckpt_path={ckpts['diffusion']}", "sweep='sampler.steps=2,4'", *EVAL,
                       f"paths.cache_dir={cache_dir}"], config_name="eval")  # fmt: skip
    with pytest.raises(ConfigError, match="sampler=ddim"):
        evaluate(cfg)
