"""Quality against sampling cost on synthetic run folders (no training): every seed's trade-off curve gives each
knob value an interval over seeds, a family without a curve its default point, the Pareto front over all points,
the figure and the table of the report; and the sweeps run on every seed's checkpoint, reusing what is there."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest

from gensuite.compare import Run, build_report, runner
from gensuite.compare.summary import Summary
from gensuite.errors import ConfigError

from .test_compare_stats import record

KNOB = "sampler.steps"


def with_sweep(run: Run, folder: Path, curve: dict[int, tuple[float, float]], json_too: bool = True) -> Run:
    """``run`` moved to ``folder`` with the sweep eval.py writes: steps -> (FID, images/s), one json per value."""
    sweep = folder / f"sweep-{KNOB}"
    sweep.mkdir(parents=True)
    with (sweep / "sweep.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([KNOB, "fid", "images/s", "features"])
        for steps, (fid, speed) in curve.items():
            writer.writerow([steps, fid, speed, "classifier"])
            if json_too:  # every space: the ssl FID is not the headline, and must not be read as it
                record = {"val/fid_classifier": fid, "val/fid_ssl": 3 * fid, "time/sample_images_per_s": speed}
                (sweep / f"{KNOB}={steps}.json").write_text(json.dumps(record))
    run.path = folder
    return run


def comparison(tmp_path: Path) -> list[Run]:
    """Diffusion with two seeds along sampler.steps (5 steps dominated by a vae default point), a vae without a
    curve, and a gan whose default point is dominated by the vae."""
    return [
        with_sweep(
            record("diffusion", 1, 9.0, 20),
            tmp_path / "diffusion-seed1",
            {5: (30.0, 400.0), 10: (12.0, 200.0), 20: (8.0, 100.0)},
        ),  # fmt: skip
        with_sweep(
            record("diffusion", 2, 9.5, 22),
            tmp_path / "diffusion-seed2",
            {5: (32.0, 380.0), 10: (12.5, 210.0), 20: (8.4, 95.0)},
            json_too=False,
        ),  # fmt: skip
        record("vae", 1, 15.0, 4000),
        record("vae", 2, 15.5, 3900),
        record("gan", 1, 16.0, 2000),
    ]


def test_every_knob_value_a_point_with_intervals_and_the_front(tmp_path):
    points = {p.name: p for p in Summary(comparison(tmp_path)).cost_points()}
    assert sorted(points) == sorted(["vae default", "gan default", *(f"diffusion {KNOB}={n}" for n in (5, 10, 20))])
    assert [p.value for p in points.values() if p.knob] == ["5", "10", "20"]  # along the knob, as swept
    ten = points[f"diffusion {KNOB}=10"]
    assert ten.fid.n == 2 and ten.fid.mean == pytest.approx(12.25) and ten.fid.interval is not None  # seeds
    assert ten.seconds.mean == pytest.approx((1 / 200 + 1 / 210) / 2) and ten.seconds.interval is not None
    assert points["vae default"].fid.interval is not None and points["gan default"].fid.interval is None
    on_front = {name for name, p in points.items() if p.on_front}
    # 5 steps: slower and worse than the vae; the gan: slower and worse than the vae
    assert on_front == {"vae default", f"diffusion {KNOB}=10", f"diffusion {KNOB}=20"}


def test_the_report_draws_and_tables_quality_against_cost(tmp_path):
    paths = build_report(comparison(tmp_path), tmp_path / "report")
    md = paths["report.md"].read_text()
    assert "## Quality against sampling cost" in md
    assert f"Pareto front (no other point both faster and better): vae default, diffusion {KNOB}=10, " in md
    assert "![Quality against sampling cost](quality_vs_cost.png)" in md
    assert paths["quality_vs_cost"].stat().st_size > 1000
    table = md[md.index("| family | knob value |") :].split("\n\n")[0].splitlines()
    assert table[0] == "| family | knob value | s / sample | FID (classifier) ↓ | Pareto front |"
    rows = {r.split(" | ")[0].strip("| ") + " " + r.split(" | ")[1]: r for r in table[2:]}
    assert rows[f"diffusion {KNOB}=5"].endswith("| no |") and rows[f"diffusion {KNOB}=20"].endswith("| yes |")
    assert "| 31.00 [" in rows[f"diffusion {KNOB}=5"]  # FID over both seeds, its interval
    assert "(one seed)" in rows["gan default"] and rows["gan default"].endswith("| no |")
    assert "<h2>Quality against sampling cost</h2>" in paths["report.html"].read_text()


def test_without_curves_every_family_is_its_default_point(tmp_path):
    runs = [record("vae", 1, 15.0, 4000), record("diffusion", 1, 9.0, 20)]
    points = Summary(runs).cost_points()
    assert {p.name: p.on_front for p in points} == {"vae default": True, "diffusion default": True}


def test_curves_sweep_every_seed_and_reuse_what_is_there(tmp_path, monkeypatch):
    runs = []
    for family, seed in (("diffusion", 1), ("diffusion", 2), ("gan", 1)):
        path = tmp_path / f"{family}-seed{seed}"
        (path / "checkpoints").mkdir(parents=True)
        (path / "checkpoints" / "last.ckpt").write_bytes(b"")
        runs.append(Run(path, {"run/family": family}))
    with_sweep(runs[0], runs[0].path, {5: (30.0, 400.0)})  # seed 1 swept before: reused
    (runs[1].path / "sweep-sampling.truncation").mkdir()  # another knob's sweep is not this one
    (runs[1].path / "sweep-sampling.truncation" / "sweep.csv").write_text("sampling.truncation,fid\n1,2\n")
    calls = []
    monkeypatch.setattr(runner.subprocess, "run", lambda cmd: calls.append(cmd) or subprocess.CompletedProcess(cmd, 0))
    args = {"diffusion": f"sampler=ddim sweep={KNOB}=5,10,20"}
    assert runner.run_curves(runs, args) == ["gan: no curve_args.gan, no curve"]
    assert [c[4:] for c in calls] == [[f"ckpt_path={runs[1].checkpoint}", "sampler=ddim", f"sweep={KNOB}=5,10,20"]]
    with pytest.raises(ConfigError, match="curve_args.diffusion"):
        runner.run_curves(runs, {"diffusion": "sampler=ddim"})
