"""Every option of every config group composes and instantiates; documented spellings stay valid; each data x
part combination that should work runs optimisation steps."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from gensuite import registry
from gensuite.cli.config import instantiate_checked
from gensuite.errors import ConfigError

from .conftest import CONF

GROUP_DIR = Path(CONF)


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (GROUP_DIR / group).glob("*.yaml"))


IMAGE_DATA = [d for d in options("data") if d not in ("pydoc", "text")]
FAMILIES = registry.families()


@pytest.mark.parametrize("data", options("data"))
def test_every_data_config_composes_and_builds(make_cfg, data, tmp_path):
    extra = []
    if data == "image_folder":
        extra = [f"data.path={tmp_path}"]
    elif data == "text":
        (tmp_path / "t.txt").write_text("hello world\n" * 100)
        extra = [f"data.path={tmp_path / 't.txt'}"]
    cfg = make_cfg([f"data={data}", *extra])
    dm = instantiate_checked(cfg, "data")  # building must not download or read anything yet
    assert dm is not None


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_every_family_composes_and_builds_on_its_default_data(make_cfg, family):
    """What the registry reads from the yaml (`registry.Family.needs`) is what the family does: one that needs a
    setting refuses to build without it, naming it; every other family builds from nothing."""
    cfg = make_cfg([f"model={family.name}"])
    for setting in family.needs:  # built on another family's trained model: without one, a clear error
        with pytest.raises(ConfigError, match=setting):
            instantiate_checked(cfg, "model")
    if family.needs:
        return
    model = instantiate_checked(cfg, "model")
    assert model.family and sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("group", ["trainer", "callbacks", "logger", "metrics"])
def test_every_run_option_composes(make_cfg, group):
    for option in options(group):
        cfg = make_cfg([f"{group}={option}"])
        assert OmegaConf.to_container(cfg[group], resolve=True) is not None


def test_trainer_configs_instantiate_on_cpu(make_cfg):
    for option in options("trainer"):
        cfg = make_cfg([f"trainer={option}", "trainer.accelerator=cpu", "trainer.precision=32-true"])
        trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
        assert trainer.max_epochs == 1


def test_documented_part_swaps_compose(make_cfg):
    """The spellings the README shows: one override per part."""
    cfg = make_cfg(["model=vae", "model/encoder=resnet", "model/decoder=mlp", "model/likelihood=gaussian"])
    model = instantiate_checked(cfg, "model")
    assert type(model.encoder).__name__ == "ResNetEncoder" and type(model.decoder).__name__ == "MLPDecoder"
    assert type(model.likelihood).__name__ == "DiscretizedGaussian"


@pytest.mark.parametrize("data", ["digits", "mnist5k"])
@pytest.mark.parametrize("encoder", options("model/encoder"))
@pytest.mark.parametrize("decoder", options("model/decoder"))
def test_vae_steps_on_every_part_combination(make_cfg, data, encoder, decoder):
    cfg = make_cfg(
        [
            f"data={data}",
            f"model/encoder={encoder}",
            f"model/decoder={decoder}",
            "model.encoder.width=8",
            "model.decoder.width=8",
            "data.batch_size=16",
        ]
    )
    torch.manual_seed(0)
    dm, model = instantiate_checked(cfg, "data"), instantiate_checked(cfg, "model")
    opt = model.configure_optimizers()
    batch = next(iter(dm.train_dataloader()))
    for _ in range(2):
        loss = model.losses(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
    assert model.sample(4).shape == (4, dm.channels, dm.image_size, dm.image_size)
