"""The one list of families (gensuite.registry): conf/model/ and nothing else, for make smoke, compare.py, the
benchmarks and the tests; a new yaml there is a new family everywhere, and what it needs is read from it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from gensuite import registry
from gensuite.errors import ConfigError

from .conftest import CONF, ROOT


def test_the_families_are_the_files_of_conf_model():
    assert registry.names() == sorted(p.stem for p in (Path(CONF) / "model").glob("*.yaml"))
    by_name = {f.name: f for f in registry.families()}
    assert by_name["latent_diffusion"].needs == ("autoencoder_ckpt",)  # built on a trained VAE
    assert by_name["vae"].from_nothing and by_name["vae"].target == "gensuite.families.vae.VAE"
    assert "latent_diffusion" not in registry.names(from_nothing=True)


@pytest.fixture
def conf_with_new_families(tmp_path) -> Path:
    """A copy of conf/ with two throwaway families: one built on a checkpoint of another, one from nothing."""
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "model" / "stacked.yaml").write_text(
        "_target_: mypkg.Stacked\n"
        "base_ckpt: ${oc.select:base_ckpt,null}   # read from the top level: a run must give it\n"
        "size: ${data.image_size}\n"
    )
    (conf / "model" / "plain.yaml").write_text(
        "defaults:\n  - denoiser: unet\n"
        "_target_: mypkg.Plain\n"
        "sampler: ${oc.select:sampler,null}   # a config group (conf/sampler): optional\n"
        "seed: ${seed}                        # a setting of train.yaml\n"
        "context: ${oc.select:data.seq_len,null}\n"
    )
    return conf


def test_a_new_yaml_in_conf_model_is_a_new_family(conf_with_new_families):
    by_name = {f.name: f for f in registry.families(conf_with_new_families)}
    assert set(by_name) == set(registry.names()) | {"stacked", "plain"}
    assert by_name["stacked"].needs == ("base_ckpt",) and by_name["stacked"].target == "mypkg.Stacked"
    assert by_name["plain"].from_nothing
    trainable = registry.names(conf_with_new_families, from_nothing=True)
    assert "plain" in trainable and "stacked" not in trainable
    assert registry.chosen("all", conf=conf_with_new_families) == trainable


def test_the_command_line_prints_what_make_smoke_runs(conf_with_new_families, monkeypatch, capsys):
    registry.main([])
    assert capsys.readouterr().out.strip() == ",".join(registry.names(from_nothing=True))
    monkeypatch.setattr(registry, "config_dir", lambda: conf_with_new_families)
    registry.main([])
    assert "plain" in capsys.readouterr().out.strip().split(",")
    registry.main(["--all"])
    assert "stacked\tneeds base_ckpt" in capsys.readouterr().out


def test_make_smoke_takes_the_registrys_families():
    make = shutil.which("make")
    if make is None:
        pytest.skip("no make here")
    proc = subprocess.run(
        [make, "-n", "smoke", f"PY={sys.executable}", "STAMP=/dev/null"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert f"model={','.join(registry.names(from_nothing=True))} debug=fdr" in proc.stdout


def test_the_registry_imports_no_torch():
    code = (
        "import sys, gensuite.registry as r; r.families(); "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning', 'hydra')); "
        "sys.exit(f'imported: {bad}' if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_families_setting_all_or_a_list_and_unknown_names_refused():
    assert registry.chosen("all") == registry.names(from_nothing=True)
    assert registry.chosen(["vae", "gan"]) == ["vae", "gan"]
    with pytest.raises(ConfigError, match="no such family: vea") as info:
        registry.chosen(["vae", "vea"])
    assert "families=all" in info.value.fix
    with pytest.raises(ConfigError, match="families is empty"):
        registry.chosen([])


@pytest.mark.parametrize("override", [[], ["families=[vae,gan]"], ["families=all"]])
def test_compare_runs_every_family_by_default_and_the_families_given(override, tmp_path):
    from gensuite.compare.runner import train_args

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="compare", overrides=override)
    model = next(a for a in train_args(cfg, tmp_path) if a.startswith("model="))
    expected = ["vae", "gan"] if override and override[0].endswith("]") else registry.names(from_nothing=True)
    assert model == f"model={','.join(expected)}"
