"""Runs that survive faults: kill -9 and resume, SIGTERM, NaN losses, auto-resume."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gensuite.families.base import NonFiniteLossError
from gensuite.train import train

from .conftest import ROOT, TINY, run_entry

SMALL = [
    "model.encoder.width=8",
    "model.decoder.width=8",
    "callbacks.evaluation.grid_size=4",
    "trainer.limit_train_batches=6",
    "data.batch_size=32",
]


def _cmd(out: Path, cache_dir: Path, *extra: str) -> list[str]:
    tiny = [o for o in TINY if not o.startswith(("trainer.max_epochs", "trainer.limit_train_batches"))]
    return [*tiny, *SMALL, f"paths.cache_dir={cache_dir}", f"hydra.run.dir={out}", *extra]


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, weights_only=True)["state_dict"]


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.time() - t0 < timeout, f"{path} never appeared"
        time.sleep(0.05)


def _start(out: Path, cache_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *_cmd(out, cache_dir, *extra)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_kill_9_then_resume_matches_an_uninterrupted_run(tmp_path, cache_dir):
    epochs = "trainer.max_epochs=4"
    whole = run_entry("train.py", *_cmd(tmp_path / "whole", cache_dir, epochs))
    assert whole.returncode == 0, whole.stderr[-2000:]

    proc = _start(tmp_path / "killed", cache_dir, epochs)
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    _wait_for(last, proc)
    proc.kill()  # SIGKILL: no handler runs, no checkpoint is written on the way out
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = torch.load(last, weights_only=True)["global_step"]
    assert killed_at < 24, "the run finished before it was killed"

    resumed = run_entry("train.py", *_cmd(tmp_path / "killed", cache_dir, epochs, "ckpt_path=last"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(last, weights_only=True)
    assert a["global_step"] == b["global_step"] == 24
    # same seed, epoch-end checkpoint, RNG and data order restored: the same weights, bit for bit on CPU
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k


def test_sigterm_writes_a_checkpoint_and_exits_nonzero(tmp_path, cache_dir):
    proc = _start(tmp_path / "run", cache_dir, "trainer.max_epochs=50")
    _wait_for(tmp_path / "run" / "checkpoints" / "last.ckpt", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    interrupted = tmp_path / "run" / "checkpoints" / "interrupted.ckpt"
    assert interrupted.is_file()
    step = torch.load(interrupted, weights_only=True)["global_step"]
    assert step >= torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]


def test_nan_loss_stops_with_the_step_and_keeps_the_good_checkpoint(make_cfg, tmp_path, monkeypatch):
    from gensuite.families.vae import VAE

    cfg = make_cfg(SMALL + ["trainer.max_epochs=3"], output_dir=tmp_path / "run")
    original = VAE.losses

    def poisoned(self, batch):
        out = original(self, batch)
        if self.training and self.global_step >= 8:  # epoch 1, after epoch 0's checkpoint
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(VAE, "losses", poisoned)
    with pytest.raises(NonFiniteLossError) as info:
        train(cfg)
    assert "at step 8" in info.value.message and "lr" in info.value.fix
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == 6  # written after epoch 0, untouched by the failure
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert not (tmp_path / "run" / "checkpoints" / "interrupted.ckpt").exists()


def test_auto_resume_continues_the_newest_run_of_the_same_name(make_cfg, tmp_path):
    logs = tmp_path / "logs"

    def run(name: str, folder: str, *extra: str):
        overrides = [*SMALL, "auto_resume=true", f"run_name={name}", f"paths.log_dir={logs}", *extra]
        return train(make_cfg(overrides, output_dir=logs / "runs" / name / folder))

    assert run("job", "a")["trainer"].global_step == 6
    assert run("job", "b", "trainer.max_epochs=2")["trainer"].global_step == 12  # resumed a's last.ckpt
    assert run("other", "c")["trainer"].global_step == 6  # nothing of that name: a fresh start
