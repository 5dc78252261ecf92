"""The shared evaluation: FID against an independent formula, real-vs-real and real-vs-noise, batch-size
invariance, diversity measures, the cached classifier and reference features."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from gensuite.data.images import MNIST5k
from gensuite.metrics.diversity import class_coverage, precision_recall_density_coverage
from gensuite.metrics.evaluator import Evaluator
from gensuite.metrics.scores import fid_from_features


class Replay(nn.Module):
    """A 'model' whose samples are given images, in order (or uniform noise): the evaluation's test double."""

    def __init__(self, images: torch.Tensor | None = None, shape=(1, 28, 28)):
        super().__init__()
        self.images, self.shape, self.pos = images, shape, 0
        self.dummy = nn.Parameter(torch.zeros(()))

    def sample(self, n, generator=None):
        if self.images is None:
            return torch.rand(n, *self.shape, generator=generator)
        out = self.images[self.pos : self.pos + n]
        self.pos += n
        return out


@pytest.fixture(scope="module")
def mnist():
    dm = MNIST5k(seed=0)
    dm.setup()
    return dm


@pytest.fixture(scope="module")
def evaluator(mnist, tmp_path_factory, cache_dir):
    # the classifier space alone here (the ssl space and every space together: tests/test_ssl_features.py)
    ev = Evaluator(
        features="classifier", n_samples=600, batch_size=200, kid_subset_size=200, reference_size=1000,
        cache_dir=str(cache_dir),
    )  # fmt: skip
    ev.prepare(mnist)
    return ev


def frechet_numpy(a: np.ndarray, b: np.ndarray) -> float:
    """The Fréchet distance of two Gaussians fitted to ``a`` and ``b`` (Heusel et al. 2017), with scipy."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean))


def test_classifier_extractor_is_accurate_and_cached(mnist, evaluator, cache_dir):
    assert evaluator.extractor.val_acc >= 0.97
    files = set((cache_dir / "classifier").glob("mnist5k-*.pt"))
    assert files  # one per classifier setting the session's tests used
    again = Evaluator(features="classifier", cache_dir=str(cache_dir), reference_size=1000)
    again.prepare(mnist)  # loads, does not retrain
    assert again.extractor.val_acc == evaluator.extractor.val_acc
    assert set((cache_dir / "classifier").glob("mnist5k-*.pt")) == files  # nothing new was trained or written
    assert len(list((cache_dir / "reference").glob("*.pt"))) >= 1


def test_fid_matches_an_independent_scipy_computation(evaluator):
    real = evaluator.reference["train"]["features"][:500].double()
    fake = evaluator.reference["train"]["features"][500:1000].double() * 1.3 + 0.5
    ours = fid_from_features(real, fake)
    theirs = frechet_numpy(real.numpy(), fake.numpy())
    assert ours == pytest.approx(theirs, rel=1e-3)
    assert fid_from_features(real, real) == pytest.approx(0.0, abs=1e-3 * max(1.0, theirs))


def test_real_images_score_near_the_floor_and_noise_scores_far(mnist, evaluator):
    real_b, _ = mnist.real_images("train", 600)  # the floor's images: training images against the held-out set
    real = evaluator.evaluate(Replay(real_b))
    noise = evaluator.evaluate(Replay(None))
    floor = real["val/fid_classifier_floor"]
    assert real["val/fid_classifier"] == pytest.approx(floor, rel=1e-6)  # the same images as the floor's
    assert noise["val/fid_classifier"] > 100 * max(floor, 1e-3)
    # the val split's reference (what chooses) is other real images than the test split's (what reports)
    assert real["val/fid_classifier_val"] < 3 * max(floor, 1e-3) and noise["val/fid_classifier_val"] > 100 * floor
    assert real["val/fid_classifier_val"] != real["val/fid_classifier"]
    assert noise["val/kid_classifier"] > 10 * max(real["val/kid_classifier"], 1e-4)
    assert real["val/coverage_classes"] == 10 and noise["val/coverage_classes"] <= 3
    assert real["val/precision_classifier"] > 0.6 and real["val/recall_classifier"] > 0.6
    assert noise["val/precision_classifier"] < 0.05
    assert real["time/sample_images_per_s"] > 0


# -- the held-out reference, the copy rate, the intervals ----------------------------------------------------------
def test_the_held_out_split_is_disjoint_and_never_reaches_a_loader(mnist):
    assert (len(mnist.train), len(mnist.val), len(mnist.test)) == (4000, 500, 500)
    rows = lambda ds: {bytes(x) for x in ds.images.flatten(1).numpy()}  # noqa: E731
    train, val, test = rows(mnist.train), rows(mnist.val), rows(mnist.test)
    assert not (train & test) and not (val & test)
    assert torch.bincount(mnist.test.labels).tolist() == [50] * 10  # stratified
    loaders = [mnist.train_dataloader(), mnist.val_dataloader()]
    assert all(loader.dataset is not mnist.test for loader in loaders)
    # the split does not move with the training seed (only the batch order does)
    other = MNIST5k(seed=7)
    other.setup()
    assert torch.equal(other.test.images, mnist.test.images) and other.fingerprint() == mnist.fingerprint()


def test_copy_rate_catches_a_copier_and_is_its_percentile_for_held_out_images(mnist, evaluator):
    copies = evaluator.evaluate(Replay(mnist.real_images("train", 600)[0]))
    held_out = evaluator.evaluate(Replay(mnist.real_images("test")[0]), n=500)
    unseen = evaluator.evaluate(Replay(mnist.real_images("val")[0]), n=500)
    for space in ("classifier", "pixels"):
        assert copies[f"val/copy_rate_{space}"] == 1.0
        assert held_out[f"val/copy_rate_{space}"] == pytest.approx(0.05, abs=0.006)  # by construction
        assert unseen[f"val/copy_rate_{space}"] < 0.15  # other unseen images: near the same baseline
    # a copier's train-referenced FID sits at its floor; against the held-out set it is an ordinary real sample
    assert copies["val/fid_classifier_train"] < 1.5 * copies["val/fid_classifier_train_floor"] + 1e-3


def test_bootstrap_interval_holds_the_full_sample_value_and_shrinks_with_n(mnist, evaluator):
    widths = {}
    for n in (150, 600):
        m = evaluator.evaluate(Replay(mnist.real_images("train", n, offset=1000)[0]), n=n)
        for key in ("fid_classifier", "precision_classifier", "recall_classifier"):
            assert m[f"val/{key}_lo"] <= m[f"val/{key}"] <= m[f"val/{key}_hi"], (n, key, m)
        widths[n] = m["val/fid_classifier_hi"] - m["val/fid_classifier_lo"]
    assert widths[600] < 0.8 * widths[150]


def test_fid_does_not_depend_on_the_evaluation_batch_size(mnist, evaluator):
    torch.manual_seed(0)
    from gensuite.families.vae import VAE
    from gensuite.nets.decoders import ConvDecoder
    from gensuite.nets.encoders import ConvEncoder
    from gensuite.nets.likelihoods import Bernoulli

    model = VAE(ConvEncoder(1, 28, 32, width=8), ConvDecoder(16, 1, 28, width=8), Bernoulli(), latent_dim=16)
    values = []
    for bs in (100, 200, 600):
        evaluator.batch_size = bs
        values.append(evaluator.evaluate(model)["val/fid_classifier"])
    evaluator.batch_size = 200
    assert max(values) == pytest.approx(min(values), rel=0.01)


def test_precision_recall_density_coverage_extremes():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(300, 8, generator=g)
    same = precision_recall_density_coverage(real, real.clone())
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    far = precision_recall_density_coverage(real, real + 100)
    assert far["precision"] == far["recall"] == far["coverage"] == far["density"] == 0.0
    # a collapsed generator: precise, but recalls little of the real spread
    collapsed = precision_recall_density_coverage(real, real[:5].repeat(60, 1) + 0.01)
    assert collapsed["precision"] == 1.0 and collapsed["recall"] < 0.3


def test_class_coverage_counts_fairly_hit_classes():
    real = torch.arange(10).repeat(20)
    assert class_coverage(real, real, 10)["coverage_classes"] == 10
    assert class_coverage(torch.zeros(200, dtype=torch.long), real, 10)["coverage_classes"] == 1
    half = torch.cat([torch.arange(5).repeat(40)])
    out = class_coverage(half, real, 10)
    assert out["coverage_classes"] == 5 and out["class_tv"] == pytest.approx(0.5)


def test_unlabelled_data_has_no_classifier_space(tmp_path, cache_dir):
    from PIL import Image

    from gensuite.data.image_folder import ImageFolder

    (tmp_path / "imgs").mkdir()
    for i in range(10):
        Image.fromarray(np.full((8, 8), i * 20, dtype=np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
    ev = Evaluator(features="classifier", cache_dir=str(cache_dir))
    ev.prepare(ImageFolder(path=str(tmp_path / "imgs"), channels=1, image_size=8))
    assert not ev.active and ev.evaluate(Replay(None, (1, 8, 8))) == {}
    assert "FID needs a feature extractor" in ev.notes[0]


def test_inception_offline_without_weights_is_a_clear_error(tmp_path, monkeypatch):
    from gensuite.errors import DataError
    from gensuite.metrics.features import InceptionFeatures

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(DataError) as info:
        InceptionFeatures(weights_path=str(tmp_path / "missing.pth"))
    assert "metrics.inception_weights" in info.value.render()
