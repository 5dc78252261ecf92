"""The parts of benchmarks/peers.py that need no peer library: the held-out text split, the sample files, the table."""

import math

import numpy as np
import pytest
import torch

from benchmarks import peers
from gensuite.runs.sample_files import read_samples


def test_held_out_split_is_the_first_90_and_last_10_percent():
    raw = bytes(range(256)) * 40  # 10,240 bytes
    train, held_out = peers.held_out_split(raw)
    assert train + held_out == raw  # disjoint, in order, every byte once
    assert len(held_out) == 1024 and len(train) == 9216
    assert raw.startswith(train) and raw.endswith(held_out)


def test_pydoc_split_holds_out_the_last_topics():
    from gensuite.data.text import PydocText

    raw = PydocText().load_bytes()
    train, held_out = peers.pydoc_split()
    assert train + held_out == raw
    assert abs(len(held_out) / len(raw) - 0.1) < 1e-4
    # topics are joined in sorted order: the held-out text starts in the alphabet's tail
    from pydoc_data.topics import topics

    last = sorted(topics)[-1]
    assert topics[last].strip("\n").encode() in held_out
    assert topics[last].strip("\n").encode() not in train


def test_written_samples_are_uint8_nhwc_as_eval_reads_them(tmp_path):
    images = torch.rand(5, 1, 28, 28)
    images[0, 0, 0, 0], images[0, 0, 0, 1] = 1.7, -0.3  # out of range: clamped, never wrapped
    path = peers.write_samples(tmp_path / "peer.npz", images)
    array, source = read_samples(path, channels=1)
    assert array.dtype == np.uint8 and array.shape == (5, 28, 28, 1)
    assert "key 'samples'" in source
    assert array[0, 0, 0, 0] == 255 and array[0, 0, 1, 0] == 0
    expected = (images[1:].clamp(0, 1) * 255 + 0.5).floor().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(array[1:], expected)


def test_bits_per_byte_scores_every_full_window_once():
    held_out = bytes(range(256)) * 3 + b"tail"  # the partial window is left out
    seen = []

    def uniform(windows):
        seen.append(windows)
        return torch.full(windows.shape, math.log(256), dtype=torch.float64)

    assert peers.bits_per_byte(uniform, held_out, context=256) == 8.0
    windows = torch.cat(seen)
    assert windows.dtype == torch.int64 and windows.shape == (3, 256)
    assert bytes(windows.flatten().tolist()) == held_out[:768]

    def half_known(windows):  # 0 nats for even bytes, ln 4 for odd ones: 1 bit per byte on average
        return (windows % 2).double() * math.log(4)

    assert abs(peers.bits_per_byte(half_known, held_out, context=256) - 1.0) < 1e-12


def test_table_renders_every_row_and_blanks_what_is_missing(tmp_path):
    rows = [
        {"family": "vae", "side": "peer", "implementation": "x", "fid_classifier": 12.345678, "train_s": 600.04},
        {"family": "vae", "side": "suite", "fid_classifier": float("nan"), "steps": 9000, "parameters": None},
        {"family": "text", "side": "peer", "bits_per_byte": 2.5},
    ]
    md = peers.render(rows).splitlines()
    assert md[0] == "| " + " | ".join(peers.COLUMNS) + " |"
    assert len(md) == 2 + len(rows)
    cells = [line.strip("|").split("|") for line in md[2:]]
    assert all(len(c) == len(peers.COLUMNS) for c in cells)
    col = {name: i for i, name in enumerate(peers.COLUMNS)}
    assert cells[0][col["fid_classifier"]].strip() == "12.35"
    assert cells[0][col["train_s"]].strip() == "600.0"
    assert cells[1][col["fid_classifier"]].strip() == "-"
    assert cells[1][col["parameters"]].strip() == ""
    assert cells[2][col["bits_per_byte"]].strip() == "2.5"
    md_path, csv_path = peers.write_tables(rows, tmp_path)
    assert md_path.read_text().splitlines() == md
    assert csv_path.read_text().splitlines()[0] == ",".join(peers.COLUMNS)


def test_budgets_scale_to_lightning_time_strings():
    assert peers.hms(600) == "00:00:10:00"
    assert peers.hms(12.4) == "00:00:00:12"
    assert peers.hms(0.2) == "00:00:00:01"  # never a zero budget


def test_sides_and_families_are_checked_before_anything_runs(tmp_path):
    with pytest.raises(SystemExit, match="--no-peer and --no-suite together leave nothing to run"):
        peers.main(["--no-peer", "--no-suite", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="--only: unknown flow"):
        peers.main(["--only", "flow", "--no-peer", "--out", str(tmp_path)])
    assert not any(tmp_path.iterdir())  # nothing trained, nothing written


def test_a_partial_run_updates_the_table_without_losing_rows(tmp_path):
    old = [
        {"family": "vae", "side": "peer", "implementation": "p", "fid_classifier": 29.0, "steps": 896},
        {"family": "gan", "side": "suite", "implementation": "s", "fid_classifier": 31.3, "steps": 663},
    ]
    peers.write_tables(old, tmp_path)
    read = peers.read_rows(tmp_path / "peers.csv")
    assert read[0]["steps"] == 896 and read[0]["fid_classifier"] == 29.0 and "bits_per_byte" not in read[0]
    new = [{"family": "gan", "side": "suite", "implementation": "s", "fid_classifier": 9.5, "steps": 1085},
           {"family": "text", "side": "suite", "implementation": "t", "bits_per_byte": 1.66}]  # fmt: skip
    rows = peers.merged(read, new)
    assert [(r["family"], r["side"]) for r in rows] == [("vae", "peer"), ("gan", "suite"), ("text", "suite")]
    assert rows[1]["fid_classifier"] == 9.5 and rows[0]["fid_classifier"] == 29.0
    assert peers.read_rows(tmp_path / "absent.csv") == []
