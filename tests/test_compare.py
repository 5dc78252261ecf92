"""The comparison report from the folders of tiny real runs: every section, one CSV row per family, blanks for
metrics a family does not have."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from gensuite import registry
from gensuite.compare import build_report, read_runs, runner
from gensuite.errors import DataError
from gensuite.train import train

from .conftest import TINY, compose_cfg

FAST = {
    "vae": ["model.encoder.width=8", "model.decoder.width=8"],
    "gan": ["model.decoder.width=8", "model.discriminator.body.width=8"],
}


@pytest.fixture(scope="module")
def runs_folder(tmp_path_factory, cache_dir):
    root = tmp_path_factory.mktemp("compare") / "multirun"
    for i, (family, extra) in enumerate(FAST.items()):
        overrides = [
            f"model={family}",
            *TINY,
            *extra,
            "trainer.max_epochs=2",
            "callbacks.evaluation.every_n_epochs=1",
            "callbacks.evaluation.n_samples_during_fit=100",
            f"paths.cache_dir={cache_dir}",
        ]
        train(compose_cfg(overrides, root / f"{i}-{family}"))
    # a run that died before its final evaluation wrote nothing to compare: it must be skipped
    (root / "9-broken").mkdir()
    return root


def test_report_has_every_section(runs_folder, tmp_path):
    runs = read_runs(runs_folder)
    assert sorted(r.family for r in runs) == ["gan", "vae"]
    assert all(r.curve for r in runs), "FID during training against time was logged"
    paths = build_report(runs, tmp_path / "report", command="python compare.py ...")
    md = paths["report.md"].read_text()
    for section in (
        "FID (classifier)",
        "KID (classifier)",
        "precision (classifier)",
        "recall (classifier)",
        "classes covered",
        "bits/dim",
        "sampling img/s",
        "## Samples",
        "## FID against training time",
        "## Sampling throughput",
        "Reproduce",
    ):
        assert section in md, section
    for figure in ("samples.png", "fid_vs_time.png", "throughput.png", "quality_vs_cost.png"):
        assert (tmp_path / "report" / figure).stat().st_size > 1000
    page = paths["report.html"].read_text()
    assert page.count("data:image/png;base64,") == 4 and "<table>" in page  # self-contained: opens offline


def test_csv_has_one_row_per_family_and_blanks_for_missing_metrics(runs_folder, tmp_path):
    runs = read_runs(runs_folder)
    for r in runs:  # a family without a likelihood, and a metric missing from one run
        r.metrics.pop("val/nll_bpd", None)
    runs[0].metrics.pop("val/kid_classifier")
    paths = build_report(runs, tmp_path / "report")
    rows = list(csv.DictReader(paths["results.csv"].open()))
    assert sorted(r["family"] for r in rows) == ["gan", "vae"]
    assert all(r["bits/dim ↓"] == "" for r in rows)
    missing = next(r for r in rows if r["family"] == runs[0].family)
    assert missing["KID (classifier) ↓"] == ""
    assert all(float(r["FID (classifier) ↓"]) > 0 for r in rows)


def test_seeds_give_mean_and_std(runs_folder, tmp_path):
    runs = read_runs(runs_folder)
    twin = read_runs(runs_folder)[0]
    twin.metrics = {**twin.metrics, "val/fid_classifier": twin.metrics["val/fid_classifier"] + 2.0}
    paths = build_report([*runs, twin], tmp_path / "report")
    row = next(r for r in csv.DictReader(paths["results.csv"].open()) if r["family"] == twin.family)
    assert row["runs"] == "2" and float(row["FID (classifier) ↓ std"]) == pytest.approx(2**0.5, rel=1e-3)
    assert re.search(r"\| \d+\.\d+ \[\d+\.\d+, \d+\.\d+\] \|", paths["report.md"].read_text())  # mean [interval]


def test_no_finished_runs_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no finished run"):
        read_runs(tmp_path)


def test_the_runs_compare_launches_compose_with_a_time_based_validation(monkeypatch, tmp_path):
    """compare.py's multirun overrides (equal time budget, validation on the clock) compose for every family."""
    import subprocess

    from omegaconf import OmegaConf

    from gensuite import compare

    seen = {}

    def fake_run(cmd, **kwargs):
        assert cmd[1:4] == ["-m", "gensuite", "train"] and "cwd" not in kwargs  # the installed module, from any folder
        seen["args"] = cmd[4:]
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(runner.subprocess, "run", fake_run)
    monkeypatch.delenv("GENSUITE_CACHE_DIR", raising=False)
    cfg = OmegaConf.create(
        {"families": ["vae", "diffusion"], "seeds": 1, "data": "mnist5k", "max_time": "00:00:06:00",
         "eval_every_n_seconds": 90, "metrics": {"features": "classifier"}, "overrides": []}
    )  # fmt: skip
    compare.run_families(cfg, tmp_path)
    args = [a for a in seen["args"] if a != "-m" and not a.startswith(("hydra.", "seed=", "model="))]
    assert "trainer.val_check_interval=00:00:01:30" in args
    assert f"paths.cache_dir={tmp_path / 'cache'}" in args  # the comparison writes only under its out
    for family in cfg.families:
        composed = compose_cfg([f"model={family}", *args], tmp_path / family)
        assert composed.trainer.val_check_interval == "00:00:01:30"
        assert composed.trainer.check_val_every_n_epoch == 1  # not the diffusion preset's 15
        assert composed.trainer.max_time == "00:00:06:00" and composed.trainer.max_epochs == -1


def test_compare_takes_a_data_choice_and_its_settings_from_the_command_line():
    """``compare.py data=digits data.batch_size=32`` composes (data is a config group, not a plain string) and every
    run gets that data and that setting; the runs then compose to it."""
    cfg = compose_cfg(["data=digits", "data.batch_size=32"], config_name="compare")
    assert cfg.data.batch_size == 32
    settings = runner.run_settings(cfg, Path("/tmp/out"))
    assert settings[:2] == ["data=digits", "data.batch_size=32"]
    composed = compose_cfg(["model=vae", *settings[:2]])
    assert composed.data._target_.endswith("Digits") and composed.data.batch_size == 32
    assert runner.data_overrides(compose_cfg([], config_name="compare")) == ["data=mnist5k"]


def test_a_family_keeps_its_colour_in_every_figure():
    from gensuite.compare import family_color

    assert [family_color(f) for f in registry.names(from_nothing=True)[:4]] == ["C0", "C1", "C2", "C3"]
    assert family_color("my_family") == family_color("my_family")
