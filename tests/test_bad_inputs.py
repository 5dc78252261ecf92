"""The bad-input table: each mistake, given to the real entry point, gives a one-screen message that names the
setting and the fix, exits with status 2, prints no traceback, and leaves the checkpoints already on disk intact.

The cases run two at a time (the machine has two cores), once per module, each in a child forked from one
interpreter that imported the suite once (`tests.forked_entries`): the script runs as ``__main__`` as
``python train.py ...`` would, without paying ~5 s of imports per case; one case is checked against a real
subprocess.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest
import torch

from gensuite.cli.command_line import warn_cpu_oversubscription
from gensuite.data.image_folder import ImageFolder, _LazyImages
from gensuite.errors import DataError
from gensuite.train import train

from .conftest import TINY, compose_cfg, run_entry
from .forked_entries import run_entries

SMALL = ["model.encoder.width=8", "model.decoder.width=8"]
FILE_KEYS = ["corrupt", "foreign", "mixed", "empty_dir", "empty_text", "binary_text", "lazy"]


def image_folder_with_a_broken_png(folder: Path, good: int = 10) -> Path:
    """``good`` small PNGs and ``broken.png``, whose header opens but whose pixel chunk fails its checksum: only
    a check that reads the file (PIL's verify) finds it before a DataLoader worker would."""
    from PIL import Image

    folder.mkdir()
    for i in range(good):
        Image.new("L", (8, 8), 20 * i).save(folder / f"img{i:02d}.png")
    buf = io.BytesIO()
    Image.new("L", (8, 8), 7).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[data.find(b"IDAT") + 6] ^= 0xFF
    (folder / "broken.png").write_bytes(bytes(data))
    return folder


def cases(ckpt: Path, files: dict[str, Path], log_dir: Path) -> dict[str, tuple[str, list[str], list[str]]]:
    """name -> (script, arguments, words the message must contain)."""
    logs = f"paths.log_dir={log_dir}"
    return {
        "unknown model": ("train.py", ["model=foo", logs], ["model/foo", "Available options", "vae"]),
        "unknown part": ("train.py", ["model/encoder=foo", logs], ["model/encoder/foo", "Available options"]),
        "unknown data": ("train.py", ["data=foo", logs], ["data/foo", "mnist5k"]),
        "misspelt key": ("train.py", ["model.latnt_dim=4", logs], ["latnt_dim", "not in struct"]),
        "depth vs image size": (
            "train.py",
            ["model.decoder.depth=3", logs],
            ["model.decoder.depth=3", "data.image_size", "depth <= 2"],
        ),
        "odd image size vs depth": (
            "train.py",
            ["data.image_size=30", "model.encoder.depth=2", logs],
            ["model.encoder.depth", "image_size=30", "fix"],
        ),
        "latent vs decoder": (
            "train.py",
            ["model.decoder.latent_dim=8", logs],
            ["model.decoder.latent_dim", "model.latent_dim", "fix"],
        ),
        "negative size": ("train.py", ["model.latent_dim=-4", logs], ["model", "latent_dim", "-4"]),
        "zero width": ("train.py", ["model.encoder.width=0", logs], ["model.encoder.width", "> 0"]),
        "missing checkpoint": ("train.py", ["ckpt_path=/nonexistent/x.ckpt", logs], ["ckpt_path", "no such file"]),
        "corrupt checkpoint": ("train.py", [f"ckpt_path={files['corrupt']}", logs], ["cannot be read", "fix"]),
        "checkpoint of another family": (
            "train.py",
            ["model=gan", f"ckpt_path={ckpt}", logs],
            ["'vae' checkpoint", "model=gan", "resume with model=vae"],
        ),
        "latent diffusion on a non-VAE file": (
            "train.py",
            ["model=latent_diffusion", f"autoencoder_ckpt={files['foreign']}", logs],
            ["autoencoder_ckpt", "not a gensuite checkpoint"],
        ),
        "foreign checkpoint": ("train.py", [f"ckpt_path={files['foreign']}", logs], ["not a gensuite checkpoint"]),
        "checkpoint of other shapes": (
            "train.py",
            [f"ckpt_path={ckpt}", "model.latent_dim=8", *SMALL, logs],
            ["does not fit", "model.latent_dim: 16 in the checkpoint, 8 now"],
        ),
        "unwritable log folder": ("train.py", ["paths.log_dir=/proc/gensuite-nope"], ["paths.log_dir", "writable"]),
        "missing data path": (
            "train.py",
            ["data=image_folder", "data.path=/nonexistent/images", logs],
            ["data.path", "not a folder"],
        ),
        "no data path": ("train.py", ["data=image_folder", logs], ["data.path", "needs a folder"]),
        "non-image files": (
            "train.py",
            ["data=image_folder", f"data.path={files['mixed']}", logs],
            ["notes.txt", "not an image", "skip_bad_files"],
        ),
        "offline download": (
            "train.py",
            ["data=mnist", f"data.root={files['empty_dir']}", logs],
            ["data=mnist", "could not be downloaded", "data=mnist5k"],
        ),
        "empty text file": (
            "train.py",
            ["model=transformer", "data=text", f"data.path={files['empty_text']}", logs],
            ["data.path", "is empty", "UTF-8"],
        ),
        "binary text file": (
            "train.py",
            ["model=transformer", "data=text", f"data.path={files['binary_text']}", logs],
            ["data.path", "binary", "UTF-8"],
        ),
        "unknown feature extractor": ("train.py", ["metrics.features=foo", logs], ["metrics.features", "classifier"]),
        "gpu without a gpu": ("train.py", ["trainer=gpu", logs], ["trainer.accelerator", "trainer=cpu"]),
        # options Lightning refuses under manual optimisation (a MisconfigurationException from inside fit)
        "gan accumulating gradients": (
            "train.py",
            ["model=gan", "trainer.accumulate_grad_batches=2", logs],
            ["trainer.accumulate_grad_batches=2", "optimises manually", "trainer.accumulate_grad_batches=1"],
        ),
        "gan with the trainer's clipping": (
            "train.py",
            ["model=gan", "trainer.gradient_clip_val=1.0", logs],
            ["trainer.gradient_clip_val=1.0", "optimises manually", "model.clip_grad_g=1.0"],
        ),
        "sample without checkpoint": ("sample.py", [], ["ckpt_path"]),
        "sample n=0": ("sample.py", [f"ckpt_path={ckpt}", "n=0"], ["n must be >= 1"]),
        "eval of a missing checkpoint": ("eval.py", ["ckpt_path=/nonexistent/y.ckpt"], ["ckpt_path", "no such file"]),
        # values of the wrong type: the key, the value and the expected type, from the target's type hints or
        # from the kind of the yaml default
        "max_epochs not a number": (
            "train.py",
            ["trainer.max_epochs=abc", logs],
            ["trainer.max_epochs=abc", "integer"],
        ),
        "max_steps not a number": ("train.py", ["trainer.max_steps=abc", logs], ["trainer.max_steps=abc", "integer"]),
        "max_epochs a fraction": ("train.py", ["trainer.max_epochs=2.5", logs], ["trainer.max_epochs", "integer"]),
        "clip value not a number": (
            "train.py",
            ["trainer.gradient_clip_val=abc", logs],
            ["trainer.gradient_clip_val=abc", "a number or null"],
        ),
        "deterministic maybe": ("train.py", ["trainer.deterministic=maybe", logs], ["trainer.deterministic", "'warn'"]),
        "bool setting maybe": ("train.py", ["auto_resume=maybe", logs], ["auto_resume=maybe", "true or false"]),
        "part size not a number": ("train.py", ["model.latent_dim=abc", logs], ["model.latent_dim=abc", "integer"]),
        "unknown trainer argument": (
            "train.py",
            ["+trainer.max_epoch=3", logs],
            ["trainer.max_epoch", "did you mean trainer.max_epochs?"],
        ),
        "bad value in a sweep": ("train.py", ["-m", "seed=1,abc", logs], ["seed=abc", "integer"]),
        "sample seed=abc": ("sample.py", [f"ckpt_path={ckpt}", "seed=abc"], ["seed=abc", "integer"]),
        "sample n=abc": ("sample.py", [f"ckpt_path={ckpt}", "n=abc"], ["n=abc", "integer"]),
        "eval n_samples=abc": (
            "eval.py",
            [f"ckpt_path={ckpt}", "metrics.n_samples=abc"],
            ["metrics.n_samples=abc", "integer"],
        ),
        # runs= points at a folder without runs: were the check to let it through, compare would not train
        "compare seeds=abc": ("compare.py", ["seeds=abc", f"runs={files['empty_dir']}"], ["seeds=abc", "integer"]),
        # Hydra's own errors, in the suite's format with the closest valid key or option
        "misspelt key, suggested": (
            "train.py",
            ["model.latnet_dim=4", logs],
            ["model.latnet_dim", "not in struct", "did you mean model.latent_dim?"],
        ),
        "misspelt option, suggested": (
            "train.py",
            ["model=vea", logs],
            ["model/vea", "Available options", "did you mean model=vae?"],
        ),
        "misspelt group, suggested": ("train.py", ["modle=vae", logs], ["modle", "did you mean model?"]),
        "setting at the wrong level": ("train.py", ["latent_dim=4", logs], ["did you mean model.latent_dim?"]),
        "sweep without -m": ("train.py", ["seed=1,2", logs], ["Ambiguous value", "--multirun"]),
        "compare overrides unquoted": (
            "compare.py",
            ["overrides=[a=1]", f"runs={files['empty_dir']}"],
            ["cannot read the override 'overrides=[a=1]'", """'overrides=["a=1"]'"""],
        ),
        "sample with a misspelt key": ("sample.py", [f"ckpt_path={ckpt}", "nn=4"], ["'nn'", "did you mean n?"]),
        "lazily read folder with a broken image": (
            "train.py",
            ["data=image_folder", f"data.path={files['lazy']}", "data.in_memory_limit=2", logs],
            ["cannot read image file", "broken.png", "skip_bad_files"],
        ),
    }


@pytest.fixture(scope="module")
def table(tmp_path_factory, cache_dir):
    root = tmp_path_factory.mktemp("bad")
    log_dir = root / "logs"
    earlier = train(compose_cfg([*TINY, *SMALL, f"paths.cache_dir={cache_dir}"], log_dir / "runs" / "earlier" / "1"))
    ckpt = earlier["output_dir"] / "checkpoints" / "last.ckpt"
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in log_dir.rglob("*.ckpt")}

    files = {"corrupt": root / "corrupt.ckpt", "foreign": root / "foreign.ckpt", "mixed": root / "mixed"}
    files["corrupt"].write_bytes(b"\x80\x02 this is not a checkpoint" * 10)
    torch.save({"weights": torch.zeros(3)}, files["foreign"])
    files["mixed"].mkdir()
    (files["mixed"] / "notes.txt").write_text("not an image")
    files["empty_text"] = root / "empty.txt"
    files["empty_text"].write_text("")
    files["binary_text"] = root / "binary.txt"
    files["binary_text"].write_bytes(bytes(range(256)) * 4)
    files["empty_dir"] = root / "no-data"
    files["empty_dir"].mkdir()
    files["lazy"] = image_folder_with_a_broken_png(root / "lazy")

    table = cases(ckpt, files, log_dir)
    results = run_entries({name: (script, args) for name, (script, args, _) in table.items()}, cwd=root)
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in before}
    return table, results, before, after


CASE_NAMES = list(cases(Path("x"), dict.fromkeys(FILE_KEYS, Path("x")), Path("x")))


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_input_gives_a_clear_short_message(table, name):
    cases_, results, _, _ = table
    proc = results[name]
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output[-2000:]  # the status of a user's mistake (1 would be Hydra's, or a bug)
    assert "Traceback" not in output, output[-3000:]
    for word in cases_[name][2]:
        assert word in output, (word, output[-2000:])
    message = proc.stderr.strip().splitlines()
    assert 0 < len(message) <= 30, proc.stderr  # one screen


def test_a_forked_case_matches_the_real_subprocess(table):
    """The forked runs stand for ``python train.py ...``: one case, run both ways, gives the same status and
    message."""
    cases_, results, _, _ = table
    name = "checkpoint of another family"  # past the heavy imports: the checkpoint is read and refused
    script, args, _ = cases_[name]
    real = run_entry(script, *args, cwd=Path(args[-1].split("=", 1)[1]).parent, real=True)
    assert real.returncode == results[name].returncode == 2
    assert real.stderr.strip() == results[name].stderr.strip()


def test_earlier_checkpoints_are_left_intact(table):
    _, _, before, after = table
    assert before and before == after


def test_lazily_read_folder_checks_every_file_up_front(tmp_path):
    """Past ``in_memory_limit`` files the folder is read lazily; a broken file is still found at setup, not in a
    DataLoader worker mid-epoch — and ``skip_bad_files`` skips and counts it as in memory."""
    folder = image_folder_with_a_broken_png(tmp_path / "images")
    strict = ImageFolder(path=str(folder), channels=1, image_size=8, in_memory_limit=2)
    with pytest.raises(DataError, match="cannot read image file .*broken.png"):
        strict.setup()

    lenient = ImageFolder(path=str(folder), channels=1, image_size=8, in_memory_limit=2, skip_bad_files=True)
    lenient.setup()
    assert isinstance(lenient.train, _LazyImages)
    assert lenient.skipped == [str(folder / "broken.png")]
    assert len(lenient.train) + len(lenient.val) + len(lenient.test) == 10 and len(lenient.test) >= 1
    x, _ = next(iter(lenient.train_dataloader()))  # the files that were kept decode
    assert x.shape[1:] == (1, 8, 8)


def test_more_cpu_processes_than_cores_is_a_one_line_warning(tmp_path, capsys):
    over = compose_cfg(["trainer=ddp", "trainer.accelerator=cpu", f"trainer.devices={(os.cpu_count() or 1) + 1}"])
    warn_cpu_oversubscription(over)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "warning: trainer.devices=" in err[0], err
    warn_cpu_oversubscription(compose_cfg(["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=1"]))
    assert capsys.readouterr().err == ""
