"""Atomic checkpoint writes and the fallback of ``ckpt_path=last`` to the newest intact checkpoint."""

from __future__ import annotations

import errno
import os
import time

import pytest
import torch

from gensuite.errors import CheckpointError
from gensuite.runs.checkpoint_file import find_last_checkpoint
from gensuite.runs.checkpoint_io import TMP_SUFFIX, AtomicCheckpointIO, atomic_save, remove_stale_temporaries


def _ckpt(step: int) -> dict:
    return {"state_dict": {"w": torch.full((3,), float(step))}, "gensuite": {"config": {}, "family": "vae"}}


def test_atomic_save_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint(_ckpt(1), target)
    AtomicCheckpointIO().save_checkpoint(_ckpt(2), target)
    assert torch.load(target, weights_only=True)["state_dict"]["w"][0] == 2
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]


def test_a_failed_write_keeps_the_previous_checkpoint_and_removes_its_temporary(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    atomic_save(_ckpt(1), target)

    def disk_full(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError, match="disk is full") as info:
        atomic_save(_ckpt(2), target)
    assert "previous checkpoint is intact" in info.value.message
    monkeypatch.undo()
    assert torch.load(target, weights_only=True)["state_dict"]["w"][0] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    dead = tmp_path / f".last.ckpt.999999999.abc{TMP_SUFFIX}"
    alive = tmp_path / f".last.ckpt.{os.getpid()}.abc{TMP_SUFFIX}"
    dead.write_bytes(b"x")
    alive.write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path) == [dead]
    assert alive.exists() and not dead.exists()


def test_last_falls_back_to_the_newest_intact_checkpoint(tmp_path, capsys):
    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    atomic_save(_ckpt(6), ckpts / "epoch000-step000006.ckpt")
    time.sleep(0.01)
    (ckpts / "last.ckpt").write_bytes((ckpts / "epoch000-step000006.ckpt").read_bytes()[:100])  # truncated
    found = find_last_checkpoint(tmp_path / "run", tmp_path, None)
    assert found == ckpts / "epoch000-step000006.ckpt"
    out = capsys.readouterr().out
    assert "last.ckpt cannot be read" in out and "epoch000-step000006.ckpt" in out
    (ckpts / "epoch000-step000006.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="none readable"):
        find_last_checkpoint(tmp_path / "run", tmp_path / "elsewhere", None)
