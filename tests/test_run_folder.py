"""One run per folder (the run-folder lock) and resuming with changed settings (apply / refuse)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from gensuite.errors import CheckpointError, ConfigError
from gensuite.runs.lock import LOCK_NAME, hold_run_folder, release_all
from gensuite.runs.resume import ApplyOnResume, rule_for
from gensuite.train import train

from .conftest import ROOT, TINY, run_entry

SMALL = ["model.encoder.width=8", "model.decoder.width=8", "callbacks.evaluation.grid_size=4"]
HOLDER = (
    "import sys, time; from gensuite.runs.lock import hold_run_folder; hold_run_folder(sys.argv[1]); "
    "print('held', flush=True); time.sleep(300)"
)


@pytest.fixture
def holder(tmp_path):
    """A live process holding the lock of tmp_path/run (killed at the end)."""
    folder = tmp_path / "run"
    folder.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield folder, proc
    proc.kill()
    proc.wait()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# -- A. one run per folder -----------------------------------------------------------------------------------
def test_a_held_folder_is_refused_naming_the_holder(holder, make_cfg):
    folder, proc = holder
    with pytest.raises(ConfigError) as info:
        train(make_cfg(SMALL, output_dir=folder))
    text = info.value.render()
    assert f"pid {proc.pid} on host {socket.gethostname()}" in text
    assert "hydra.run.dir=" in text and "ckpt_path=last" in text
    assert sorted(p.name for p in folder.iterdir()) == [LOCK_NAME]  # nothing written
    assert json.loads((folder / LOCK_NAME).read_text())["pid"] == proc.pid  # the holder's lock untouched


def test_the_entry_point_exits_2_before_hydra_writes_into_a_held_folder(holder, cache_dir):
    folder, proc = holder
    run = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *TINY, f"paths.cache_dir={cache_dir}", f"hydra.run.dir={folder}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2, run.stderr[-2000:]
    assert f"pid {proc.pid}" in run.stderr and "Traceback" not in run.stderr
    assert sorted(p.name for p in folder.iterdir()) == [LOCK_NAME]  # no .hydra/, no train.log


def test_ranks_above_zero_share_rank_zeros_folder(holder, monkeypatch):
    folder, _ = holder
    monkeypatch.setenv("LOCAL_RANK", "1")  # what Lightning's DDP relaunch sets for rank 1
    hold_run_folder(folder)  # no error: rank 1 of the holder's own run
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("NODE_RANK", "1")
    hold_run_folder(folder)
    monkeypatch.delenv("NODE_RANK")
    with pytest.raises(ConfigError):
        hold_run_folder(folder)


def test_kill_9_leaves_a_stale_lock_that_the_next_run_takes_over(tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    proc.kill()
    proc.wait()
    assert (folder / LOCK_NAME).exists()  # nothing ran on the way out
    t0 = time.monotonic()
    hold_run_folder(folder)
    assert time.monotonic() - t0 < 2
    assert f"took over the lock of {folder.resolve()} left by pid {proc.pid}" in capsys.readouterr().out
    assert json.loads((folder / LOCK_NAME).read_text())["pid"] != proc.pid
    release_all()
    assert not (folder / LOCK_NAME).exists()


def test_stale_lock_taken_over_then_resume_into_the_same_folder_to_a_new_max_epochs(make_cfg, tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    stale = {"pid": _dead_pid(), "host": socket.gethostname(), "started": "2020-01-01T00:00:00"}
    (folder / LOCK_NAME).write_text(json.dumps(stale))
    first = train(make_cfg(SMALL, output_dir=folder))
    assert f"left by pid {stale['pid']}" in capsys.readouterr().out
    assert first["trainer"].global_step == 3
    assert not (folder / LOCK_NAME).exists()  # released at the end of the run

    # the first run has ended: resuming into its folder is normal, and a longer budget is applied
    second = train(make_cfg(SMALL + ["ckpt_path=last", "trainer.max_epochs=3"], output_dir=folder))
    out = capsys.readouterr().out
    assert "[gensuite] resume: trainer.max_epochs 1 -> 3 (applied)" in out
    assert "resume: paths" not in out and "resume: ckpt_path" not in out  # same folder, and ckpt_path is ignored
    assert second["trainer"].current_epoch == 3 and second["trainer"].global_step == 9
    stored = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)["gensuite"]["config"]
    assert stored["trainer"]["max_epochs"] == 3
    assert not (folder / LOCK_NAME).exists()


def test_two_concurrent_trainings_into_one_folder(tmp_path, cache_dir):
    folder = tmp_path / "run"
    cmd = [*TINY, *SMALL, f"paths.cache_dir={cache_dir}", f"hydra.run.dir={folder}"]
    procs = {
        seed: subprocess.Popen(
            [sys.executable, str(ROOT / "train.py"), *cmd, f"seed={seed}"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 2)
    }
    results = {seed: (p, *p.communicate(timeout=600)) for seed, p in procs.items()}
    codes = sorted(p.returncode for p, _, _ in results.values())
    assert codes == [0, 2], [err[-1500:] for _, _, err in results.values()]
    (winner_seed, (winner, _, _)), (_, (_, _, loser_err)) = sorted(results.items(), key=lambda kv: kv[1][0].returncode)
    assert f"pid {winner.pid}" in loser_err and "hydra.run.dir=" in loser_err
    # the folder is the winner's alone: its config, overrides, checkpoint config, its event files only, metrics
    assert yaml.safe_load((folder / ".hydra" / "config.yaml").read_text())["seed"] == winner_seed
    assert f"seed={winner_seed}" in yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text())
    ckpt = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["gensuite"]["config"]["seed"] == winner_seed
    events = list(folder.rglob("events.out.tfevents.*"))  # named ...<host>.<pid>.<n>
    assert events and all(e.name.split(".")[-2] == str(winner.pid) for e in events), events
    assert (folder / "metrics.json").is_file() and not (folder / LOCK_NAME).exists()


def test_sigterm_releases_the_lock(tmp_path, cache_dir):
    folder = tmp_path / "run"
    tiny = [o for o in TINY if not o.startswith("trainer.max_epochs")]
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *tiny, *SMALL, f"paths.cache_dir={cache_dir}",
         f"hydra.run.dir={folder}", "trainer.max_epochs=500"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    t0 = time.time()
    while not (folder / "checkpoints" / "last.ckpt").exists():
        assert proc.poll() is None and time.time() - t0 < 300, proc.communicate()[1][-2000:]
        time.sleep(0.05)
    assert (folder / LOCK_NAME).exists()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert not (folder / LOCK_NAME).exists()


# -- B. resume with changed settings -------------------------------------------------------------------------
@pytest.fixture
def first_run(make_cfg, tmp_path) -> Path:
    train(make_cfg(SMALL, output_dir=tmp_path / "a"))
    return tmp_path / "a" / "checkpoints" / "last.ckpt"


def test_a_changed_learning_rate_is_applied_on_resume(first_run, make_cfg, tmp_path, capsys):
    capsys.readouterr()
    extra = ["model.optimizer.lr=0.0123", "data.batch_size=64", "trainer.max_epochs=2"]
    result = train(make_cfg(SMALL + [f"ckpt_path={first_run}", *extra], output_dir=tmp_path / "b"))
    out = capsys.readouterr().out
    assert "[gensuite] resume: model.optimizer.lr 0.001 -> 0.0123 (applied)" in out
    assert "[gensuite] resume: data.batch_size 128 -> 64 (applied; the run no longer matches" in out
    assert "resume: paths.output_dir" in out and "model_checkpoint.dirpath" not in out  # one line for the folder
    (group,) = result["trainer"].optimizers[0].param_groups
    assert group["lr"] == 0.0123  # Lightning restored 0.001 from the checkpoint; the new rate is what trained
    assert result["trainer"].global_step == 3 + 3
    ckpt = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["optimizer_states"][0]["param_groups"][0]["lr"] == 0.0123
    assert ckpt["gensuite"]["config"]["model"]["optimizer"]["lr"] == 0.0123  # the stored config is what ran


def test_changed_model_parts_data_and_precision_are_refused_listing_every_key(first_run, make_cfg, tmp_path):
    # a part of another class with the same weights: no config of the zoo has one, so edit the stored config
    ckpt = torch.load(first_run, weights_only=True)
    encoder = ckpt["gensuite"]["config"]["model"]["encoder"]
    encoder["_target_"] = encoder["_target_"] + "Old"
    torch.save(ckpt, tmp_path / "edited.ckpt")
    extra = ["model.beta=0.5", "data.val_fraction=0.2", "trainer.precision=bf16-mixed", "model.optimizer.lr=0.01"]
    with pytest.raises(ConfigError) as info:
        train(make_cfg(SMALL + [f"ckpt_path={tmp_path / 'edited.ckpt'}", *extra], output_dir=tmp_path / "b"))
    text = info.value.render()
    for line in (
        "4 setting(s) differ",
        "model.beta: 1.0 in the checkpoint, 0.5 now",
        f"model.encoder._target_: '{encoder['_target_']}' in the checkpoint, '{encoder['_target_'][:-3]}' now",
        "data.val_fraction: 0.1 in the checkpoint, 0.2 now",
        "trainer.precision: '32-true' in the checkpoint, 'bf16-mixed' now",
    ):
        assert line in text, text
    assert "model.optimizer.lr" not in text  # that one could be applied
    assert not (tmp_path / "b" / "checkpoints").exists()  # refused before anything ran


def test_a_changed_shape_keeps_the_does_not_fit_message(first_run, make_cfg, tmp_path):
    with pytest.raises(CheckpointError) as info:
        train(make_cfg(SMALL + [f"ckpt_path={first_run}", "model.latent_dim=8"], output_dir=tmp_path / "b"))
    assert (
        "does not fit" in info.value.message and "model.latent_dim: 16 in the checkpoint, 8 now" in info.value.message
    )


def test_rules_table():
    assert rule_for("model.optimizer_d.lr")[0] == "applied"
    assert rule_for("model.optimizer._target_")[0] == "refused"
    assert rule_for("model.scheduler.warmup_steps")[0] == "applied"
    assert rule_for("model.scheduler")[0] == "refused"
    assert rule_for("model.sampler.steps")[0] == "applied"
    assert rule_for("model.decoder.width")[0] == "refused"
    assert rule_for("callbacks.ema.decay")[0] == "applied"
    assert rule_for("callbacks.ema")[0] == "refused"
    assert rule_for("metrics.n_samples")[0] == rule_for("trainer.max_time")[0] == "applied"
    assert rule_for("data.image_size")[0] == rule_for("seed")[0] == "refused"


def test_apply_on_resume_rescales_a_scheduled_rate_and_keeps_per_group_settings():
    """What Lightning does on resume, by hand: configure from the new settings (lr 0.5, weight decay 0.05 on the
    first group only), load the old run's state (lr 0.1, weight decay 0.1, 10 scheduled steps), start."""

    def configure(lr: float, wd: float):
        w, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(1))
        opt = torch.optim.AdamW([{"params": [w], "weight_decay": wd}, {"params": [b], "weight_decay": 0.0}], lr=lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + step))
        return opt, sched

    old_opt, old_sched = configure(0.1, 0.1)
    for _ in range(10):
        old_opt.step()
        old_sched.step()
    opt, sched = configure(0.5, 0.05)
    trainer = SimpleNamespace(optimizers=[opt], lr_scheduler_configs=[SimpleNamespace(scheduler=sched)])
    cb = ApplyOnResume({"optimizer": {"lr", "weight_decay"}, "scheduler": set()})
    cb.on_fit_start(trainer, None)
    opt.load_state_dict(old_opt.state_dict())  # Lightning's restore_training_state
    sched.load_state_dict(old_sched.state_dict())
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 / 11)
    cb.on_train_start(trainer, None)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.5 / 11] * 2)
    assert [g["initial_lr"] for g in opt.param_groups] == sched.base_lrs == [0.5, 0.5]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]  # the no-decay group keeps 0
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 / 12)  # the schedule goes on from the new base


def test_ddp_rank_1_is_not_refused_from_rank_0s_locked_folder(tmp_path, cache_dir):
    """Lightning relaunches rank 1 into rank 0's (locked) folder with LOCAL_RANK=1: it must not be refused.
    (Multirun + DDP, where each job locks its own folder: tests/test_scale.py.)"""
    log_dir = tmp_path / "logs"
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
    proc = run_entry("train.py", *TINY, *SMALL, *ddp, f"paths.cache_dir={cache_dir}", f"paths.log_dir={log_dir}")
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    (run,) = [p.parent for p in log_dir.rglob("metrics.json")]
    assert (run / "train_ddp_process_1.log").is_file()  # rank 1 ran in the folder
    assert not (run / LOCK_NAME).exists()
