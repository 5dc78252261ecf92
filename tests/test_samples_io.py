"""Samples in and out: ``sample.py format=npz|png`` writes raw samples (the same as the grid of the same seed),
``eval.py samples=`` scores an .npz / .npy / folder with the metrics of a checkpoint, and every bad sample input is
a one-screen error (exit 2 through the real entry)."""

from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from gensuite.cli.config import instantiate_checked, to_plain
from gensuite.cli.sampling import apply_sampler
from gensuite.errors import ConfigError, DataError
from gensuite.eval import evaluate
from gensuite.families.vae import VAE
from gensuite.runs import sample_files as samples_io
from gensuite.runs.checkpoint import load_model
from gensuite.sample import sample
from gensuite.train import train

from .conftest import SSL_STEPS, TINY, compose_cfg, run_entry

SMALL_VAE = ["data=digits", "model.encoder.width=8", "model.decoder.width=8"]
# the evaluation of TINY: 200 samples in batches of 100 (so eval.py ckpt_path= samples as sample.py below does)
# (no bootstrap intervals: 100 FIDs more per evaluation)
EVAL = ["metrics.n_samples=200", "metrics.batch_size=100", "metrics.kid_subset_size=50", "metrics.reference_size=400",
        "metrics.bootstrap=0", f"metrics.ssl_steps={SSL_STEPS}"]  # fmt: skip


@pytest.fixture(scope="module")
def vae_ckpt(tmp_path_factory, cache_dir):
    """A tiny VAE trained a few steps on the 8x8 digits: its checkpoint."""
    out = tmp_path_factory.mktemp("samples_io") / "run"
    train(compose_cfg([*TINY, *SMALL_VAE, "metrics.bootstrap=0", f"paths.cache_dir={cache_dir}"], out))
    return out / "checkpoints" / "last.ckpt"


def untrained_checkpoint(path, overrides: list[str]):
    """A gensuite checkpoint (the config as plain data + weights, as `RunState` stores them) of an untrained
    model: enough to sample from, without spending a training on it."""
    cfg = compose_cfg([*TINY, *overrides], path.parent / "run")
    model = instantiate_checked(cfg, "model")
    entry = {"config": to_plain(cfg), "family": model.family, "format": 1}
    torch.save({"gensuite": entry, "state_dict": model.state_dict()}, path)
    return path


def sample_cfg(ckpt, *overrides):
    return compose_cfg([f"ckpt_path={ckpt}", *overrides], config_name="sample")


def eval_cfg(cache_dir, *overrides):
    return compose_cfg([*overrides, *EVAL, f"paths.cache_dir={cache_dir}"], config_name="eval")


def grid_tiles(png, rows: int, cols: int, size: int) -> np.ndarray:
    """The images of a grid written by sample.py (1 px padding), first channel: ``(rows * cols, size, size)``."""
    grid = np.asarray(Image.open(png))[..., 0]
    step = size + 1
    return np.stack(
        [
            grid[1 + r * step : 1 + r * step + size, 1 + c * step : 1 + c * step + size]
            for r in range(rows)
            for c in range(cols)
        ]
    )


# -- out ---------------------------------------------------------------------------------------------------------
def test_npz_holds_the_grid_samples_drawn_in_batches(vae_ckpt, tmp_path, monkeypatch):
    sizes = []
    original = VAE.sample

    def recording(self, n, generator=None):
        sizes.append(n)
        return original(self, n, generator)

    monkeypatch.setattr(VAE, "sample", recording)
    npz = sample(sample_cfg(vae_ckpt, "n=10", "batch_size=4", "format=npz", f"out={tmp_path / 's.npz'}"))
    png = sample(sample_cfg(vae_ckpt, "n=10", "batch_size=4", "nrow=5", f"out={tmp_path / 'grid.png'}"))
    assert sizes == [4, 4, 2, 4, 4, 2]  # never more than batch_size on the model at once
    with np.load(npz, allow_pickle=False) as z:
        assert z.files == ["samples"]  # an unconditional model: no labels
        samples = z["samples"]
    assert samples.dtype == np.uint8 and samples.shape == (10, 8, 8, 1)
    assert samples.std() > 0
    np.testing.assert_array_equal(grid_tiles(png, 2, 5, 8), samples[..., 0])  # the grid's pixels are the samples
    other = sample(sample_cfg(vae_ckpt, "n=10", "batch_size=4", "format=npz", "seed=1", f"out={tmp_path / 'o.npz'}"))
    assert not np.array_equal(np.load(other)["samples"], samples)


def test_png_folder_holds_one_file_per_sample(vae_ckpt, tmp_path):
    folder = sample(sample_cfg(vae_ckpt, "n=7", "format=png", f"out={tmp_path / 'pngs'}"))
    npz = sample(sample_cfg(vae_ckpt, "n=7", "format=npz", f"out={tmp_path / 's.npz'}"))
    files = sorted(folder.iterdir())
    assert [f.name for f in files] == [f"{i:05d}.png" for i in range(7)]
    read = np.stack([np.asarray(Image.open(f)) for f in files])
    np.testing.assert_array_equal(read, np.load(npz)["samples"][..., 0])


def test_sample_entry_writes_npz_beside_the_run(vae_ckpt, tmp_path):
    proc = run_entry("sample.py", f"ckpt_path={vae_ckpt}", "n=600", "format=npz", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    path = vae_ckpt.parent.parent / "samples-600-seed0.npz"
    assert f"wrote 600 samples to {path}" in proc.stdout
    assert np.load(path)["samples"].shape == (600, 8, 8, 1)


GAN = ["model=gan", "data=digits", "model.num_classes=10", "model.latent_dim=8", "model.decoder.width=8",
       "model.discriminator.body.width=8", "model.discriminator.body.out_dim=16"]  # fmt: skip
DIFFUSION = ["model=diffusion", "data=digits", "model.num_classes=10", "model/denoiser=unet_small",
             "model.denoiser.base_width=8"]  # fmt: skip


def test_conditional_gan_stores_the_labels_it_drew_with(tmp_path, cache_dir):
    ckpt = untrained_checkpoint(tmp_path / "gan.ckpt", [*GAN, f"paths.cache_dir={cache_dir}"])
    path = sample(sample_cfg(ckpt, "n=25", "batch_size=10", "format=npz", "seed=3", f"out={tmp_path / 'g.npz'}"))
    with np.load(path) as z:
        samples, labels = z["samples"], z["labels"]
    assert labels.dtype == np.int64 and labels.shape == (25,)
    np.testing.assert_array_equal(labels, np.concatenate([np.arange(10), np.arange(10), np.arange(5)]) % 10)
    # honest labels: the same noise with these labels gives these samples
    model, _ = load_model(ckpt)
    g = torch.Generator().manual_seed(3)
    again = [model.sample(len(y), g, labels=torch.from_numpy(y)) for y in np.split(labels, [10, 20])]
    np.testing.assert_array_equal(samples_io.to_uint8(torch.cat(again)), samples)


def test_conditional_diffusion_stores_labels_and_the_grid_matches(tmp_path, cache_dir):
    ckpt = untrained_checkpoint(tmp_path / "diff.ckpt", [*DIFFUSION, f"paths.cache_dir={cache_dir}"])
    fast = ["n=12", "batch_size=5", "sampler=ddim", "sampler.steps=2"]
    path = sample(sample_cfg(ckpt, *fast, "format=npz", f"out={tmp_path / 'd.npz'}"))
    grid = sample(sample_cfg(ckpt, *fast, "nrow=4", f"out={tmp_path / 'd.png'}"))
    with np.load(path) as z:
        samples, labels = z["samples"], z["labels"]
    assert labels.shape == (12,) and labels.min() >= 0 and labels.max() < 10 and len(set(labels)) > 1
    np.testing.assert_array_equal(grid_tiles(grid, 3, 4, 8), samples[..., 0])
    # honest labels: balanced over the whole set (the shared rule, as in the evaluation), batch by batch, then the
    # samples given them
    model, _ = load_model(ckpt)
    apply_sampler(model, sample_cfg(ckpt, *fast))
    g = torch.Generator().manual_seed(0)
    ys, again = [], []
    for start, b in ((0, 5), (5, 5), (10, 2)):
        ys.append(torch.arange(start, start + b) % 10)
        again.append(model.sample(b, g, labels=ys[-1]))
    np.testing.assert_array_equal(torch.cat(ys).numpy(), labels)
    np.testing.assert_array_equal(samples_io.to_uint8(torch.cat(again)), samples)


def test_text_model_refuses_image_formats(tmp_path, cache_dir):
    text = ["model=transformer", "data=pydoc", "data.seq_len=16", "model.net.width=16", "model.net.depth=1",
            "model.net.heads=2", "model.text_length=8", f"paths.cache_dir={cache_dir}"]  # fmt: skip
    ckpt = untrained_checkpoint(tmp_path / "text.ckpt", text)
    for fmt in ("npz", "png"):
        with pytest.raises(ConfigError, match="valid format for text is grid") as err:
            sample(sample_cfg(ckpt, f"format={fmt}", f"out={tmp_path / 'x.npz'}"))
        assert f"format={fmt}" in err.value.render()
    proc = run_entry("sample.py", f"ckpt_path={ckpt}", "format=npz", "n=2", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "valid format for text is grid" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("*.npz"))


# -- in ----------------------------------------------------------------------------------------------------------
def test_layouts_and_dtypes_read_alike():
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (4, 8, 8), dtype=np.uint8)
    want = torch.from_numpy(grey).float().div(255)[:, None]
    for array in (grey, grey[..., None], grey[:, None], grey.astype(np.int64), grey.astype(np.float32) / 255):
        x, notes = samples_io.as_images(array, 1, 8, "t")
        assert x.dtype == torch.float32 and not notes
        torch.testing.assert_close(x, want)
    rgb = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    x, notes = samples_io.as_images(rgb, 1, 8, "t")
    luma = (rgb.astype(np.float32) / 255) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    np.testing.assert_allclose(x[:, 0].numpy(), luma, atol=1e-6)
    assert "converted" in notes[0]
    x3, notes = samples_io.as_images(grey, 3, 8, "t")
    assert x3.shape == (4, 3, 8, 8) and torch.equal(x3[:, 2], want[:, 0]) and notes
    # a channel-sized axis 1 and 3: the layout whose pixels fit the data's image size wins, else (N, H, W, C)
    one = rng.integers(0, 256, (2, 1, 3, 3), dtype=np.uint8)
    torch.testing.assert_close(samples_io.as_images(one, 1, 3, "t")[0], torch.from_numpy(one) / 255)
    cube = rng.integers(0, 256, (2, 3, 3, 3), dtype=np.uint8)
    torch.testing.assert_close(
        samples_io.as_images(cube, 3, 3, "t")[0], torch.from_numpy(cube).permute(0, 3, 1, 2) / 255
    )


def val_keys(metrics: dict) -> set[str]:
    return {k for k in metrics if k.startswith(("val/", "features/"))}


def test_eval_scores_npz_npy_and_folder_like_a_checkpoint(vae_ckpt, tmp_path, cache_dir):
    ckpt = evaluate(eval_cfg(cache_dir, f"ckpt_path={vae_ckpt}", "use_run_metrics=false", f"out={tmp_path / 'c.json'}"))
    own = evaluate(eval_cfg(cache_dir, f"ckpt_path={vae_ckpt}", "use_run_metrics=false", "metrics.features=none",
                            f"out={tmp_path / 'none.json'}"))  # fmt: skip
    sample_metric_keys = val_keys(ckpt) - val_keys(own)  # what the model logs itself (ELBO, PSNR...) aside
    assert "val/fid_classifier" in sample_metric_keys
    # the evaluator's own draw: metrics.seed (1234), n_samples 200 in batches of metrics.batch_size (100)
    draw = ["n=200", "seed=1234", "batch_size=100"]
    npz = sample(sample_cfg(vae_ckpt, *draw, "format=npz", f"out={tmp_path / 's.npz'}"))
    images = np.load(npz)["samples"]
    np.save(tmp_path / "s.npy", images.transpose(0, 3, 1, 2).astype(np.float32) / 255)  # (N, C, H, W) floats
    folder = sample(sample_cfg(vae_ckpt, *draw, "format=png", f"out={tmp_path / 'p'}"))
    results = {}
    for path in (npz, tmp_path / "s.npy", folder):
        m = evaluate(eval_cfg(cache_dir, f"samples={path}", "data=digits"))
        assert val_keys(m) == sample_metric_keys, path
        assert all(math.isfinite(m[k]) for k in val_keys(m)), path
        assert m["eval/n_samples"] == 200 and "eval/notes" not in m
        results[path.name] = m
        written = path.parent / f"eval-{path.name if path.is_dir() else path.stem}.json"
        assert json.loads(written.read_text())["val/fid_classifier"] == m["val/fid_classifier"]
    fids = [m["val/fid_classifier"] for m in results.values()]
    assert fids == pytest.approx([fids[0]] * 3, rel=1e-6)  # the same images, however stored
    # the same samples the checkpoint's evaluation drew (up to 8-bit rounding): the same score
    assert fids[0] == pytest.approx(ckpt["val/fid_classifier"], rel=0.02)


def test_real_images_score_near_the_floor_and_noise_far(tmp_path, cache_dir):
    dm = instantiate_checked(eval_cfg(cache_dir, "data=digits"), "data")
    real, _ = dm.real_images("train", 200)
    real = real.mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    noise = np.random.default_rng(0).integers(0, 256, real.shape, dtype=np.uint8)
    scores = {}
    for name, images in (("real", real), ("noise", noise)):
        samples_io.write_npz(tmp_path / f"{name}.npz", images)
        scores[name] = evaluate(eval_cfg(cache_dir, f"samples={tmp_path / name}.npz", "data=digits"))
    floor = scores["real"]["val/fid_classifier_floor"]
    assert scores["real"]["val/fid_classifier"] <= 1.5 * floor + 0.5
    assert scores["noise"]["val/fid_classifier"] > 20 * scores["real"]["val/fid_classifier"] + 10


def test_fewer_samples_than_kid_subsets_are_scored_with_a_note(tmp_path, cache_dir):
    dm = instantiate_checked(eval_cfg(cache_dir, "data=digits"), "data")
    real, _ = dm.real_images("train", 30)
    np.save(tmp_path / "few.npy", real.numpy())
    m = evaluate(eval_cfg(cache_dir, f"samples={tmp_path / 'few.npy'}", "data=digits", f"out={tmp_path / 'o.json'}"))
    assert "KID on subsets of 30 samples" in m["eval/notes"] and math.isfinite(m["val/kid_classifier"])
    assert json.loads((tmp_path / "o.json").read_text())["eval/n_samples"] == 30


# -- bad inputs --------------------------------------------------------------------------------------------------
def bad_files(root) -> dict[str, object]:
    """name -> path of a bad sample input (8x8 grey digits are the data)."""
    rng = np.random.default_rng(0)
    ok = rng.integers(0, 256, (10, 8, 8, 1), dtype=np.uint8)
    arrays = {
        "2-d array": ok.reshape(10, 64),
        "no channel axis": rng.integers(0, 256, (10, 8, 8, 5), dtype=np.uint8),
        "wrong size": rng.integers(0, 256, (10, 16, 16, 1), dtype=np.uint8),
        "floats above 1": ok.astype(np.float32),
        "floats in [-1, 1]": ok.astype(np.float32) / 127.5 - 1,
        "negative integers": ok.astype(np.int16) - 5,
        "NaN": np.full((10, 8, 8), np.nan, dtype=np.float32),
        "booleans": ok > 100,
        "one sample": ok[:1],
    }
    paths = {}
    for name, array in arrays.items():
        paths[name] = root / f"{''.join(c if c.isalnum() else '_' for c in name)}.npy"  # no [ ] , in an override
        np.save(paths[name], array)
    paths["pickled list"] = root / "pickled.npy"
    paths["pickled list"].write_bytes(pickle.dumps([ok]))
    paths["object array"] = root / "object.npy"
    np.save(paths["object array"], np.array([ok, None], dtype=object), allow_pickle=True)
    paths["torch file"] = root / "torch.npz"
    torch.save({"samples": torch.zeros(2, 8, 8)}, paths["torch file"])
    paths["truncated npz"] = root / "trunc.npz"
    samples_io.write_npz(paths["truncated npz"], ok)
    paths["truncated npz"].write_bytes(paths["truncated npz"].read_bytes()[:300])
    paths["npz without samples"] = root / "two.npz"
    np.savez(paths["npz without samples"], images=ok, extra=ok)
    paths["empty npz"] = root / "empty.npz"
    np.savez(paths["empty npz"])
    paths["text file"] = root / "samples.txt"
    paths["text file"].write_text("0 1 2")
    paths["missing"] = root / "nowhere.npz"
    paths["empty folder"] = root / "empty"
    paths["empty folder"].mkdir()
    paths["broken image"] = root / "broken"
    paths["broken image"].mkdir()
    Image.new("L", (8, 8)).save(paths["broken image"] / "0.png")
    (paths["broken image"] / "1.png").write_bytes(b"not a png")
    paths["mixed sizes"] = root / "mixed"
    paths["mixed sizes"].mkdir()
    Image.new("L", (8, 8)).save(paths["mixed sizes"] / "0.png")
    Image.new("L", (9, 8)).save(paths["mixed sizes"] / "1.png")
    return paths


BAD = {  # name -> words the message must hold
    "2-d array": ["(10, 64)", "(N, H, W, C)"],
    "no channel axis": ["(10, 8, 8, 5)", "C = 1 or 3"],
    "wrong size": ["16x16", "data=digits has 8x8", "data.image_size=16"],
    "floats above 1": ["[0, 1]", "255", "astype(np.uint8)"],
    "floats in [-1, 1]": ["[0, 1]", "(x + 1) / 2"],
    "negative integers": ["0..255", "[-5,"],
    "NaN": ["NaN"],
    "booleans": ["must be numbers", "bool"],
    "one sample": ["1 sample(s)", "at least 2", "metrics.kid_subset_size=50"],
    "pickled list": ["allow_pickle=False", "np.savez"],
    "object array": ["allow_pickle=False"],
    "torch file": ["cannot be read as a numpy array"],
    "truncated npz": ["cannot be read as a numpy array"],
    "npz without samples": ["['images', 'extra']", "key 'samples'"],
    "empty npz": ["(none)", "key 'samples'"],
    "text file": ["'.txt' file", ".npz or .npy"],
    "missing": ["no such file or folder"],
    "empty folder": ["no image files", "format=png"],
    "broken image": ["1.png", "cannot read"],
    "mixed sizes": ["1.png is 9x8", "0.png is 8x8", "same size"],
}


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    return bad_files(tmp_path_factory.mktemp("bad_samples"))


@pytest.mark.parametrize("name", list(BAD))
def test_bad_sample_input_is_a_one_screen_data_error(name, bad, cache_dir):
    with pytest.raises(DataError) as err:
        evaluate(eval_cfg(cache_dir, f"samples={bad[name]}", "data=digits"))
    text = err.value.render()
    for word in BAD[name]:
        assert word in text, (word, text)
    assert err.value.fix and len(text.splitlines()) <= 4


@pytest.mark.parametrize(
    "args, words",
    [
        (["samples=x.npz", "ckpt_path=y.ckpt"], ["both given"]),
        ([], ["nothing to score", "samples="]),
        (["samples=x.npz"], ["needs data=", "mnist5k"]),
        (["ckpt_path=y.ckpt", "data=digits"], ["data= was given with ckpt_path="]),
        (["samples=x.npz", "data=digits", "sampler=ddim"], ["sampler="]),
        (["samples=x.npz", "data=pydoc"], ["data=pydoc is text"]),
    ],
)
def test_eval_needs_exactly_one_thing_to_score(args, words, cache_dir):
    with pytest.raises(ConfigError) as err:
        evaluate(eval_cfg(cache_dir, *args))
    for word in words:
        assert word in err.value.render()


def test_sample_refuses_bad_format_and_out(vae_ckpt, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old.png").write_bytes(b"")
    for args, words in [
        (["format=jpeg"], ["format=jpeg", "grid", "npz", "png"]),
        (["format=npz", f"out={tmp_path / 'x.png'}"], ["writes an .npz", "x.npz"]),
        (["format=png", f"out={tmp_path / 'x.png'}"], ["folder of PNGs"]),
        (["format=png", f"out={tmp_path / 'full'}"], ["already holds files"]),
    ]:
        with pytest.raises(ConfigError) as err:
            sample(sample_cfg(vae_ckpt, *args))
        assert all(w in err.value.render() for w in words), err.value.render()


@pytest.mark.parametrize("name", ["pickled list", "wrong size"])
def test_bad_samples_exit_2_through_the_entry(name, bad, tmp_path):
    proc = run_entry("eval.py", f"samples={bad[name]}", "data=digits", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "DataError" in proc.stderr
    assert all(word in proc.stderr for word in BAD[name])
    assert not list(tmp_path.glob("*.json"))
