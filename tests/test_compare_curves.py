"""An interrupted comparison continues where it stopped, and budget points: the runs evaluated at points of the
training clock, off the clock, with a checkpoint at each that reproduces its numbers."""

from __future__ import annotations

import json
import subprocess

import pytest
from omegaconf import OmegaConf

from gensuite.compare import runner
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
                (runner.run_folder(tmp_path, "vae", seed)).mkdir(parents=True)
                (runner.run_folder(tmp_path, "vae", seed) / "metrics.json").write_text("{}")
            (runner.run_folder(tmp_path, "gan", 1) / "checkpoints").mkdir(parents=True)
            (runner.run_folder(tmp_path, "gan", 1) / "checkpoints" / "last.ckpt").write_bytes(b"")
            return subprocess.CompletedProcess(cmd, -9)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(runner.subprocess, "run", killed_midway)
    cfg = compare_cfg()
    with pytest.raises(DataError, match=f"with out={tmp_path}"):
        runner.run_families(cfg, tmp_path)
    first = calls[0]
    assert "model=vae,gan" in first and "seed=1,2" in first and "auto_resume=true" in first
    assert "hydra.sweep.subdir=${hydra:runtime.choices.model}-seed${seed}" in first  # one stable folder per run
    assert f"paths.log_dir={tmp_path}" in first  # auto_resume never reaches another run's checkpoint
    # run again on the same out: only gan is launched, both its seeds, and seed 1 resumes from its checkpoint
    folder, command = runner.run_families(cfg, tmp_path)
    assert len(calls) == 2 and "model=gan" in calls[1] and "seed=1,2" in calls[1] and "auto_resume=true" in calls[1]
    assert folder == tmp_path / "runs" and "model=vae,gan seed=1,2" in command  # the report's command: the whole
    for seed in (1, 2):  # the second multirun finished gan
        (runner.run_folder(tmp_path, "gan", seed) / "metrics.json").parent.mkdir(parents=True, exist_ok=True)
        (runner.run_folder(tmp_path, "gan", seed) / "metrics.json").write_text("{}")
    # one more seed later: only the third seed of each family
    runner.run_families(compare_cfg(seeds=3), tmp_path)
    assert "model=vae,gan" in calls[2] and "seed=3" in calls[2]
    # other settings on the same out: refused, its runs would not be comparable
    with pytest.raises(ConfigError, match="other settings.*max_time=00:00:01:00"):
        runner.run_families(compare_cfg(max_time="00:00:01:00"), tmp_path)
    assert json.loads((tmp_path / "compare.json").read_text())["settings"][0] == "data=mnist5k"


def test_the_run_folders_are_named_by_family_and_seed(tmp_path):
    """Hydra resolves the sweep's subdir per job: ``<out>/runs/<family>-seed<seed>``."""
    from hydra import compose, initialize_config_dir

    from gensuite import config_dir

    args = [a for a in runner.train_args(compare_cfg(), tmp_path) if a != "-m" and not a.startswith("hydra.")]
    args = [a.split(",")[0] for a in args]  # one job of the sweep
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", [*args, "hydra.sweep.subdir=${hydra:runtime.choices.model}-seed${seed}"],
                      return_hydra_config=True)  # fmt: skip
        from hydra.core.hydra_config import HydraConfig

        HydraConfig.instance().set_config(cfg)
        assert OmegaConf.select(cfg, "hydra.sweep.subdir") == "vae-seed1"


def test_budget_points_are_made_on_the_clock_off_the_clock_and_reproduce(tmp_path, cache_dir):
    """A tiny run with points at 1 and 2 s of a 3 s budget: each point saved and evaluated once, at the batch that
    reaches it, its evaluation not counted as training; eval.py on the saved file gives the same numbers."""
    from gensuite.compare.runs import read_runs
    from gensuite.eval import evaluate
    from gensuite.record import BUDGET_DIR, BUDGET_SECONDS_KEY
    from gensuite.train import train

    from .conftest import SMALL_NETS, TINY, compose_cfg

    metrics = [o for o in TINY if o.startswith("metrics.")] + ["metrics.features=classifier"]
    overrides = [
        "model=vae",
        *SMALL_NETS["vae"],
        *TINY,
        "metrics.features=classifier",
        "trainer.max_epochs=-1",
        "trainer.limit_train_batches=null",
        "trainer.max_time=00:00:00:03",
        "+callbacks.budget_points._target_=gensuite.callbacks.evaluation.BudgetPoints",
        "+callbacks.budget_points.seconds=[1,2]",
        "+callbacks.budget_points.output_dir=${paths.output_dir}",
        f"paths.cache_dir={cache_dir}",
    ]
    run = tmp_path / "run"
    result = train(compose_cfg(overrides, run))
    points = {p.name: json.loads(p.read_text()) for p in (run / BUDGET_DIR).glob("*.json")}
    assert sorted(points) == ["budget_1s.json", "budget_2s.json"]
    # a batch's length on this machine, now (it grows with the load): the clock may pass a point by about one
    train_s = result["metrics"]["time/train_s"]
    batch_s = train_s / max(1, result["metrics"]["train/global_step"])
    slack = 0.5 + 3 * batch_s
    spent = 0.0
    for point in points.values():
        at = point[BUDGET_SECONDS_KEY]
        assert at <= point["budget/train_s"] < at + slack  # the end of the batch that reached it
        assert (run / "checkpoints" / f"budget_{at:g}s.ckpt").is_file() and point["eval/n_samples"] == 200
        spent += point["budget/eval_s"]
    # the evaluations are off the clock: the run trained its 3 s, whatever the points cost
    assert 3.0 <= train_s < 3.0 + slack and spent > 0
    # every number of a budget point is what eval.py says of its checkpoint, with the same settings and seed
    ckpt = run / "checkpoints" / "budget_1s.ckpt"
    again = evaluate(compose_cfg([f"ckpt_path={ckpt}", *metrics, f"paths.cache_dir={cache_dir}",
                                  f"out={tmp_path / 'eval.json'}"], config_name="eval"))  # fmt: skip
    for key in ("val/fid_classifier", "val/precision_classifier", "val/recall_classifier", "val/kid_classifier"):
        assert again[key] == pytest.approx(points["budget_1s.json"][key], rel=1e-6, abs=1e-9), key
    # the comparison reads them back
    (only,) = read_runs(run)
    assert sorted(only.budgets) == [1.0, 2.0] and only.at(2.0).metrics["run/family"] == "vae"


def test_budgets_set_the_clock_and_the_points(tmp_path):
    args = runner.train_args(compare_cfg(budgets=[0.25, 0.5]), tmp_path)
    assert "trainer.max_time=00:00:00:30" in args  # the largest budget
    assert "+callbacks.budget_points.seconds=[15,30]" in args
    with pytest.raises(ConfigError, match="budgets"):
        runner.train_args(compare_cfg(budgets=[0, 1]), tmp_path)


def test_budget_points_after_an_offset_are_named_by_the_whole_clock(tmp_path):
    """Stage 2 of a two-stage entry: its points are of the whole budget, stage 1's seconds (the offset) first."""
    import json
    from pathlib import Path
    from types import SimpleNamespace

    from gensuite.callbacks.evaluation import BudgetPoints
    from gensuite.record import BUDGET_DIR, BUDGET_SECONDS_KEY

    saved = []
    trainer = SimpleNamespace(
        strategy=SimpleNamespace(broadcast=lambda v, src=0: v), is_global_zero=True, global_step=7,
        save_checkpoint=lambda path: saved.append(Path(path).name),
    )  # fmt: skip
    clock = SimpleNamespace(elapsed=0.0, on_validation_start=lambda *a: None)
    points = BudgetPoints([60, 120, 240], str(tmp_path), offset=100)
    points.clock = clock
    assert points.points == [120.0, 240.0]  # 60 s lies inside stage 1: not this run's
    for elapsed in (10.0, 19.0, 20.5, 100.0, 141.0):
        clock.elapsed = elapsed
        points.on_train_batch_end(trainer, None, None, None, 0)
    assert saved == ["budget_120s.ckpt", "budget_240s.ckpt"]
    first = json.loads((tmp_path / BUDGET_DIR / "budget_120s.json").read_text())
    assert first[BUDGET_SECONDS_KEY] == 120.0 and first["budget/train_s"] == 120.5 and first["budget/offset_s"] == 100
    # a resumed stage 2 goes on after the points its restored clock passed
    again = BudgetPoints([60, 120, 240], str(tmp_path), offset=100)
    again.clock = SimpleNamespace(elapsed=30.0, on_validation_start=lambda *a: None)
    again.on_train_start(trainer, None)
    assert again._done(120.0) and not again._done(240.0)
    with pytest.raises(ConfigError, match="offset"):
        BudgetPoints([60], str(tmp_path), offset=-1)
