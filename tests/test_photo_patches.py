"""The colour dataset built offline (`gensuite.data.photo_patches`): files, determinism, the folder it refuses, and a
tiny training run on it scored in the self-supervised space."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from gensuite.data.photo_patches import RECORD, build, main
from gensuite.train import train

from .conftest import SMALL_NETS


def _files(folder):
    return sorted(folder.glob("*.png"))


def test_the_builder_writes_n_colour_patches_the_same_for_a_seed(tmp_path):
    a, b, c = (build(tmp_path / name, count=12, seed=seed) for name, seed in (("a", 0), ("b", 0), ("c", 1)))
    files = _files(a)
    assert len(files) == 12 and json.loads((a / RECORD).read_text())["count"] == 12
    for f in files:
        with Image.open(f) as im:
            assert im.size == (32, 32) and im.mode == "RGB"
    assert [f.read_bytes() for f in files] == [f.read_bytes() for f in _files(b)]
    assert [f.read_bytes() for f in files] != [f.read_bytes() for f in _files(c)]
    pixels = np.stack([np.asarray(Image.open(f)) for f in files])
    assert pixels.std(axis=(1, 2)).mean() > 1  # colour patches of the photographs, not a flat fill


def test_a_rebuild_replaces_its_own_patches_and_a_foreign_folder_is_refused(tmp_path, capsys):
    folder = build(tmp_path / "photos", count=6)
    build(folder, count=3)
    assert len(_files(folder)) == 3
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit) as exit_:
        main([str(foreign), "--count", "2"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("ConfigError") and "not empty" in err and "fix:" in err and len(err.splitlines()) <= 5
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


def test_a_tiny_run_on_the_patches_is_scored_in_the_ssl_space(tmp_path, make_cfg):
    folder = build(tmp_path / "photos", count=200)
    data = ["data=image_folder", f"data.path={folder}", "data.num_workers=0"]
    cfg = make_cfg(["model=vae", *data, *SMALL_NETS["vae"]], output_dir=tmp_path / "run")
    train(cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["eval/features"] == "ssl"  # unlabelled: no classifier space
    assert np.isfinite(metrics["val/fid_ssl"]) and "val/fid_classifier" not in metrics
