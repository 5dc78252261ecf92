"""No write follows a planted link (issue 28, item 2).

Each entry-point case plants a symbolic link at an output's name, pointing at a victim file outside the run,
runs the real entry point and checks: exit status 2, the first line of stderr names the link, no traceback,
the victim's bytes unchanged, the link still there. The helpers of `gensuite.safe_files` are tested directly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from gensuite import safe_files
from gensuite.errors import ConfigError
from gensuite.runs.checkpoint_io import TMP_SUFFIX, atomic_save
from gensuite.runs.lock import LOCK_NAME, hold_run_folder, release_all
from gensuite.safe_files import (
    RUN_FOLDER_NAMES,
    atomic_writer,
    check_run_folder,
    open_new_or_own,
    probe_writable,
    refuse_link,
    write_bytes_atomic,
    write_text_atomic,
)
from gensuite.train import train

from .conftest import TINY, compose_cfg, run_entry

VICTIM = b"export PATH=/usr/bin  # the victim's own bytes\n"
SMALL_VAE = ["data=digits", "model.encoder.width=8", "model.decoder.width=8", "callbacks.evaluation.grid_size=4"]
QUICK_EVAL = ["metrics.n_samples=100", "metrics.batch_size=100", "metrics.kid_subset_size=50", "metrics.bootstrap=0"]


def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim.txt"
    path.write_bytes(VICTIM)
    return path


def plant(link: Path, target: Path) -> Path:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)
    return link


def assert_refused(proc, link: Path, target: Path, victim_file: Path) -> None:
    """Exit 2, a one-screen message whose first line names the link, and nothing changed."""
    assert proc.returncode == 2, (proc.stdout[-2000:], proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    first = proc.stderr.strip().splitlines()[0]
    assert str(link) in first and "symbolic link" in first, proc.stderr[-3000:]
    assert "fix: remove the link" in proc.stderr
    assert link.is_symlink() and os.readlink(link) == str(target)  # left as found
    assert victim_file.read_bytes() == VICTIM


# -- the helpers ---------------------------------------------------------------------------------------------
def test_atomic_writer_replaces_and_leaves_no_temporary_on_error(tmp_path):
    target = tmp_path / "out" / "metrics.json"
    write_text_atomic(target, "one")
    assert target.read_text() == "one"
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~safe_files._UMASK)  # as a plain open would make
    with pytest.raises(RuntimeError, match="boom"), atomic_writer(target) as f:
        f.write(b"half of it")
        raise RuntimeError("boom")
    assert target.read_text() == "one"
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.json"]


def test_a_link_at_the_name_or_below_the_root_is_refused_and_kept(tmp_path):
    bashrc = victim(tmp_path)
    run = tmp_path / "run"
    link = plant(run / "metrics.json", bashrc)
    with pytest.raises(ConfigError) as info:
        write_text_atomic(link, "{}", "out")
    text = info.value.render()
    assert f"{link} is a symbolic link (to {bashrc})" in text.splitlines()[0]
    assert "rm " in text and "out=<another path>" in text
    assert link.is_symlink() and bashrc.read_bytes() == VICTIM
    # a linked folder below the root
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    plant(run / "checkpoints", elsewhere)
    with pytest.raises(ConfigError, match="checkpoints is a symbolic link"):
        write_bytes_atomic(run / "checkpoints" / "last.ckpt", b"x", root=run)
    assert list(elsewhere.iterdir()) == []
    # the root itself, and what is above it, may be the user's own links
    alias = plant(tmp_path / "alias", run)
    write_text_atomic(alias / "other.json", "ok", root=alias)
    assert (run / "other.json").read_text() == "ok"
    refuse_link(alias / "x", root=alias)  # no error


def test_atomic_save_refuses_a_link_instead_of_replacing_it(tmp_path):
    bashrc = victim(tmp_path)
    link = plant(tmp_path / "run" / "checkpoints" / "last.ckpt", bashrc)
    with pytest.raises(ConfigError, match="last.ckpt is a symbolic link"):
        atomic_save({"w": torch.zeros(2)}, link)
    assert link.is_symlink() and bashrc.read_bytes() == VICTIM
    assert not list(link.parent.glob(f"*{TMP_SUFFIX}"))


def test_probe_takes_a_fresh_name_and_never_touches_a_planted_one(tmp_path):
    bashrc = victim(tmp_path)
    folder = tmp_path / "run"
    link = plant(folder / ".write-test", bashrc)
    probe_writable(folder)
    assert sorted(p.name for p in folder.iterdir()) == [".write-test"]
    assert link.is_symlink() and bashrc.read_bytes() == VICTIM


def test_lock_file_is_never_opened_through_a_link(tmp_path):
    bashrc = victim(tmp_path)
    folder = tmp_path / "run"
    link = plant(folder / LOCK_NAME, bashrc)
    with pytest.raises(ConfigError, match=f"{LOCK_NAME} is a symbolic link"):
        hold_run_folder(folder)
    release_all()
    assert link.is_symlink() and bashrc.read_bytes() == VICTIM
    # a hard link to a file elsewhere is refused too (the lock rewrites its file in place)
    link.unlink()
    os.link(bashrc, folder / LOCK_NAME)
    with pytest.raises(ConfigError, match="hard link"):
        open_new_or_own(folder / LOCK_NAME)
    assert bashrc.read_bytes() == VICTIM


def test_run_folder_check_covers_every_listed_name(tmp_path):
    assert LOCK_NAME in RUN_FOLDER_NAMES
    bashrc = victim(tmp_path)
    for name in [*RUN_FOLDER_NAMES, "reconstructions.png", "tensorboard/events.out.tfevents.1.host.1.0"]:
        run = tmp_path / f"run-{abs(hash(name))}"
        run.mkdir()
        link = plant(run / name, bashrc)
        with pytest.raises(ConfigError) as info:
            check_run_folder(run)
        outermost = run / Path(name).parts[0]  # .hydra/config.yaml under a real .hydra: the file itself
        assert str(link if not outermost.is_symlink() else outermost) in info.value.render(), name
    linked_run = plant(tmp_path / "linked-run", tmp_path / "run-elsewhere")
    with pytest.raises(ConfigError, match="where the run folder is written"):
        check_run_folder(linked_run)


# -- the entry points ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vae_run(tmp_path_factory, cache_dir):
    """One tiny VAE run on the 8x8 digits (trained once for this file): its folder."""
    out = tmp_path_factory.mktemp("hostile") / "run"
    train(compose_cfg([*TINY, *SMALL_VAE, "metrics.bootstrap=0", f"paths.cache_dir={cache_dir}"], out))
    return out


@pytest.fixture
def run_copy(vae_run, tmp_path):
    """A copy of the run folder holding only its last.ckpt (so that each case plants into a clean folder)."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes((vae_run / "checkpoints" / "last.ckpt").read_bytes())
    return run


def test_sample_grid_refuses_a_planted_link(run_copy, tmp_path):
    bashrc = victim(tmp_path)
    link = plant(run_copy / "samples-4-seed0.png", bashrc)
    proc = run_entry("sample.py", f"ckpt_path={run_copy / 'checkpoints' / 'last.ckpt'}", "n=4", cwd=tmp_path)
    assert_refused(proc, link, bashrc, bashrc)


def test_sample_png_folder_refuses_a_linked_folder_and_a_linked_file(run_copy, tmp_path):
    bashrc = victim(tmp_path)
    ckpt = run_copy / "checkpoints" / "last.ckpt"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = plant(run_copy / "samples-3-seed0", elsewhere)
    proc = run_entry("sample.py", f"ckpt_path={ckpt}", "n=3", "format=png", cwd=tmp_path)
    assert_refused(proc, link, elsewhere, bashrc)
    assert list(elsewhere.iterdir()) == []
    link.unlink()
    inner = plant(run_copy / "samples-3-seed0" / "00001.png", bashrc)
    proc = run_entry("sample.py", f"ckpt_path={ckpt}", "n=3", "format=png", cwd=tmp_path)
    assert_refused(proc, inner, bashrc, bashrc)


def test_sample_npz_and_out_refuse_a_planted_link(run_copy, tmp_path):
    bashrc = victim(tmp_path)
    ckpt = run_copy / "checkpoints" / "last.ckpt"
    link = plant(tmp_path / "mine.npz", bashrc)
    proc = run_entry("sample.py", f"ckpt_path={ckpt}", "n=2", "format=npz", f"out={link}", cwd=tmp_path)
    assert_refused(proc, link, bashrc, bashrc)


def test_sample_text_refuses_a_planted_link(tmp_path, cache_dir):
    from .test_samples_io import untrained_checkpoint

    text = ["model=transformer", "data=pydoc", "data.seq_len=16", "model.net.width=16", "model.net.depth=1",
            "model.net.heads=2", "model.text_length=8", f"paths.cache_dir={cache_dir}"]  # fmt: skip
    run = tmp_path / "textrun"
    run.mkdir()
    ckpt = untrained_checkpoint(run / "text.ckpt", text)
    bashrc = victim(tmp_path)
    link = plant(run / "samples-2-seed0.txt", bashrc)
    proc = run_entry("sample.py", f"ckpt_path={ckpt}", "n=2", cwd=tmp_path)
    assert_refused(proc, link, bashrc, bashrc)


def test_eval_json_refuses_a_planted_link(run_copy, tmp_path, cache_dir):
    bashrc = victim(tmp_path)
    link = plant(run_copy / "eval-last.json", bashrc)
    proc = run_entry(
        "eval.py", f"ckpt_path={run_copy / 'checkpoints' / 'last.ckpt'}", f"paths.cache_dir={cache_dir}", cwd=tmp_path
    )
    assert_refused(proc, link, bashrc, bashrc)


def test_eval_of_samples_refuses_a_link_beside_the_bundle(tmp_path, cache_dir):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    np.savez(bundle / "s.npz", samples=np.zeros((60, 8, 8, 1), dtype=np.uint8))
    bashrc = victim(tmp_path)
    link = plant(bundle / "eval-s.json", bashrc)
    proc = run_entry(
        "eval.py", f"samples={bundle / 's.npz'}", "data=digits", *QUICK_EVAL, f"paths.cache_dir={cache_dir}",
        cwd=tmp_path,
    )  # fmt: skip
    assert_refused(proc, link, bashrc, bashrc)


@pytest.mark.parametrize(
    "name", [LOCK_NAME, ".write-test", "metrics.json", "train.log", ".hydra/config.yaml", "checkpoints"]
)
def test_train_refuses_a_run_folder_with_a_planted_link(name, tmp_path, cache_dir):
    bashrc = victim(tmp_path)
    run = tmp_path / "run"
    target = bashrc
    if name == "checkpoints":
        target = tmp_path / "elsewhere"
        target.mkdir()
    link = plant(run / name, target)
    proc = run_entry(
        "train.py", *TINY, *SMALL_VAE, f"paths.cache_dir={cache_dir}", f"hydra.run.dir={run}", cwd=tmp_path
    )
    assert_refused(proc, link, target, bashrc)
    assert not (run / "train.log").is_file() or name == "train.log"  # refused before Hydra wrote anything
    if name == "checkpoints":
        assert list(target.iterdir()) == []


def test_train_from_python_refuses_a_planted_metrics_link(tmp_path, cache_dir):
    bashrc = victim(tmp_path)
    run = tmp_path / "run"
    link = plant(run / "metrics.json", bashrc)
    cfg = compose_cfg([*TINY, *SMALL_VAE, f"paths.cache_dir={cache_dir}"], run)
    with pytest.raises(ConfigError, match="metrics.json is a symbolic link"):
        train(cfg)
    assert link.is_symlink() and bashrc.read_bytes() == VICTIM
    assert sorted(p.name for p in run.iterdir()) == ["metrics.json"]  # refused before anything was written


def test_a_clean_run_folder_still_trains_and_writes_its_files(vae_run):
    names = {p.name for p in vae_run.iterdir()}
    assert {"metrics.json", "checkpoints", "samples.png"} <= names
    assert not any(n.startswith(".write-test") or n.endswith(".tmp") for n in names)
    assert json.loads((vae_run / "metrics.json").read_text())["run/family"] == "vae"
