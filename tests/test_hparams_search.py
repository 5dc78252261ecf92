"""``hparams_search=optuna`` searches the chosen family's own space (conf/preset/search/optuna_<model>.yaml): every
key of every family's space composes and builds that family's model at the space's corners, and a family with no
space, or a space key the config does not take, is refused before the first trial."""

from __future__ import annotations

import itertools

import pytest
from hydra.core.global_hydra import GlobalHydra

from gensuite import registry
from gensuite.cli.command_line import _first_value, check_command_line
from gensuite.cli.config import instantiate_checked
from gensuite.errors import ConfigError

from .conftest import CONF, ROOT, compose_cfg

SPACES = sorted(p.stem.removeprefix("optuna_") for p in (ROOT / "conf" / "preset" / "search").glob("optuna_*.yaml"))
TRAINABLE_FROM_NOTHING = registry.names(from_nothing=True)  # latent_diffusion needs a trained VAE checkpoint


def _corners(space: str) -> list[str]:
    """The extreme values of a ``choice(...)``/``interval(lo, hi)`` entry (what the sweeper may draw)."""
    inner = space[space.find("(") + 1 : space.rfind(")")]
    values = [v.strip() for v in inner.split(",")]
    return [values[0], values[-1]]


def test_every_family_has_a_search_space():
    families = set(registry.names())
    assert families <= set(SPACES), f"no conf/preset/search/optuna_<model>.yaml for {families - set(SPACES)}"


@pytest.mark.parametrize("model", TRAINABLE_FROM_NOTHING)
def test_the_search_space_follows_the_model_and_builds_at_its_corners(model, cache_dir):
    cfg = compose_cfg([f"model={model}", "hparams_search=optuna", f"paths.cache_dir={cache_dir}"])
    params = dict(cfg.hydra.sweeper.params)
    assert params, f"model={model} searches nothing"
    GlobalHydra.instance().clear()
    check_command_line(CONF, "train", [f"model={model}", "hparams_search=optuna"])  # what the entry checks
    # every combination of low and high ends (at most 2^4 = 16 builds of a small default model)
    keys = list(params)
    for combo in itertools.product(*(_corners(str(params[k])) for k in keys)):
        overrides = [f"{k}={v}" for k, v in zip(keys, combo, strict=True)]
        built = compose_cfg([f"model={model}", *overrides, f"paths.cache_dir={cache_dir}"])
        instantiate_checked(built, "model")


def test_a_search_space_of_another_family_is_refused_before_any_trial():
    GlobalHydra.instance().clear()
    with pytest.raises(ConfigError, match="model.beta"):  # the VAE's KL weight does not exist in a GAN
        check_command_line(CONF, "train", ["model=gan", "hparams_search=optuna", "+hydra.sweeper.params.model.beta=1"])


def test_a_family_without_a_search_space_is_refused(monkeypatch):
    user_conf = ROOT / "tests" / "user_family" / "conf"
    monkeypatch.syspath_prepend(str(user_conf.parent))
    GlobalHydra.instance().clear()
    with pytest.raises(ConfigError, match="no search space for model=mean_image") as err:
        check_command_line(
            CONF, "train", ["model=mean_image", "hparams_search=optuna", f"hydra.searchpath=[file://{user_conf}]"]
        )
    assert "conf/preset/search/optuna_mean_image.yaml" in err.value.fix


def test_first_value_of_a_space():
    assert _first_value("choice(8, 16, 32)") == "8"
    assert _first_value("interval(0.0001, 0.01)") == "0.0001"
    assert _first_value("0.5") == "0.5"
