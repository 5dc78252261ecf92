"""A two-stage entry of the comparison (``stages:`` of conf/compare.yaml): stage 1 trains for its share of the
budget outside runs/, stage 2 on its checkpoint for the rest, and the run's record names both."""

from __future__ import annotations

import json
import subprocess

import pytest
from omegaconf import OmegaConf

from gensuite.compare import runner
from gensuite.errors import ConfigError, DataError

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


def test_with_budgets_stage_one_takes_its_share_of_the_largest_and_stage_two_the_later_points(tmp_path):
    one, two = runner.stage_args(compare_cfg(budgets=[1, 2, 4, 8]), tmp_path, "vq_transformer", [1])
    # the budget is the largest point (8 min): stage 1 a quarter of it, with no budget points of its own
    assert _value(one, "trainer.max_time") == "00:00:02:00"
    assert not any("budget_points" in a for a in one)
    # stage 2 the rest, its points on the entry's whole clock: stage 1's 120 s come first
    assert _value(two, "trainer.max_time") == "00:00:06:00"
    assert _value(two, "+callbacks.budget_points.seconds") == "[60,120,240,480]"
    assert _value(two, "+callbacks.budget_points.offset") == "120"
    # the plain families keep their points from zero
    plain = runner.train_args(compare_cfg(budgets=[1, 2, 4, 8]), tmp_path)
    assert _value(plain, "trainer.max_time") == "00:00:08:00" and not any("offset" in a for a in plain)


def test_jobs_trains_runs_side_by_side_each_on_its_share_of_the_cores(tmp_path, monkeypatch):
    """jobs=2: one train.py per run, two at a time, each with cores // 2 threads and its own log; a staged entry's
    stages in order in one job; a failed run is named, the finished ones kept for the rerun."""
    import os
    import threading
    import time

    calls, lock, running, most = [], threading.Lock(), [0], [0]

    def fake_train(cmd, env=None, stdout=None, **kwargs):
        args = cmd[4:]
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            calls.append((args, env))
        time.sleep(0.05)
        model, sweep = _value(args, "model"), _value(args, "hydra.sweep.dir")
        seed = _value(args, "seed")
        folder = (
            tmp_path
            / sweep
            / _value(args, "hydra.sweep.subdir")
            .replace("${seed}", seed)
            .replace("${hydra:runtime.choices.model}", model)
        )
        failed = model == "gan" and seed == "2"
        if not failed:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "metrics.json").write_text(json.dumps({"run/family": model, "time/train_s": 1.0}))
        stdout.write("trained\n")
        with lock:
            running[0] -= 1
        return subprocess.CompletedProcess(cmd, 1 if failed else 0)

    monkeypatch.setattr(runner.subprocess, "run", fake_train)
    cfg = compare_cfg(families=["vae", "gan", "vq_transformer"], jobs=2, budgets=[1, 2])
    with pytest.raises(DataError, match="gan-seed2 failed"):
        runner.run_families(cfg, tmp_path)
    assert len(calls) == 2 * (1 + 1 + 2) and most[0] == 2  # two at a time, never more
    threads = str(max(1, (os.cpu_count() or 1) // 2))
    assert all(env["OMP_NUM_THREADS"] == threads for _, env in calls)
    assert all(_value(a, "seed") in ("1", "2") and "," not in _value(a, "seed") for a, _ in calls)  # one run each
    order = [_value(a, "model") for a, _ in calls if "vq_transformer" in _value(a, "hydra.sweep.subdir")]
    assert order == ["vqvae", "transformer"] * 2 or sorted(order) == ["transformer"] * 2 + ["vqvae"] * 2
    assert "trained" in (tmp_path / "jobs" / "vae-seed1.log").read_text()
    # the rerun trains only what failed
    del calls[:]
    with pytest.raises(DataError, match="gan-seed2"):
        runner.run_families(cfg, tmp_path)
    assert [(_value(a, "model"), _value(a, "seed")) for a, _ in calls] == [("gan", "2")]
    with pytest.raises(ConfigError, match="jobs"):
        runner.run_families(compare_cfg(jobs=0), tmp_path / "other")
