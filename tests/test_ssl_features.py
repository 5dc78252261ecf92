"""The label-free ``ssl`` feature space and the evaluation in every space: degraded images ordered as the classifier
orders them, the network cached by data fingerprint, a flat folder of unlabelled RGB photos scored offline, and
``metrics.features`` as a list."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from gensuite.data.images import MNIST5k
from gensuite.errors import ConfigError
from gensuite.metrics import ssl
from gensuite.metrics.evaluator import Evaluator
from gensuite.metrics.references import parse_spaces
from gensuite.train import train

from .conftest import SSL_STEPS, TINY, compose_cfg


@pytest.fixture(scope="module")
def mnist():
    dm = MNIST5k()
    dm.setup()
    return dm


@pytest.fixture(scope="module")
def both_spaces(mnist, cache_dir):
    """An evaluator in the classifier and ssl spaces (the ssl net at the tests' tiny budget, trained once)."""
    ev = Evaluator(
        features=["classifier", "ssl"], n_samples=500, kid_subset_size=250, reference_size=1000,
        ssl_steps=SSL_STEPS, bootstrap=0, cache_dir=str(cache_dir),
    )  # fmt: skip
    ev.prepare(mnist)
    return ev


def test_ssl_space_orders_degraded_images_as_the_classifier_does(mnist, both_spaces):
    real, _ = mnist.real_images("val")  # 500 unseen real digits
    g = torch.Generator().manual_seed(0)
    noisy = lambda sigma: (real + sigma * torch.randn(real.shape, generator=g)).clamp(0, 1)  # noqa: E731
    images = {
        "real": real,
        "noise 0.1": noisy(0.1),
        "noise 0.3": noisy(0.3),
        "blur 1": TF.gaussian_blur(real, 5, 1.0),
        "blur 2": TF.gaussian_blur(real, 7, 2.0),
    }
    scores = {name: both_spaces.evaluate_images(x) for name, x in images.items()}
    order = {}
    for space in ("classifier", "ssl"):
        fid = {name: m[f"val/fid_{space}"] for name, m in scores.items()}
        floor = scores["real"][f"val/fid_{space}_floor"]
        assert fid["real"] < 1.5 * floor, (space, fid, floor)  # real vs real: near its floor
        assert min(fid["noise 0.3"], fid["blur 1"]) > 10 * floor, (space, fid, floor)  # noised, blurred: far
        assert scores["real"][f"val/precision_{space}"] > 0.6 and scores["blur 2"][f"val/recall_{space}"] < 0.1
        order[space] = sorted(fid, key=fid.get)
    # the same ladders: real < light < heavy noise, real < light noise < light < heavy blur. (Whether heavy noise
    # is worse than blur, this 20-step network and the classifier disagree; the default 200-step one orders all
    # five sets, and noise 0.2 and blur 1.5 besides, exactly as the classifier does.)
    for ladder in (["real", "noise 0.1", "noise 0.3"], ["real", "noise 0.1", "blur 1", "blur 2"]):
        for space, ranked in order.items():
            assert [name for name in ranked if name in ladder] == ladder, (space, ranked)
    assert {k for k in scores["real"] if k.startswith("features/")} == {"features/val_acc", "features/ssl_knn_acc"}
    assert scores["real"]["features/ssl_knn_acc"] > 0.8  # the label-free features hold the classes (chance: 0.1)


def test_copy_rate_in_ssl_space_is_its_percentile_for_held_out_images_and_1_for_copies(mnist, both_spaces):
    held_out = both_spaces.evaluate_images(mnist.real_images("test")[0])
    copies = both_spaces.evaluate_images(mnist.real_images("train", 500)[0])
    assert held_out["val/copy_rate_ssl"] == pytest.approx(0.05, abs=0.006)  # by construction
    assert copies["val/copy_rate_ssl"] == 1.0


def test_ssl_network_is_cached_by_data_fingerprint_and_reused(mnist, both_spaces, cache_dir, monkeypatch):
    files = list((cache_dir / "ssl").glob(f"mnist5k-{both_spaces.extractors['ssl'].fingerprint}.pt"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("the cached ssl network was trained again")

    monkeypatch.setattr(ssl, "train_ssl", no_training)
    again = ssl.SSLFeatures.for_data(mnist, cache_dir, steps=SSL_STEPS)
    assert files[0].stat().st_mtime_ns == mtime
    x = mnist.real_images("test", 16)[0]
    assert torch.equal(again(x)[0], both_spaces.extractors["ssl"](x)[0])
    other = MNIST5k(seed=7)  # another training seed: the same split, so the same network
    assert ssl.SSLFeatures.for_data(other, cache_dir, steps=SSL_STEPS).fingerprint == again.fingerprint
    with pytest.raises(AssertionError, match="trained again"):  # another budget is another network
        ssl.SSLFeatures.for_data(mnist, cache_dir, steps=SSL_STEPS + 1)


def test_augmented_views_keep_shape_and_range_and_no_digit_is_mirrored():
    g = torch.Generator().manual_seed(0)
    grey = torch.zeros(64, 1, 12, 12)
    grey[:, :, 2:10, 2:4] = 1.0  # a bar on the left
    views = ssl.augment(grey, g)
    assert views.shape == grey.shape and views.min() >= 0 and views.max() <= 1
    left, right = views[..., :6].sum((1, 2, 3)), views[..., 6:].sum((1, 2, 3))
    assert (left > right).all()  # shifted, scaled, rotated a little: never flipped
    rgb = torch.rand(8, 3, 16, 16)
    assert not torch.equal(ssl.augment(rgb, g), ssl.augment(rgb, g))  # two views differ


def test_nt_xent_is_low_when_views_agree_and_high_when_they_do_not():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(32, 16, generator=g)
    agree = ssl.nt_xent(z, z + 0.01 * torch.randn(32, 16, generator=g), 0.1)
    unrelated = ssl.nt_xent(z, torch.randn(32, 16, generator=g), 0.1)
    assert agree < 0.5 < math.log(2 * 32 - 2) - 0.5 < unrelated  # unrelated views: about chance, log(2B - 2)


def test_features_setting_takes_a_name_a_list_all_or_none():
    assert parse_spaces("all") == ["all"] and parse_spaces("none") == [] and parse_spaces(None) == []
    assert parse_spaces("inception") == ["inception"]
    assert parse_spaces(["classifier", "ssl"]) == parse_spaces("classifier,ssl") == ["classifier", "ssl"]
    for bad in ("foo", ["ssl", "ssl"], ["classifier", "all"], []):
        with pytest.raises(ConfigError, match="features must be"):
            parse_spaces(bad)
    cfg = compose_cfg(["metrics.features=[ssl,classifier]"])
    assert list(cfg.metrics.features) == ["ssl", "classifier"]
    assert compose_cfg([]).metrics.features == "all"


def photo_patches(folder, n: int = 200, size: int = 16):
    """A flat folder of ``n`` unlabelled RGB photos: random crops of scikit-learn's two sample photographs."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images  # two (427, 640, 3) uint8 photographs
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(n):
        photo = photos[i % 2]
        y, x = rng.integers(0, photo.shape[0] - 2 * size), rng.integers(0, photo.shape[1] - 2 * size)
        Image.fromarray(photo[y : y + 2 * size, x : x + 2 * size]).resize((size, size)).save(folder / f"{i:03d}.png")
    return folder


def test_unlabelled_rgb_folder_gets_sample_metrics_offline_in_ssl_space(tmp_path, cache_dir):
    folder = photo_patches(tmp_path / "photos")
    out = tmp_path / "run"
    overrides = ["data=image_folder", f"data.path={folder}", "data.image_size=16", "data.num_workers=0",
                 "model.encoder.width=8",
                 "model.decoder.width=8", "metrics.n_samples=100", "metrics.kid_subset_size=20", "metrics.bootstrap=10",
                 f"paths.cache_dir={cache_dir}"]  # fmt: skip
    train(compose_cfg([*TINY, *overrides], out))
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("fid_ssl", "fid_ssl_floor", "kid_ssl", "precision_ssl", "recall_ssl", "copy_rate_ssl",
                "fid_ssl_train", "fid_ssl_lo", "fid_ssl_hi", "copy_rate_pixels"):  # fmt: skip
        assert np.isfinite(metrics[f"val/{key}"]), key
    assert not [k for k in metrics if "classifier" in k or "coverage_classes" in k]
    assert metrics["eval/features"] == "ssl" == metrics["eval/feature_spaces"]
    assert "no class labels" in metrics["eval/notes"]
    # an untrained VAE's blurry samples are far from the photos; real photos, near the floor
    assert metrics["val/fid_ssl"] > 3 * metrics["val/fid_ssl_floor"]
    assert (out / "nearest_training_images.png").is_file()


def test_classifier_asked_for_on_unlabelled_data_is_dropped_with_a_note(tmp_path, cache_dir):
    from gensuite.data.image_folder import ImageFolder

    folder = photo_patches(tmp_path / "photos", n=40, size=16)
    dm = ImageFolder(path=str(folder), channels=3, image_size=16)
    only = Evaluator(features="classifier", cache_dir=str(cache_dir))
    only.prepare(dm)
    assert not only.active and "FID needs a feature extractor" in only.notes[0]
    assert "metrics.features=ssl" in only.notes[0]
    both = Evaluator(features=["classifier", "ssl"], ssl_steps=2, cache_dir=str(cache_dir))
    both.prepare(dm)
    assert list(both.extractors) == ["ssl"] and "no 'classifier' feature space" in both.notes[0]
