"""Hostile sample files and image folders (`gensuite.data.limits`): every crafted file, given to the real
``eval.py samples=... data=mnist5k``, exits 2 with a one-screen ``DataError`` naming the file and no traceback,
before the data module loads or a reference is built (about a second a case). Files that declare far more than
they hold are refused from their headers without allocating; a file at a limit passes, and raising the setting
lets a benign file past it through."""

from __future__ import annotations

import io
import pickle
import struct
import tracemalloc
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gensuite.data.files import read_image
from gensuite.data.limits import MAX_COMPRESSION_RATIO, MAX_FILES, MAX_IMAGE_PIXELS, MAX_SAMPLE_BYTES
from gensuite.errors import ConfigError, DataError
from gensuite.runs import sample_files as samples_io

from .conftest import run_entry

GOOD = np.random.default_rng(0).integers(0, 256, (10, 28, 28, 1), dtype=np.uint8)  # mnist5k's size


def npy_header(shape: tuple[int, ...], descr: str = "|u1") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def deflate_bomb(path: Path, inflated: int) -> Path:
    """An .npz whose ``samples`` member is ``inflated`` bytes of zeros deflated ~1000:1."""
    n = inflated // (28 * 28)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("samples.npy", "w") as m:
        m.write(npy_header((n, 28, 28, 1)))
        zeros = bytes(1 << 20)
        for left in range(n * 28 * 28, 0, -len(zeros)):
            m.write(zeros[: min(left, len(zeros))])
    return path


def png(width: int, height: int, value: int | None = 0) -> bytes:
    """A grey PNG, of one ``value`` or (None) of noise, which compresses too little to be whole in half the file."""
    buf = io.BytesIO()
    noise = np.random.default_rng(1).integers(0, 256, (height, width), dtype=np.uint8)
    (Image.new("L", (width, height), value) if value is not None else Image.fromarray(noise)).save(buf, "PNG")
    return buf.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A valid 8x8 PNG whose IHDR is patched to declare ``width`` x ``height`` (its CRC recomputed): 80 bytes."""
    data = bytearray(png(8, 8))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def folder_of(root: Path, name: str, files: dict[str, bytes]) -> Path:
    folder = root / name
    folder.mkdir()
    for file, data in files.items():
        (folder / file).write_bytes(data)
    return folder


def zip_of(path: Path, members: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


# name -> words the message must hold besides the file's path
WORDS = {
    "truncated npy": ["truncated", "(10, 28, 28, 1)"],
    "2^40 entries declared": ["(268435456, 64, 64, 1)", "1.0 TiB", "2.0 GiB", "GENSUITE_MAX_SAMPLE_BYTES="],
    "object dtype": ["Python objects", "allow_pickle=False"],
    "pickle": ["pickled", "allow_pickle=False"],
    "npz not a zip": ["cannot be read as a numpy array"],
    "npz ../ member": ["'../samples.npy'", "<key>.npy"],
    "zip without arrays": ["holds no .npy arrays"],
    "deflate bomb": ["64.0 MiB", "compression ratio", "zip bomb", "GENSUITE_MAX_COMPRESSION_RATIO="],
    "bzip2 member": ["zip method 12"],
    "structured dtype": ["must be numbers", "('a', '|u1')"],
    "nested dtype": ["must be numbers"],
    "complex": ["must be numbers", "complex64"],
    "big-endian float128": ["must be numbers"],
    "NaN": ["NaN"],
    "wrong rank": ["(10, 784)", "expected 3 or 4 axes"],
    "truncated png": ["3.png", "cannot read"],
    "14,000^2 png": ["3.png", "196,000,000 pixels", "GENSUITE_MAX_IMAGE_PIXELS=", "not decoded"],
    "text as png": ["3.png", "cannot read"],
    "float labels": ["'labels'", "must be integers", "float32"],
    "string labels": ["'labels'", "must be integers"],
}


def hostile_files(root: Path) -> dict[str, Path]:
    """name (`WORDS`) -> path of a crafted sample file or folder; the data is mnist5k (28x28 grey)."""
    good = npy_bytes(GOOD)

    def w(name: str, data: bytes) -> Path:
        (root / name).write_bytes(data)
        return root / name

    nan = GOOD.astype(np.float32) / 255
    nan[3, 5, 5] = np.nan
    pngs = {f"{i}.png": png(28, 28, 20 * i) for i in range(3)}
    labels = lambda y: {"samples.npy": good, "labels.npy": npy_bytes(y)}  # noqa: E731
    return {
        "truncated npy": w("trunc.npy", good[:-100]),
        "2^40 entries declared": w("huge.npy", npy_header((1 << 28, 64, 64, 1)) + bytes(100)),
        "object dtype": w("object.npy", npy_bytes(np.array([GOOD, None], dtype=object))),
        "pickle": w("pickled.npy", pickle.dumps([GOOD])),
        "npz not a zip": w("junk.npz", b"PK\x03\x04" + bytes(range(256)) * 4),
        "npz ../ member": zip_of(root / "escape.npz", {"../samples.npy": good}),
        "zip without arrays": zip_of(root / "text.npz", {"notes.txt": b"hi"}),
        "deflate bomb": deflate_bomb(root / "bomb.npz", 64 << 20),
        "bzip2 member": zip_of(root / "bz.npz", {"samples.npy": good}, zipfile.ZIP_BZIP2),
        "structured dtype": w("struct.npy", npy_bytes(np.zeros((10, 28, 28), dtype=[("a", "u1"), ("b", "f4")]))),
        "nested dtype": w("nested.npy", npy_bytes(np.zeros((10, 28, 28), dtype=[("a", [("b", "u1", (2,))])]))),
        "complex": w("complex.npy", npy_bytes(GOOD.astype(np.complex64))),
        "big-endian float128": w("f16.npy", npy_header((10, 28, 28), ">f16") + bytes(10 * 28 * 28 * 16)),
        "NaN": w("nan.npy", npy_bytes(nan)),
        "good": w("good.npy", good),  # not hostile: the samples of runs whose data is the hostile part
        "wrong rank": w("flat.npy", npy_bytes(GOOD.reshape(10, -1))),
        "truncated png": folder_of(root, "trunc_png", {**pngs, "3.png": png(28, 28, None)[:400]}),
        "14,000^2 png": folder_of(root, "big_png", {**pngs, "3.png": png_declaring(14000, 14000)}),
        "text as png": folder_of(root, "text_png", {**pngs, "3.png": b"not a png"}),
        "float labels": zip_of(root / "flabels.npz", labels(np.zeros(10, np.float32))),
        "string labels": zip_of(root / "slabels.npz", labels(np.array(list("abcdefghij")))),
    }


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, Path]:
    return hostile_files(tmp_path_factory.mktemp("hostile"))


def run_all(table: dict[str, tuple[list[str], dict]], cwd: Path) -> dict:
    """``name -> (eval.py arguments, environment)`` -> ``name -> CompletedProcess``, two at a time (two cores)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        # a timeout: a file that wrongly passed would start a whole evaluation (minutes)
        run = lambda args, env: run_entry("eval.py", *args, cwd=cwd, env=env, timeout=120)  # noqa: E731
        futures = {name: pool.submit(run, args, env) for name, (args, env) in table.items()}
        return {name: f.result() for name, f in futures.items()}


# runs beyond one file each: (arguments, environment, words); {name} is the path of hostile file `name`
MORE = {
    "data=image_folder 14,000^2 png": (
        ["samples={good}", "data=image_folder", "data.path={14,000^2 png}", "data.channels=1", "data.image_size=28"],
        {},
        ["image file", "3.png", "196,000,000 pixels", "GENSUITE_MAX_IMAGE_PIXELS=", "data.skip_bad_files"],
    ),
    "too many files": (["samples={truncated png}", "data=mnist5k"], {MAX_FILES.env: "3"}, ["more than 3 files"]),
    "pixel limit lowered": (
        ["samples={text as png}", "data=mnist5k"],
        {MAX_IMAGE_PIXELS.env: "500"},
        ["0.png", "784 pixels", "GENSUITE_MAX_IMAGE_PIXELS=784"],
    ),
    "bad limit setting": (["samples={NaN}", "data=mnist5k"], {MAX_SAMPLE_BYTES.env: "lots"}, ["'lots'", "positive"]),
}


@pytest.fixture(scope="module")
def results(hostile, tmp_path_factory, cache_dir) -> dict:
    table = {name: ([f"samples={path}", "data=mnist5k"], {}) for name, path in hostile.items() if name in WORDS}
    for name, (args, env, _) in MORE.items():
        table[name] = ([a.format(**{k: str(v) for k, v in hostile.items()}) for a in args], env)
    return run_all(table, tmp_path_factory.mktemp("hostile_runs"))


@pytest.mark.parametrize("name", [*WORDS, *MORE])
def test_hostile_input_exits_2_with_one_screen(name, hostile, results):
    proc = results[name]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    kind = "ConfigError: " if name == "bad limit setting" else "DataError: "
    assert lines and lines[0].startswith(kind), proc.stderr[-3000:]
    assert len(lines) <= 6, proc.stderr
    if name in hostile:
        assert str(hostile[name]) in lines[0], lines[0]
    for word in WORDS.get(name) or MORE[name][2]:
        assert word in proc.stderr, (word, proc.stderr)


# -- refused before allocating ------------------------------------------------------------------------------------
def peak_bytes_of(call) -> tuple[BaseException | None, int]:
    """``call()``'s exception (or None) and the peak bytes Python allocated meanwhile."""
    tracemalloc.start()
    try:
        call()
        err = None
    except Exception as e:  # noqa: BLE001 - returned for the caller to check
        err = e
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return err, peak


@pytest.mark.parametrize("name", ["2^40 entries declared", "deflate bomb", "truncated npy", "14,000^2 png"])
def test_refused_from_the_header_without_allocating(name, hostile):
    path = hostile[name]
    if name == "2^40 entries declared":
        assert path.stat().st_size < 300  # 200 bytes declaring 2^40 entries
    err, peak = peak_bytes_of(lambda: samples_io.read_samples(path, 1))
    assert isinstance(err, DataError), err
    assert peak < 4 << 20, f"{peak:,} bytes allocated before refusing"


def test_a_data_folder_image_past_the_pixel_limit_is_not_decoded(hostile):
    err, peak = peak_bytes_of(lambda: read_image(hostile["14,000^2 png"] / "3.png", 1, 28))
    assert isinstance(err, DataError) and "GENSUITE_MAX_IMAGE_PIXELS" in err.render()
    assert peak < 4 << 20


def test_a_bomb_within_the_ratio_is_bounded_by_the_byte_limit(tmp_path, monkeypatch):
    bomb = deflate_bomb(tmp_path / "bomb.npz", 8 << 20)
    monkeypatch.setenv(MAX_COMPRESSION_RATIO.env, "100000")
    monkeypatch.setenv(MAX_SAMPLE_BYTES.env, str(4 << 20))
    err, peak = peak_bytes_of(lambda: samples_io.read_samples(bomb, 1))
    assert isinstance(err, DataError) and "inflate to 8.0 MiB" in err.render(), err
    assert peak < 1 << 20


def test_a_zip_member_that_holds_more_than_it_declares_is_refused(tmp_path):
    """The sizes are taken from the zip's directory, and a member is never read past its declared size: one that
    declares 100 bytes fewer than its stream holds is refused, not inflated whole."""
    path = zip_of(tmp_path / "liar.npz", {"samples.npy": npy_bytes(GOOD)}, zipfile.ZIP_DEFLATED)
    data = bytearray(path.read_bytes())
    # the central directory's uncompressed size of the member, then the local header's: 100 bytes fewer
    for sig, at in ((b"PK\x01\x02", 24), (b"PK\x03\x04", 22)):
        i = data.find(sig)
        (size,) = struct.unpack("<I", data[i + at : i + at + 4])
        data[i + at : i + at + 4] = struct.pack("<I", size - 100)
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="truncated|cannot be read"):
        samples_io.read_samples(path, 1)


# -- at the limits -------------------------------------------------------------------------------------------------
def test_a_file_at_the_byte_limit_passes_and_one_byte_over_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "ok.npz"
    samples_io.write_npz(path, GOOD)
    monkeypatch.setenv(MAX_SAMPLE_BYTES.env, str(GOOD.nbytes))
    array, _ = samples_io.read_samples(path, 1)
    assert np.array_equal(array, GOOD)
    monkeypatch.setenv(MAX_SAMPLE_BYTES.env, str(GOOD.nbytes - 1))
    with pytest.raises(DataError) as err:
        samples_io.read_samples(path, 1)
    assert f"{MAX_SAMPLE_BYTES.env}={GOOD.nbytes}" in err.value.render()  # the value that lets it through


def test_raising_the_limits_lets_benign_files_through(tmp_path, monkeypatch):
    big = tmp_path / "big.npy"
    np.save(big, np.zeros((3, 64, 64), np.uint8))
    folder = folder_of(tmp_path, "images", {f"{i}.png": png(64, 64, i) for i in range(3)})
    bomb = deflate_bomb(tmp_path / "zeros.npz", 4 << 20)  # 4 MiB of zeros: ~1000:1, like a collapsed generator's
    monkeypatch.setenv(MAX_SAMPLE_BYTES.env, "10000")
    monkeypatch.setenv(MAX_IMAGE_PIXELS.env, "4000")
    for path in (big, folder, bomb):
        with pytest.raises(DataError):
            samples_io.read_samples(path, 1)
    monkeypatch.setenv(MAX_SAMPLE_BYTES.env, "1e8")
    monkeypatch.setenv(MAX_IMAGE_PIXELS.env, "4096")
    monkeypatch.setenv(MAX_COMPRESSION_RATIO.env, "2000")
    assert samples_io.read_samples(big, 1)[0].shape == (3, 64, 64)
    assert samples_io.read_samples(folder, 1)[0].shape == (3, 64, 64)
    assert samples_io.read_samples(bomb, 1)[0].shape == ((4 << 20) // 784, 28, 28, 1)


def test_defaults_let_real_use_through(tmp_path):
    """50,000 CIFAR-size samples (153 MB) and a 24-megapixel photo are under the defaults."""
    assert MAX_SAMPLE_BYTES.value() > 50_000 * 32 * 32 * 3 and MAX_IMAGE_PIXELS.value() > 6000 * 4000
    assert MAX_FILES.value() > 1_281_167  # ImageNet's training images
    path = tmp_path / "photo.png"
    path.write_bytes(png_declaring(6000, 4000))
    with pytest.raises(DataError, match="cannot read"):  # past the header: decoding its 8x8 data fails, not a limit
        read_image(path, 1, 28)


def test_other_layouts_still_read(tmp_path):
    """Big-endian and Fortran-ordered arrays and 16-bit unsigned integers read as before (or newly: torch takes
    neither byte-swapped nor uint16 arrays), and labels come back as int64."""
    for array in (GOOD.astype(">f4") / 255, np.asfortranarray(GOOD), GOOD.astype(np.uint16)):
        np.save(tmp_path / "x.npy", array)
        got, source = samples_io.read_samples(tmp_path / "x.npy", 1)
        np.testing.assert_array_equal(got, array)
        x, _ = samples_io.as_images(got, 1, 28, source)
        np.testing.assert_allclose(x.numpy(), GOOD.transpose(0, 3, 1, 2) / 255, atol=1e-6)
    path = tmp_path / "y.npz"
    samples_io.write_npz(path, GOOD, np.arange(10, dtype=np.int32))
    assert samples_io.read_labels(path).dtype == np.int64


def test_a_bad_limit_setting_is_a_config_error(monkeypatch):
    monkeypatch.setenv(MAX_SAMPLE_BYTES.env, "-3")
    with pytest.raises(ConfigError, match="GENSUITE_MAX_SAMPLE_BYTES"):
        MAX_SAMPLE_BYTES.value()
    monkeypatch.setenv(MAX_SAMPLE_BYTES.env, "2_000_000")
    assert MAX_SAMPLE_BYTES.value() == 2_000_000
