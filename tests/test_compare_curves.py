"""An interrupted comparison continues where it stopped, and budget points: the runs evaluated at points of the
training clock, off the clock, with a checkpoint at each that reproduces its numbers."""

from __future__ import annotations

import json
import subprocess

import pytest
from omegaconf import OmegaConf

from gensuite.compare import launch
from gensuite.errors import ConfigError, DataError


def compare_cfg(**over):
    cfg = {"families": ["vae", "gan"], "seeds": 2, "data": "mnist5k", "max_time": "00:00:06:00",
           "eval_every_n_seconds": 60, "metrics": {"features": "classifier"}, "overrides": []}  # fmt: skip
    return OmegaConf.create({**cfg, **over})


def test_an_interrupted_comparison_reuses_finished_runs_and_resumes_the_rest(tmp_path, monkeypatch):
    calls = []

    def killed_midway(cmd, **kwargs):
        """The first multirun: vae's two seeds finish, gan seed 1 is killed after a checkpoint, gan 2 never starts."""
        calls.append(cmd[3:])
        if len(calls) == 1:
            for seed in (1, 2):
                (launch.run_folder(tmp_path, "vae", seed)).mkdir(parents=True)
                (launch.run_folder(tmp_path, "vae", seed) / "metrics.json").write_text("{}")
            (launch.run_folder(tmp_path, "gan", 1) / "checkpoints").mkdir(parents=True)
            (launch.run_folder(tmp_path, "gan", 1) / "checkpoints" / "last.ckpt").write_bytes(b"")
            return subprocess.CompletedProcess(cmd, -9)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(launch.subprocess, "run", killed_midway)
    cfg = compare_cfg()
    with pytest.raises(DataError, match=f"with out={tmp_path}"):
        launch.run_families(cfg, tmp_path)
    first = calls[0]
    assert "model=vae,gan" in first and "seed=1,2" in first and "auto_resume=true" in first
    assert "hydra.sweep.subdir=${hydra:runtime.choices.model}-seed${seed}" in first  # one stable folder per run
    assert f"paths.log_dir={tmp_path}" in first  # auto_resume never reaches another run's checkpoint
    # run again on the same out: only gan is launched, both its seeds, and seed 1 resumes from its checkpoint
    folder, command = launch.run_families(cfg, tmp_path)
    assert len(calls) == 2 and "model=gan" in calls[1] and "seed=1,2" in calls[1] and "auto_resume=true" in calls[1]
    assert folder == tmp_path / "runs" and "model=vae,gan seed=1,2" in command  # the report's command: the whole
    for seed in (1, 2):  # the second multirun finished gan
        (launch.run_folder(tmp_path, "gan", seed) / "metrics.json").parent.mkdir(parents=True, exist_ok=True)
        (launch.run_folder(tmp_path, "gan", seed) / "metrics.json").write_text("{}")
    # one more seed later: only the third seed of each family
    launch.run_families(compare_cfg(seeds=3), tmp_path)
    assert "model=vae,gan" in calls[2] and "seed=3" in calls[2]
    # other settings on the same out: refused, its runs would not be comparable
    with pytest.raises(ConfigError, match="other settings.*max_time=00:00:01:00"):
        launch.run_families(compare_cfg(max_time="00:00:01:00"), tmp_path)
    assert json.loads((tmp_path / "compare.json").read_text())["settings"][0] == "data=mnist5k"


def test_the_run_folders_are_named_by_family_and_seed(tmp_path):
    """Hydra resolves the sweep's subdir per job: ``<out>/runs/<family>-seed<seed>``."""
    from hydra import compose, initialize_config_dir

    from gensuite import config_dir

    args = [a for a in launch.train_args(compare_cfg(), tmp_path) if a != "-m" and not a.startswith("hydra.")]
    args = [a.split(",")[0] for a in args]  # one job of the sweep
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", [*args, "hydra.sweep.subdir=${hydra:runtime.choices.model}-seed${seed}"],
                      return_hydra_config=True)  # fmt: skip
        from hydra.core.hydra_config import HydraConfig

        HydraConfig.instance().set_config(cfg)
        assert OmegaConf.select(cfg, "hydra.sweep.subdir") == "vae-seed1"
