"""The comparison's statistics and report on synthetic run records (no training): intervals over seeds, Welch's
verdicts, Kendall's tau between feature spaces, the Pareto front, the claims, and the rendered report."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from scipy import stats as sps

from gensuite import config_dir, registry
from gensuite.compare import Run, build_report, runner, stats
from gensuite.compare.claims import NOT_MEASURED, UNDECIDED, across, check_claims, over_budgets
from gensuite.compare.columns import columns, known_families
from gensuite.compare.summary import Summary
from gensuite.record import SPACE_METRICS, space_key

CLAIMS = OmegaConf.to_container(OmegaConf.load(config_dir() / "compare.yaml").claims)


def record(family: str, seed: int, fid: float, img_s: float, *, fid_ssl: float | None = None, **extra) -> Run:
    """One run's metrics.json as train.py writes it, in the classifier (headline) and ssl spaces."""
    metrics = {
        "run/family": family,
        "run/data": "mnist5k",
        "run/seed": seed,
        "eval/features": "classifier",
        "eval/feature_spaces": "classifier,ssl",
        "eval/n_samples": 2000,
        space_key("fid", "classifier"): fid,
        space_key("fid", "ssl"): fid * 3 if fid_ssl is None else fid_ssl,
        space_key("kid", "classifier", "floor"): 0.002,
        space_key("precision", "classifier"): extra.pop("precision", 0.6),
        space_key("recall", "classifier"): extra.pop("recall", 0.6),
        "time/sample_images_per_s": img_s,
        **extra,
    }
    return Run(Path(f"/nonexistent/{family}-{seed}"), metrics)


def seeded(family, fids, img_s, **extra) -> list[Run]:
    return [record(family, i + 1, f, img_s * (1 + 0.01 * i), **extra) for i, f in enumerate(fids)]


# -- stats ----------------------------------------------------------------------------------------------------------
def test_t_interval_contains_the_mean_matches_scipy_and_shrinks_with_n():
    few = stats.estimate([10.0, 12.0, 11.0])
    lo, hi = few.interval
    assert lo < few.mean < hi and few.mean == pytest.approx(11.0)
    ref = sps.t.interval(0.95, 2, loc=11.0, scale=sps.sem([10.0, 12.0, 11.0]))
    assert (lo, hi) == pytest.approx(ref)
    many = stats.estimate([10.0, 12.0, 11.0] * 4)
    width = lambda e: e.interval[1] - e.interval[0]  # noqa: E731
    assert width(many) < width(few)
    one = stats.estimate([3.0])
    assert one.interval is None and one.mean == 3.0
    assert stats.estimate([]) is None and stats.estimate([float("nan")]) is None


def test_intervals_of_bounded_metrics_stay_in_their_range():
    # the report's FID 41 ± 248 of two seeds: the raw t-interval reaches -207
    raw = stats.estimate([21.5, 60.5])
    assert raw.interval[0] < -200
    fid = stats.estimate([21.5, 60.5], lower=0.0)
    assert fid.scale == "log-t" and 0 < fid.interval[0] < 21.5 and fid.interval[1] > 60.5 and fid.mean == 41.0
    # the log-t interval is the t-interval of log(x), back-transformed
    import math

    logs = sps.t.interval(0.95, 2, loc=sps.tmean(list(map(math.log, [5.0, 6.0, 9.0]))),
                          scale=sps.sem(list(map(math.log, [5.0, 6.0, 9.0]))))  # fmt: skip
    assert stats.estimate([5.0, 6.0, 9.0], lower=0.0).interval == pytest.approx(tuple(map(math.exp, logs)))
    for values in ([0.01, 0.9], [0.2, 0.25, 0.99], [0.5, 0.5001]):
        share = stats.estimate(values, lower=0.0, upper=1.0)
        assert share.scale == "logit-t" and 0 <= share.interval[0] < share.interval[1] <= 1
    # a value on the bound (recall 0 of a collapsed model): the t-interval, cut to the range
    cut = stats.estimate([0.0, 0.4], lower=0.0, upper=1.0)
    assert cut.scale == "t, clipped" and cut.interval == (0.0, 1.0)
    # the table's ranges: positive for FID, speeds and bits/dim, [0, 1] for shares, none for KID
    from gensuite.compare.columns import bounds

    assert bounds(space_key("fid", "ssl")) == (0.0, None) and bounds("time/sample_images_per_s") == (0.0, None)
    assert bounds(space_key("recall", "classifier")) == (0.0, 1.0) and bounds("val/coverage_classes") == (0.0, None)
    assert bounds(space_key("kid", "classifier")) == (None, None) and bounds("val/nll_bpd") == (0.0, None)


def test_seeds_to_resolve_a_difference():
    a, b = [10.0, 12.0, 11.0], [11.0, 13.0, 12.0]  # a difference of 1 at a per-seed sd of 1
    n = stats.seeds_to_resolve(a, b)
    assert n == 9  # t(0.975, 16) * sqrt(2 / 9) = 0.9995 < 1; t(0.975, 14) * sqrt(2 / 8) = 1.07

    def seeds(k: int, mean: float) -> list[float]:  # k values with exactly this mean and a sd of 1
        z = np.linspace(-1, 1, k)
        return list(mean + z / z.std(ddof=1))

    assert stats.welch(seeds(n, 10.0), seeds(n, 11.0)).significant
    assert not stats.welch(seeds(n - 1, 10.0), seeds(n - 1, 11.0)).significant
    assert stats.seeds_to_resolve([1.0, 1.0], [2.0, 2.0]) is None  # no spread: nothing to scale
    assert stats.seeds_to_resolve([1.0, 2.0], [1.0, 2.0]) is None  # no difference
    assert stats.seeds_to_resolve([1.0], [2.0, 3.0]) is None


def test_crossings_of_synthetic_curves():
    times = [60.0, 120.0, 240.0, 480.0]
    # a falls from 10 to 4, b stays at 7: a crosses b between 120 s (a=8) and 240 s (a=6), at 180 s
    a = [[10.0 + e, 8.0 + e, 6.0 + e, 4.0 + e] for e in (-0.2, 0.0, 0.2)]
    b = [[7.0 + e] * 4 for e in (-0.1, 0.0, 0.1)]
    x = stats.crossing(times, a, b)
    assert x.at == pytest.approx(180.0) and x.share == 1.0
    lo, hi = x.interval
    assert 120 <= lo < 180 < hi <= 240
    # parallel curves: no crossing, and the resamples agree
    parallel = stats.crossing(times, a, [[c - 1 for c in curve] for curve in a])
    assert parallel.at is None and parallel.interval is None and parallel.share == 0.0
    # one seed a side: the crossing without an interval
    single = stats.crossing(times, a[:1], b[:1])
    assert single.at is not None and single.interval is None
    # a zero between two signs is the crossing; touching zero without changing sign is none
    assert stats.first_crossing(times, [1.0, 0.0, -1.0, -2.0]) == 120.0
    assert stats.first_crossing(times, [1.0, 0.0, 1.0, 2.0]) is None


def test_welch_verdicts():
    apart = stats.welch([1.0, 1.1, 0.9, 1.05], [5.0, 5.2, 4.9, 5.1])
    assert apart.significant and apart.verdict == "significant" and apart.interval[1] < 0
    assert apart.p == pytest.approx(sps.ttest_ind([1.0, 1.1, 0.9, 1.05], [5.0, 5.2, 4.9, 5.1], equal_var=False).pvalue)
    overlap = stats.welch([1.0, 2.0, 3.0], [1.5, 2.5, 2.0])
    assert overlap.significant is False and overlap.interval[0] < 0 < overlap.interval[1]
    single = stats.welch([1.0], [5.0, 5.1])
    assert single.significant is None and single.verdict == "one seed: no interval" and single.diff == -4.05
    # every seed the same on both sides (a parameter count, a class count): an exact difference, not a test
    exact = stats.welch([10.0, 10.0, 10.0], [9.0, 9.0])
    assert exact.interval == (1.0, 1.0) and exact.p is None
    assert exact.verdict == "no spread over seeds: exact difference"
    assert stats.welch([3.0, 3.0], [3.0, 3.0]).verdict == "no spread over seeds: equal"


def test_kendall_tau():
    assert stats.kendall_tau(["a", "b", "c"], ["a", "b", "c"]) == 1
    assert stats.kendall_tau(["a", "b", "c"], ["c", "b", "a"]) == -1
    order, other = ["a", "b", "c", "d"], ["b", "a", "c", "d"]
    tau = sps.kendalltau([0, 1, 2, 3], [other.index(x) for x in order]).statistic
    assert stats.kendall_tau(order, other) == pytest.approx(tau)
    assert stats.kendall_tau(["a", "b"], ["a", "x"]) is None  # one name in common


def test_pareto_front():
    points = {"fast_bad": (0.001, 40.0), "slow_good": (1.0, 5.0), "middle": (0.01, 10.0), "dominated": (0.1, 20.0)}
    assert stats.pareto_front(points) == ["fast_bad", "middle", "slow_good"]
    assert stats.pareto_front({"tie": (1.0, 1.0), "worse": (1.0, 2.0)}) == ["tie"]


# -- what the report is built from ----------------------------------------------------------------------------------
def test_columns_follow_the_evaluators_declarations():
    keys = {c.key for c in columns("ssl")}
    assert {space_key(m, "ssl") for m in SPACE_METRICS} <= keys
    assert not any(k.endswith("_classifier") for k in keys)
    # every family of conf/model, those that train from nothing (compare.py's families=all) first
    assert {p.stem for p in (config_dir() / "model").glob("*.yaml")} == set(known_families())
    trainable = registry.names(from_nothing=True)
    assert known_families()[: len(trainable)] == tuple(trainable) and "flow_matching" in trainable


def three_families(diffusion_fids=(10.0, 10.5, 9.8)) -> list[Run]:
    return [
        *seeded("vae", [15.0, 15.5, 14.8], 4000, recall=0.55, precision=0.55),
        *seeded("gan", [16.0, 16.4, 15.9], 2000, recall=0.45, precision=0.66),
        *seeded("diffusion", list(diffusion_fids), 25, recall=0.7, precision=0.64),
    ]


def by_check(claims):
    return {(c.family, f.check): f for c in claims for f in c.findings}


def test_claims_reflect_the_data():
    found = by_check(check_claims(Summary(three_families()), CLAIMS))
    assert found["diffusion", "best quality"].answer == "yes"
    assert "next best vae" in found["diffusion", "best quality"].evidence
    assert "significant" in found["diffusion", "best quality"].evidence
    assert found["diffusion", "slow sampling"].answer == "yes"
    assert "107× slower than the median of the other families" in found["diffusion", "slow sampling"].evidence
    assert "81× faster than the median" in found["vae", "fast sampling"].evidence  # 1/4000 s; median of 1/2000, 1/25
    assert found["vae", "fast sampling"].answer == "yes" and found["vae", "less detail"].answer == "yes"
    assert found["gan", "weak diversity"].answer == "yes" and found["gan", "sharp"].answer == "yes"
    # the same claims against other numbers: diffusion now the worst
    worse = by_check(check_claims(Summary(three_families(diffusion_fids=(30.0, 31.0, 29.0))), CLAIMS))
    assert worse["diffusion", "best quality"].answer == "no"
    assert "vs best vae" in worse["diffusion", "best quality"].evidence
    assert worse["vae", "less detail"].answer == "no"


def test_an_absent_family_is_not_measured():
    found = by_check(check_claims(Summary(three_families()), CLAIMS))
    assert found["transformer", "exact likelihood"].answer == NOT_MEASURED
    assert found["transformer", "sequences"].answer == NOT_MEASURED
    without = by_check(check_claims(Summary([r for r in three_families() if r.family != "diffusion"]), CLAIMS))
    assert without["diffusion", "best quality"].answer == NOT_MEASURED
    assert without["diffusion", "slow sampling"].answer == NOT_MEASURED
    assert without["vae", "fast sampling"].answer == "yes"  # still measured against the others


def test_the_likelihood_claim_reads_the_kind_of_likelihood():
    runs = [
        *seeded("transformer", [40.0, 41.0], 10, **{"val/nll_bpd": 1.1, "run/likelihood": "exact"}),
        *seeded("diffusion", [10.0, 11.0], 25, **{"val/nll_bpd": 2.4, "run/likelihood": "upper bound"}),
    ]
    found = by_check(check_claims(Summary(runs), CLAIMS))
    assert found["transformer", "exact likelihood"].answer == "yes"
    assert "(exact); lowest of 2 families with one: yes" in found["transformer", "exact likelihood"].evidence


def test_the_feature_spaces_agree_or_not():
    agree = Summary(three_families())
    assert agree.rankings() == {"classifier": ["diffusion", "vae", "gan"], "ssl": ["diffusion", "vae", "gan"]}
    assert agree.agreement() == ({("classifier", "ssl"): 1.0}, True)
    runs = three_families()
    for r in runs:  # in ssl features the order is reversed
        r.metrics[space_key("fid", "ssl")] = 100 - r.metrics[space_key("fid", "classifier")]
    taus, same = Summary(runs).agreement()
    assert taus[("classifier", "ssl")] == -1 and same is False


# -- the report ----------------------------------------------------------------------------------------------------
def test_report_from_records_without_training(tmp_path):
    runs = three_families()
    sweep = tmp_path / "vae-1" / "sweep-sampling.temperature"
    sweep.mkdir(parents=True)
    (sweep / "sweep.csv").write_text("sampling.temperature,fid,precision\n0.6,14.1,0.7\n1.0,15.0,0.6\n")
    runs[0].path = tmp_path / "vae-1"  # the first vae run has a trade-off curve beside it
    paths = build_report(runs, tmp_path / "report")
    md, page = paths["report.md"].read_text(), paths["report.html"].read_text()
    assert md.index("## Common wisdom, measured") < md.index("## Results")  # the claims open the report
    assert "| FID (classifier) ↓ | diffusion − vae |" in md and "significant (diffusion better)" in md
    assert "Kendall's tau, classifier vs ssl: +1.00" in md and "Same order in every feature space: yes" in md
    assert "Pareto front (no other point both faster and better): vae default, diffusion default." in md
    assert "![Quality against sampling cost](quality_vs_cost.png)" in md
    assert paths["quality_vs_cost"].stat().st_size > 1000
    assert "## Trade-off curves" in md and "| 0.6 | 14.1 | 0.7 |" in md
    assert "<h2>Verdicts: every pair of families</h2>" in page and "Same order in every feature space: yes" in page
    assert page.count("data:image/png;base64,") == 3  # final FIDs, throughput, cost: no sample grid or sweep.png
    header = paths["results.csv"].read_text().splitlines()[0]
    assert "FID (classifier) ↓ ci95" in header and "density (classifier) ↑" in header
    assert "KID floor (classifier)" in header


def test_one_seed_reports_no_interval(tmp_path):
    runs = [record("vae", 1, 15.0, 4000), record("gan", 1, 16.0, 2000)]
    md = build_report(runs, tmp_path / "report")["report.md"].read_text()
    assert "15.00 (one seed)" in md
    assert "| FID (classifier) ↓ | gan − vae | 1 | n/a | one seed: no interval |" in md
    assert "difference -1, one seed: no interval" in md  # the claims say so too


# -- the curves ----------------------------------------------------------------------------------------------------
def test_curves_run_eval_sweeps_once_per_run(tmp_path, monkeypatch):
    runs = []
    for family in ("vae", "gan", "gan"):
        path = tmp_path / f"{family}-{len(runs)}"
        (path / "checkpoints").mkdir(parents=True)
        (path / "checkpoints" / "last.ckpt").write_bytes(b"")
        runs.append(Run(path, {"run/family": family}))
    (runs[0].path / "sweep-sampling.temperature").mkdir()  # made before: reused
    (runs[0].path / "sweep-sampling.temperature" / "sweep.csv").write_text("sampling.temperature,fid\n1,2\n")
    calls = []
    monkeypatch.setattr(runner.subprocess, "run", lambda cmd: calls.append(cmd) or subprocess.CompletedProcess(cmd, 0))
    args = OmegaConf.to_container(OmegaConf.load(config_dir() / "compare.yaml").curve_args)
    notes = runner.run_curves(runs, {**args, "vae": args["vae"]})
    assert notes == [] and len(calls) == 2  # gan on each seed; vae's curve exists
    assert calls[0][1:4] == ["-m", "gensuite", "eval"]
    assert [c[4:] for c in calls] == [
        [f"ckpt_path={r.path / 'checkpoints' / 'last.ckpt'}", "sweep=sampling.truncation=0.5,1,2"] for r in runs[1:]
    ]
    assert runner.run_curves(runs, {"vae": args["vae"]}) == ["gan: no curve_args.gan, no curve"]


def test_a_family_level_with_the_others_is_neither_sharp_nor_weak():
    runs = [
        *seeded("vae", [15.0, 15.5, 14.8], 4000, recall=0.0, precision=0.0),
        *seeded("gan", [16.0, 16.4, 15.9], 2000, recall=0.0, precision=0.0),
        *seeded("diffusion", [10.0, 10.5, 9.8], 25, recall=0.0, precision=0.0),
    ]
    found = by_check(check_claims(Summary(runs), CLAIMS))
    for check in ("sharp", "weak diversity"):
        assert found["gan", check].answer == "no" and "level with the median" in found["gan", check].evidence


# -- undecided, the reference, the curves ---------------------------------------------------------------------------
def test_a_claim_without_a_significant_difference_is_undecided_not_no():
    # vae and gan overlap: "vae: less detail" is neither shown nor refuted (the report used to print "no")
    runs = [*seeded("vae", [40.0, 42.0], 4000), *seeded("gan", [41.0, 60.0], 2000)]
    found = by_check(check_claims(Summary(runs), CLAIMS))
    less = found["vae", "less detail"]
    assert less.answer == UNDECIDED and "not significant" in less.evidence
    assert "seeds per family would resolve a difference this size" in less.evidence
    # significant the other way: no
    runs = [*seeded("vae", [10.0, 10.5, 9.8], 4000), *seeded("gan", [16.0, 16.4, 15.9], 2000)]
    assert by_check(check_claims(Summary(runs), CLAIMS))["vae", "less detail"].answer == "no"
    # one seed: no test, no answer
    one = by_check(check_claims(Summary([record("vae", 1, 15.0, 4000), record("gan", 1, 16.0, 20)]), CLAIMS))
    assert (
        one["vae", "less detail"].answer == UNDECIDED and "one seed: run seeds=3" in one["vae", "less detail"].evidence
    )
    assert one["gan", "sharp"].answer == UNDECIDED  # one seed each: even equal precisions are no test


def test_the_report_states_its_reference_and_keeps_intervals_in_range(tmp_path):
    runs = [
        *seeded("vae", [21.5, 60.5], 4000, **{"eval/n_reference": 500, space_key("fid", "classifier", "floor"): 0.26}),
        *seeded("gan", [16.0, 16.4], 2000),
    ]
    for r in runs:
        r.config = {"data": {"split_seed": 0}}
    paths = build_report(runs, tmp_path / "report")
    md = paths["report.md"].read_text()
    top = md.index("## What is measured against what")
    assert top < md.index("## Common wisdom, measured")
    assert "Reference: the held-out test split of data=mnist5k, 500 images, fixed by data.split_seed=0" in md
    assert "FID 0.26, KID 0.0020" in md and "logarithm" in md
    row = next(r for r in csv.DictReader(paths["results.csv"].open()) if r["family"] == "vae")
    assert 0 < float(row["FID (classifier) ↓ ci95 lo"]) < 21.5  # not 41 - 248
    assert "41.00 [0.05, 25801.99]" in md


def budget_runs(fids_at: dict[str, list[list[float]]], budgets=(60.0, 120.0, 240.0, 480.0)) -> list[Run]:
    """Runs with budget points: per family, one FID curve per seed (one value per budget)."""
    runs = []
    for family, curves in fids_at.items():
        for seed, curve in enumerate(curves, start=1):
            r = record(family, seed, curve[-1], 4000 if family == "vae" else 25)
            r.budgets = {
                b: {**r.metrics, space_key("fid", "classifier"): f} for b, f in zip(budgets, curve, strict=True)
            }
            runs.append(r)
    return runs


def test_claims_and_crossings_over_the_budget_points(tmp_path):
    # diffusion starts worse than the vae and overtakes it between 2 and 4 minutes
    runs = budget_runs({
        "vae": [[20.0, 15.0, 13.0, 12.0], [20.5, 15.2, 13.1, 12.2], [19.8, 14.9, 12.8, 11.9]],
        "diffusion": [[40.0, 16.0, 8.0, 5.0], [41.0, 16.1, 8.2, 5.1], [39.0, 15.9, 7.9, 4.9]],
    })  # fmt: skip
    s = Summary(runs)
    assert s.budgets == [60.0, 120.0, 240.0, 480.0]
    checks = {(c.family, c.check): c for c in over_budgets(s, CLAIMS)}
    best = checks["diffusion", "best quality"]
    assert [f.answer for f in best.findings.values()] == ["no", "no", "yes", "yes"]
    assert best.sentence == "no from 1 min to 2 min, yes from 4 min" and best.flips
    assert not checks["diffusion", "slow sampling"].flips
    (column, a, b, x), *_ = s.crossings()
    assert {a, b} == {"vae", "diffusion"} and 120 < x.at < 240 and x.share == 1.0 and x.interval is not None
    assert across([(60.0, "no"), (120.0, UNDECIDED), (240.0, "yes"), (480.0, "yes")]) == (
        "no at 1 min, undecided at 2 min, yes from 4 min"
    )
    md = build_report(runs, tmp_path / "report")["report.md"].read_text()
    assert "## Curves over the training clock" in md
    # the answer first: the curves before the final budget's claims, and the best family at each budget
    assert md.index("## Curves over the training clock") < md.index("## Common wisdom, measured")
    assert "At the final budget (8 min of training)." in md
    assert "- 1 min: vae 20.10 [" in md and "next diffusion 40.00 [" in md
    assert "- 8 min: diffusion 5.00 [" in md and "(FID (classifier) ↓): significant" in md
    assert (
        "| diffusion | best quality, slow sampling | best quality | no from 1 min to 2 min, yes from 4 min (flips" in md
    )
    assert "| FID (classifier) ↓ | diffusion − vae |" in md and "![Curves over the training clock](curves.png)" in md
    # parallel curves: no crossing
    parallel = budget_runs({"vae": [[20.0, 15.0, 13.0, 12.0]] * 2, "gan": [[21.0, 16.0, 14.0, 13.0]] * 2})
    parallel[0].budgets[60.0][space_key("fid", "classifier")] += 0.1  # some spread
    assert Summary(parallel).crossings()[0][3].at is None
    md = build_report(parallel, tmp_path / "parallel")["report.md"].read_text()
    assert "no crossing within the budgets" in md


def test_a_two_stage_entry_without_its_first_points_is_compared_where_it_has_them(tmp_path):
    """A two-stage entry samples only after its stage 1: it lacks the first budget points. The others keep every
    point, the entry is absent (—) where it has none, and crossings use the points both sides have."""
    runs = budget_runs({"vae": [[20.0, 15.0, 13.0, 12.0], [20.5, 15.2, 13.1, 12.2]]})
    late = budget_runs({"vq_transformer": [[11.0, 10.0], [11.3, 10.1]]}, budgets=(240.0, 480.0))
    s = Summary(runs + late)
    assert s.budgets == [60.0, 120.0, 240.0, 480.0] and s.family_budgets("vq_transformer") == [240.0, 480.0]
    assert s.at(60.0).families == ["vae"] and set(s.at(480.0).families) == {"vae", "vq_transformer"}
    assert list(s.curve("vq_transformer", space_key("fid", "classifier"))) == [240.0, 480.0]
    (column, a, b, x), *_ = s.crossings()
    assert {a, b} == {"vae", "vq_transformer"} and x.at is None  # better at both of its points: no crossing
    md = build_report(runs + late, tmp_path / "report")["report.md"].read_text()
    assert "vq_transformer: no sample at the first point(s) (—)" in md
    row = next(line for line in md.splitlines() if line.startswith("| vq_transformer |") and "—" in line)
    assert row.count("—") == 2
