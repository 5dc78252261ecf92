"""A two-stage entry of the comparison (``stages:`` of conf/compare.yaml): stage 1 trains for its share of the
budget outside runs/, stage 2 on its checkpoint for the rest, and the run's record names both."""

from __future__ import annotations

import json
import subprocess

import pytest
from omegaconf import OmegaConf

from gensuite.compare import runner
from gensuite.errors import ConfigError

STAGES = {"vq_transformer": {"first": "vqvae", "then": "transformer", "share": 0.25,
                             "overrides": ["model/tokenizer=vq", "model.tokenizer.path={ckpt}"]}}  # fmt: skip


def compare_cfg(**over):
    cfg = {"families": ["vae", "vq_transformer"], "seeds": 2, "data": "mnist5k", "max_time": "00:00:08:00",
           "eval_every_n_seconds": 60, "metrics": {"features": "ssl"}, "overrides": [], "stages": STAGES}  # fmt: skip
    return OmegaConf.create({**cfg, **over})


def _value(args, key):
    return next(a.split("=", 1)[1] for a in args if a.startswith(key + "="))


def test_a_staged_entry_trains_stage_one_for_its_share_then_stage_two_on_its_checkpoint(tmp_path, monkeypatch):
    calls = []

    def fake_train(cmd, **kwargs):
        """Each multirun 'finishes' its runs: a metrics.json in every folder it names."""
        args = cmd[4:]
        calls.append(args)
        model, sweep = _value(args, "model"), _value(args, "hydra.sweep.dir")
        for seed in _value(args, "seed").split(","):
            subdir = _value(args, "hydra.sweep.subdir").replace("${seed}", seed)
            subdir = subdir.replace("${hydra:runtime.choices.model}", model)
            folder = tmp_path / sweep / subdir
            folder.mkdir(parents=True, exist_ok=True)
            seconds = {"vqvae": 119.0, "transformer": 358.0}.get(model, 480.0)
            metrics = {"run/family": model, "time/train_s": seconds, "run/parts": "net=gpt"}
            (folder / "metrics.json").write_text(json.dumps(metrics))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(runner.subprocess, "run", fake_train)
    folder, command = runner.run_families(compare_cfg(), tmp_path)
    plain, one, two = calls
    assert _value(plain, "model") == "vae" and _value(plain, "trainer.max_time") == "00:00:08:00"
    assert _value(one, "model") == "vqvae" and _value(one, "trainer.max_time") == "00:00:02:00"  # 1/4 of 8 min
    assert _value(one, "hydra.sweep.dir") == str(tmp_path / "stages")  # outside runs/: not a row of the report
    assert _value(two, "model") == "transformer" and _value(two, "trainer.max_time") == "00:00:06:00"
    assert _value(two, "hydra.sweep.dir") == str(tmp_path / "runs") and "model/tokenizer=vq" in two
    assert (
        _value(two, "model.tokenizer.path") == f"{tmp_path}/stages/vq_transformer-seed${{seed}}/checkpoints/last.ckpt"
    )
    assert command.count("python -m gensuite train") == 3
    for seed in (1, 2):
        record = json.loads((folder / f"vq_transformer-seed{seed}" / "metrics.json").read_text())
        assert record["run/family"] == "vq_transformer" and record["stage1/model"] == "vqvae"
        assert record["stage1/train_s"] == 119.0 and record["stage2/train_s"] == 358.0
        assert record["time/train_s"] == 119.0 + 358.0  # stage 1 counts in the entry's budget
        assert record["stage1/ckpt"] == str(
            tmp_path / "stages" / f"vq_transformer-seed{seed}" / "checkpoints" / "last.ckpt"
        )
        assert record["run/parts"].startswith("transformer on vqvae (stage 1 = 2.0 min of training)")
    # again on the same out: nothing to train, the records are not marked twice
    runner.run_families(compare_cfg(), tmp_path)
    assert len(calls) == 3
    assert json.loads((folder / "vq_transformer-seed1" / "metrics.json").read_text())["time/train_s"] == 477.0
    # a third seed: stage 1 and stage 2 of that seed only, plain families too
    runner.run_families(compare_cfg(seeds=3), tmp_path)
    assert [_value(c, "seed") for c in calls[3:]] == ["3", "3", "3"]


def test_stage_two_waits_for_stage_one_when_only_stage_two_is_missing(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(
        runner.subprocess, "run", lambda cmd, **kw: calls.append(cmd[4:]) or subprocess.CompletedProcess(cmd, 0)
    )
    for seed in (1, 2):  # stage 1 finished before the comparison was killed
        (runner.stage1_folder(tmp_path, "vq_transformer", seed)).mkdir(parents=True)
        (runner.stage1_folder(tmp_path, "vq_transformer", seed) / "metrics.json").write_text("{}")
    runner.run_families(compare_cfg(families=["vq_transformer"]), tmp_path)
    assert [_value(c, "model") for c in calls] == ["transformer"]


def test_all_takes_the_staged_entries_and_mistakes_are_named(tmp_path):
    families, _ = runner.families_and_seeds(compare_cfg(families="all"))
    assert families[-1] == "vq_transformer" and "vae" in families and "vqvae" in families
    assert "vq_transformer" not in _value(runner.train_args(compare_cfg(families="all"), tmp_path), "model")
    bad = [({"share": 1.0}, "share"), ({"first": "nope"}, "first: and then:")]
    for change, message in bad:
        with pytest.raises(ConfigError, match=message):
            runner.stages(compare_cfg(stages={"vq_transformer": {**STAGES["vq_transformer"], **change}}))
    with pytest.raises(ConfigError, match="budgets"):
        runner.stage_args(compare_cfg(budgets=[1, 2]), tmp_path, "vq_transformer", [1])
    with pytest.raises(ConfigError, match="no such family"):
        runner.families_and_seeds(compare_cfg(families=["vq_transformr"]))


def test_the_shipped_stage_composes_into_a_transformer_on_the_vq_tokenizer(tmp_path):
    from hydra import compose, initialize_config_dir

    from gensuite import config_dir

    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("compare", ["families=[vq_transformer]"])
        _, two = runner.stage_args(cfg, tmp_path, "vq_transformer", [1])
        args = [a for a in two if a != "-m" and not a.startswith("hydra.")]
        train = compose("train", args)
    assert train.model.tokenizer._target_.endswith("vq_tokenizer")
    assert train.model.tokenizer.path == str(tmp_path / "stages" / "vq_transformer-seed1" / "checkpoints" / "last.ckpt")
    assert train.trainer.max_time == "00:00:04:00"  # 6 min less stage 1's third
