"""The parts of benchmarks/peers that need no peer library and no training: the splits, the sample files, the
choice of trials on the validation split, the skipping of measured rows, and the statistics of the table."""

import math

import numpy as np
import pytest
import torch

from benchmarks import peers
from benchmarks.peers import measure, results
from benchmarks.peers.suite import hms, override
from gensuite.runs.sample_files import read_samples

VAL, TEST = measure.SELECT["image"], "val/fid_classifier"


def test_text_splits_are_whole_topics_in_order_and_disjoint():
    raw = bytes(range(256)) * 40  # 10,240 bytes
    s = measure.text_splits(raw)
    assert s["fit"] + s["val"] + s["test"] == raw  # in order, every byte once
    assert len(s["test"]) == 1024 and len(s["val"]) == round(9216 * 0.1)


def test_pydoc_splits_hold_out_the_last_topics():
    from pydoc_data.topics import topics

    s = measure.text_splits()
    text = {k: topics[k].strip("\n").encode() for k in sorted(topics)}
    where = {k: [part for part in ("fit", "val", "test") if t in s[part]] for k, t in text.items() if len(t) > 200}
    assert where[sorted(topics)[-1]] == ["test"]
    inside = {part: [k for k, parts in where.items() if parts == [part]] for part in ("fit", "val", "test")}
    assert inside["val"] and max(inside["fit"]) < min(inside["val"]) <= max(inside["val"]) < min(inside["test"])
    assert sum(parts == [] for parts in where.values()) <= 2  # only the topics at the two cuts are shared


def test_written_samples_are_uint8_nhwc_as_eval_reads_them(tmp_path):
    images = torch.rand(5, 1, 28, 28)
    images[0, 0, 0, 0], images[0, 0, 0, 1] = 1.7, -0.3  # out of range: clamped, never wrapped
    array, source = read_samples(measure.write_samples(tmp_path / "peer.npz", images), channels=1)
    assert array.dtype == np.uint8 and array.shape == (5, 28, 28, 1) and "key 'samples'" in source
    assert array[0, 0, 0, 0] == 255 and array[0, 0, 1, 0] == 0
    expected = (images[1:].clamp(0, 1) * 255 + 0.5).floor().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(array[1:], expected)


def test_bits_per_byte_scores_every_full_window_once():
    text = bytes(range(256)) * 3 + b"tail"  # the partial window is left out
    seen = []

    def uniform(windows):
        seen.append(windows)
        return torch.full(windows.shape, math.log(256), dtype=torch.float64)

    assert measure.bits_per_byte(uniform, text, context=256) == 8.0
    assert bytes(torch.cat(seen).flatten().tolist()) == text[:768]
    half = measure.bits_per_byte(lambda w: (w % 2).double() * math.log(4), text, context=256)
    assert abs(half - 1.0) < 1e-12  # 0 nats for even bytes, 2 bits for odd ones


def trial(val: float, test: float, **extra) -> list[dict]:
    return [{"metrics": {VAL: val, TEST: test}, "variant": "default"} | extra]


def test_a_trial_is_chosen_on_validation_never_on_the_held_out_split():
    better_on_test = trial(val=9.0, test=1.0)
    better_on_val = trial(val=5.0, test=8.0)
    assert results.choose([better_on_test, better_on_val], VAL) == 1
    with pytest.raises(ValueError, match="validation key"):
        results.choose([better_on_test, better_on_val], TEST)


def test_a_trial_scores_its_best_variant_and_nan_never_wins():
    two_variants = [{"metrics": {VAL: 7.0}}, {"metrics": {VAL: 3.0}}]
    broken = [{"metrics": {VAL: math.nan}}]
    assert results.score(two_variants, VAL) == 3.0
    assert results.choose([broken, trial(4.0, 4.0), two_variants], VAL) == 2
    with pytest.raises(ValueError, match="no training has a finite"):
        results.choose([broken], VAL)


def test_trials_scale_the_rate_then_turn_the_knob_at_the_best_rate():
    recipe = {"settings": {"lr": 1e-3, "w": 1}, "lr": ("lr",), "lr_factors": (1 / 3, 3), "knob": {"w": 2}}
    grid = [peers.trial_settings(recipe, i, [], VAL) for i in range(3)]
    assert [s["lr"] for s in grid] == [1e-3, 3.333e-4, 3e-3] and all(s["w"] == 1 for s in grid)
    earlier = [trial(6.0, 1.0, settings=grid[0]), trial(2.0, 9.0, settings=grid[1]), trial(4.0, 0.5, settings=grid[2])]
    assert peers.trial_settings(recipe, 3, earlier, VAL) == {"lr": 3.333e-4, "w": 2}


def fake_text_recipe(calls: list) -> dict:
    def train(settings, data, seconds, seed):
        calls.append((settings, seconds, seed))
        uniform = lambda w: torch.full(w.shape, math.log(256), dtype=torch.float64)  # noqa: E731
        return {"steps": 3, "train_s": seconds, "parameters": 10}, uniform

    return {"name": "fake", "variants": ("-",), "train": train, "fingerprint": "f1"}


def test_a_rerun_skips_the_trainings_already_in_the_file(tmp_path):
    path, calls = tmp_path / "peers.jsonl", []
    recipe, data = fake_text_recipe(calls), {"val": bytes(512), "test": bytes(256)}
    row = {"stage": "final", "family": "text", "side": "peer", "config": "tuned", "trial": None, "seed": 1,
           "budget_s": 60.0, "n": None, "settings": {"lr": 1e-3}}  # fmt: skip
    first = peers.Run(path, tmp_path, {"commit": "abc"})
    (measured,) = first.measure(recipe, data, **row)
    assert measured["metrics"] == {"bpb_val": 8.0, "bpb_test": 8.0} and len(calls) == 1
    assert len(measured["load_before"]) == 3 and measured["commit"] == "abc" and measured["date"]
    first.measure(recipe, data, **row)
    assert len(calls) == 1  # the same invocation: measured already

    again = peers.Run(path, tmp_path, {"commit": "def"})  # a stopped run, started again
    again.done = results.by_training(results.read_rows(path))
    assert again.measure(recipe, data, **row)[0]["commit"] == "abc" and len(calls) == 1
    for changed in ({"seed": 2}, {"budget_s": 30.0}, {"settings": {"lr": 3e-3}}):
        again.measure(recipe, data, **(row | changed))
    assert len(calls) == 4  # another seed, budget or setting is another training
    again.measure(recipe | {"fingerprint": "f2"}, data, **row)
    assert len(calls) == 5  # a changed suite default is too
    assert len(results.read_rows(path)) == 5

    with open(path, "a") as f:
        f.write('{"stage": "fin')  # a line cut off by a kill
    assert len(results.read_rows(path)) == 5


def test_closer_to_the_floor_is_the_ratio_of_the_distances_on_the_log_scale():
    floor = 1.5
    peer, suite = [floor + 4.0, floor + 8.0, floor + 6.0], [floor + 2.0, floor + 1.0, floor + 1.5]
    ratio, (lo, hi) = results.floor_ratio(peer, suite, floor)
    geometric = lambda xs: math.exp(sum(math.log(x - floor) for x in xs) / len(xs))  # noqa: E731
    assert ratio == pytest.approx(geometric(peer) / geometric(suite))
    assert 0 < lo < ratio < hi
    assert results.floor_ratio(peer, [floor + 3.0, floor + 3.0, floor + 3.0], floor)[1] is not None
    one_seed = results.floor_ratio([floor + 4.0], [floor + 2.0], floor)
    assert one_seed[0] == pytest.approx(2.0) and one_seed[1] is None
    at_floor = results.floor_ratio(peer, [floor, floor + 1.0], floor)
    assert math.isnan(at_floor[0]) and at_floor[1] is None and results.ratio_cell(at_floor) == "-"


def test_fid_intervals_over_seeds_stay_positive():
    e = results.estimate([21.5, 60.5], TEST)
    assert e.scale == "log-t" and 0 < e.interval[0] < 21.5 and e.interval[1] > 60.5  # raw t would reach -207
    assert results.estimate([1.9, 1.8, 2.0], "bpb_test").scale == "log-t"
    assert results.cell([2.0, 2.2, 2.1], TEST, ".2f").startswith("2.10 [")


def test_the_tables_mark_the_choice_and_give_every_peer_row_a_ratio():
    def row(stage, side, seed, fid, val, trial=None, variant="default", settings=None):
        return {"stage": stage, "family": "gan", "side": side, "config": f"trial {trial}" if stage == "tune" else
                "tuned", "trial": trial, "seed": seed, "budget_s": 60.0, "n": 100, "settings": settings or {},
                "fingerprint": None, "implementation": side, "variant": variant, "train_s": 60.0, "steps": 9,
                "parameters": 1000, "sample_s_per_image": 0.01, "load_before": [1, 1, 1], "load_after": [2, 2, 2],
                "date": "2026-12-07", "commit": "abc", "metrics": {TEST: fid, VAL: val, "val/fid_classifier_floor": 1.0,
                "val/fid_ssl": fid / 10, "val/fid_ssl_floor": 0.05}}  # fmt: skip

    rows = [
        row("tune", "peer", 0, 1.0, 9.0, 0, settings={"lr": 1}),
        row("tune", "peer", 0, 8.0, 3.0, 1, settings={"lr": 3}),
    ]
    rows += [row("final", "peer", s, 5.0 + s, 5.0, variant=v) for s in (1, 2, 3) for v in ("raw", "ema")]
    rows += [row("final", "suite", s, 2.0 + s / 10, 2.0) for s in (1, 2, 3)]
    tuning = results.tuning_table(rows)
    assert tuning[2].endswith("| 9.000 | 1.000 |  |") and tuning[3].endswith("| 3.000 | 8.000 | yes |")
    assert "lr=3" in tuning[3]
    images = results.image_table(rows)
    assert len(images) == 2 + 3  # peer raw, peer ema, the suite
    assert all("[" in line.split("|")[12] for line in images[2:4])  # the ratio's interval
    assert "1 (the suite)" in images[4]


def test_suite_overrides_and_budgets_are_written_as_hydra_reads_them():
    assert override("callbacks.ema", None) == "callbacks.ema=null"
    assert override("model.optimizer.betas", [0.9, 0.95]) == "model.optimizer.betas=[0.9,0.95]"
    assert override("model.optimizer.lr", 3.333e-4) == "model.optimizer.lr=0.0003333"
    assert hms(600) == "00:00:10:00" and hms(12.4) == "00:00:00:12" and hms(0.2) == "00:00:00:01"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--only", "flow"], "--only: unknown flow"),
        (["--samples", "5"], "--samples and --tune-samples must be >= 10"),
        (["--seeds", "4"], "--seeds must be in 1..3"),
        (["--tune-scale", "0"], "--tune-scale must be in"),
    ],
)
def test_bad_arguments_stop_before_anything_runs(tmp_path, argv, message):
    with pytest.raises(SystemExit, match=message):
        peers.main([*argv, "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")])
    assert not any(tmp_path.iterdir())  # nothing trained, nothing written
