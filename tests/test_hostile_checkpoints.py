"""Hostile checkpoints through the real entry points: resuming, loading and building never touch anything outside
the run, never cost more than a small file should, and every malformed file exits 2 in one screen.

Every crafted file and every victim lives in ``tmp_path``. Each test asserts the victims' bytes after the attack.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest
import torch

from gensuite.callbacks.checkpoint import inside

from .conftest import TINY, run_entry

SMALL = ["model=vae", "model.encoder.width=8", "model.decoder.width=8", "callbacks.evaluation.grid_size=4"]


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def victims(root: Path) -> Path:
    """A folder of files nobody may touch: what a recursive delete or an overwrite would hit."""
    folder = root / "victim"
    (folder / "deep").mkdir(parents=True)
    (folder / "keep.txt").write_text("untouched")
    (folder / "deep" / "keep.ckpt").write_text("untouched too")
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir) -> Path:
    """A tiny VAE run's last.ckpt (trained once for this module through the real train.py)."""
    root = tmp_path_factory.mktemp("trained")
    res = run_entry(
        "train.py", *TINY, *SMALL, f"paths.cache_dir={cache_dir}", f"hydra.run.dir={root / 'run'}", cwd=root
    )
    assert res.returncode == 0, res.stderr[-2000:]
    return root / "run" / "checkpoints" / "last.ckpt"


def resume(ckpt: Path, run_dir: Path, cache_dir: Path, *extra: str):
    return run_entry(
        "train.py",
        *TINY,
        *SMALL,
        "trainer.max_epochs=2",
        f"paths.cache_dir={cache_dir}",
        f"hydra.run.dir={run_dir}",
        f"ckpt_path={ckpt}",
        *extra,
        cwd=run_dir.parent,
    )


def _checkpoint_states(ckpt: dict) -> list[dict]:
    return [s for k, s in ckpt["callbacks"].items() if k.startswith("ModelCheckpoint")]


# -- 1. a resumed run writes and deletes only inside its own folder ------------------------------------------------
def test_planted_callback_paths_delete_nothing_whatever_their_spelling(trained, tmp_path, cache_dir):
    victim = victims(tmp_path)
    run_dir = tmp_path / "run2"
    linked = tmp_path / "link-to-victim"
    linked.symlink_to(victim)
    ckpt = torch.load(trained, weights_only=True)
    spellings = [
        f"local://{victim}",  # fsspec's alias of the local filesystem: not the "file" protocol Lightning guards
        f"file://{victim}",
        f"{run_dir}/checkpoints/../../victim",  # starts with the new run's checkpoint folder
        str(victim / "deep"),
        str(linked / "deep"),  # a symlinked parent
    ]
    for state in _checkpoint_states(ckpt):
        state.pop("dirpath")  # Lightning then takes every stored path for one of its own
        state["last_model_path"] = spellings[0]
        state["kth_best_model_path"] = spellings[1]
        state["best_model_path"] = spellings[2]
        state["best_k_models"] = {s: torch.tensor(-1e9) for s in spellings}
    crafted = tmp_path / "crafted.ckpt"
    torch.save(ckpt, crafted)
    before = snapshot(victim)
    res = resume(crafted, run_dir, cache_dir)
    assert res.returncode == 0, res.stderr[-2000:]
    assert victim.is_dir() and snapshot(victim) == before
    assert "outside this run's folder, ignored" in res.stdout
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_auto_resume_from_a_planted_newer_run_deletes_nothing(trained, tmp_path, cache_dir):
    victim = victims(tmp_path)
    logs = tmp_path / "logs"
    planted = logs / "runs" / "vae-mnist5k" / "2999-01-01_00-00-00-000" / "checkpoints" / "last.ckpt"
    planted.parent.mkdir(parents=True)
    ckpt = torch.load(trained, weights_only=True)
    for state in _checkpoint_states(ckpt):
        state.pop("dirpath")
        state["last_model_path"] = f"local://{victim}"
    torch.save(ckpt, planted)
    before = snapshot(victim)
    res = run_entry(
        "train.py",
        *TINY,
        *SMALL,
        "trainer.max_epochs=2",
        f"paths.cache_dir={cache_dir}",
        f"paths.log_dir={logs}",
        "auto_resume=true",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert snapshot(victim) == before


def test_inside_accepts_only_a_file_directly_in_the_folder(tmp_path):
    folder = tmp_path / "ck"
    folder.mkdir()
    (folder / "sub").mkdir()
    (tmp_path / "ln").symlink_to(folder)
    (folder / "link.ckpt").symlink_to(tmp_path)
    assert inside(str(folder / "a.ckpt"), str(folder)) == str(folder / "a.ckpt")
    for bad in (
        f"local://{folder}/a.ckpt",
        f"file://{folder}/a.ckpt",
        f"{folder}/../ck/a.ckpt",
        f"{folder}/./a.ckpt",
        str(folder / "sub"),  # a folder: a recursive delete
        str(folder / "link.ckpt"),  # a link
        str(tmp_path / "a.ckpt"),
        "",
        None,
        3,
    ):
        assert inside(bad, str(folder)) is None, bad
    # the same folder reached through a link is the same folder, but the path is rebuilt from ours
    assert inside(str(tmp_path / "ln" / "a.ckpt"), str(folder)) == str(folder / "a.ckpt")


# -- 6. last.ckpt is the end of training ------------------------------------------------------------------------
def test_last_ckpt_holds_the_final_step_when_the_interval_does_not_divide_it(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    res = run_entry(
        "train.py",
        *TINY,
        *SMALL,
        "trainer.limit_train_batches=7",
        "callbacks.model_checkpoint.every_n_train_steps=5",  # alone: the epoch interval turns itself off
        "callbacks.model_checkpoint.monitor=null",
        f"paths.cache_dir={cache_dir}",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert metrics["train/global_step"] == 7 == last["global_step"]
    composed = (run_dir / ".hydra" / "config.yaml").read_text()
    assert "gs_epochs_unless_steps" in composed  # the composed config says the epoch interval follows the steps
    assert last["gensuite"]["config"]["callbacks"]["model_checkpoint"]["every_n_epochs"] is None


def test_both_intervals_at_once_is_one_clear_error(tmp_path, cache_dir):
    res = run_entry(
        "train.py",
        *TINY,
        *SMALL,
        "callbacks.model_checkpoint.every_n_train_steps=5",
        "callbacks.model_checkpoint.every_n_epochs=2",
        f"paths.cache_dir={cache_dir}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert "every_n_train_steps=5 and every_n_epochs=2" in res.stderr
