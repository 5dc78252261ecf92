"""The debug group (``debug=fdr | limit | overfit | profiler``), the loggers (TensorBoard and CSV) and the console:
each Lightning line printed once, no advertising. The bad-input table (tests/test_bad_inputs.py) holds the options
Lightning refuses under manual optimisation (the GAN with gradient accumulation or Trainer clipping)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from lightning.pytorch.profilers import SimpleProfiler

from gensuite import registry
from gensuite.cli.command_line import check_command_line
from gensuite.cli.loggers import CSVLogger
from gensuite.errors import ConfigError
from gensuite.train import train

from .conftest import CONF, compose_cfg, run_entry

QUIET = ["callbacks.progress_bar=null", "+trainer.enable_model_summary=false"]
# a line of train.log: "[2026-12-02 15:54:28,062][lightning.pytorch.utilities.rank_zero][INFO] - GPU available: ..."
LOG_LINE = re.compile(r"^\[[^\]]+\]\[(?P<name>[^\]]+)\]\[(?P<level>[A-Z]+)\] - (?P<message>.*)$")


def only_run_folder(log_dir: Path) -> Path:
    (run,) = [p for p in (log_dir / "runs").glob("*/*") if p.is_dir()]
    return run


def lightning_records(run: Path) -> list[str]:
    """The messages Lightning logged in a run (its train.log keeps every record with its logger's name)."""
    lines = (run / "train.log").read_text().splitlines()
    return [m["message"] for m in map(LOG_LINE.match, lines) if m and m["name"].startswith("lightning")]


def assert_each_lightning_line_once(proc, run: Path) -> None:
    output = (proc.stdout + proc.stderr).splitlines()
    records = lightning_records(run)
    assert any(r.startswith("GPU available") for r in records), records  # routed through Hydra's file handler
    for message in records:
        # a line that ends with the message: Lightning's own handler prints "INFO: <message>"
        assert sum(line.rstrip().endswith(message.strip()) for line in output) == 1, (message, output)
    assert not [line for line in output if "Tip:" in line or "litlogger" in line or "litmodels" in line]


@pytest.fixture(scope="module")
def fdr_run(tmp_path_factory, cache_dir):
    """``debug=fdr`` through the real entry point. A ``trainer.*`` override makes the command-line check import
    Lightning before Hydra configures logging (Lightning then adds a console handler of its own)."""
    logs = tmp_path_factory.mktemp("fdr") / "logs"
    proc = run_entry("train.py", "debug=fdr", "trainer.enable_progress_bar=false", *QUIET, f"paths.log_dir={logs}")
    return proc, logs


@pytest.fixture(scope="module")
def limit_run(tmp_path_factory, cache_dir):
    """``debug=limit`` through the real entry point, with no override that imports Lightning early."""
    logs = tmp_path_factory.mktemp("limit") / "logs"
    proc = run_entry("train.py", "debug=limit", "callbacks.progress_bar=null", f"paths.log_dir={logs}")
    return proc, logs


def test_fast_dev_run_runs_the_suite_and_writes_no_checkpoint(fdr_run):
    proc, logs = fdr_run
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    run = only_run_folder(logs)
    assert run.parent.name == "vae-mnist5k-debug"  # never where `ckpt_path=last` of a real run looks
    assert not list(run.rglob("*.ckpt"))  # Lightning 2.6.6 alone still writes last.ckpt at the end of fit
    assert (run / "metrics.json").is_file() and (run / "samples.png").is_file()  # the evaluation ran
    assert "Running in `fast_dev_run` mode" in proc.stdout + proc.stderr
    assert "no last.ckpt in" in proc.stdout  # the summary does not point at a checkpoint that is not there


def test_fast_dev_run_prints_each_lightning_line_once_and_no_tips(fdr_run):
    proc, logs = fdr_run
    assert proc.returncode == 0
    assert_each_lightning_line_once(proc, only_run_folder(logs))


def test_limit_run_writes_checkpoints_tensorboard_and_a_csv_pandas_reads(limit_run):
    proc, logs = limit_run
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    run = only_run_folder(logs)
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    df = pd.read_csv(run / "csv" / "metrics.csv")
    assert {"step", "epoch", "train/loss", "val/loss", "val/fid_classifier", "lr-Adam"} <= set(df.columns)
    train_rows = df.dropna(subset=["train/loss"])
    assert list(train_rows["step"]) == [0, 1, 2, 3, 4]  # debug=limit: 5 batches, one row per step
    assert df["val/fid_classifier"].notna().sum() == 2  # the evaluation during fit and the final one


def test_limit_run_prints_each_lightning_line_once_and_no_tips(limit_run):
    proc, logs = limit_run
    assert proc.returncode == 0
    assert_each_lightning_line_once(proc, only_run_folder(logs))


def test_csv_logger_appends_to_the_file_of_a_run_resumed_in_its_folder(tmp_path):
    """``auto_resume`` of a requeued job continues in the same folder: Lightning's CSV writer would delete the
    rows of the first attempt; ours keeps them, and a column new in the second attempt extends the header."""
    first = CSVLogger(save_dir=tmp_path, name="csv", version="")
    first.log_metrics({"train/loss": 2.0}, step=0)
    first.save()
    second = CSVLogger(save_dir=tmp_path, name="csv", version="")
    second.log_metrics({"train/loss": 1.0}, step=1)
    second.log_metrics({"train/loss": 0.5, "val/loss": 0.7}, step=2)
    second.save()
    df = pd.read_csv(tmp_path / "csv" / "metrics.csv")
    assert list(df["step"]) == [0, 1, 2] and list(df["train/loss"]) == [2.0, 1.0, 0.5]
    assert df["val/loss"].isna().tolist() == [True, True, False]


@pytest.mark.parametrize("family", registry.names())
def test_debug_modes_win_over_the_family_presets(family):
    """The debug group comes last in train.yaml's defaults: its budget holds whatever the preset says."""
    for mode in ("fdr", "limit", "overfit", "profiler"):
        cfg = compose_cfg([f"model={family}", f"debug={mode}"])
        assert cfg.run_name == f"{family}-mnist5k-debug"
        assert cfg.metrics.n_samples <= 100 and cfg.callbacks.evaluation.grid_size <= 16
        assert cfg.trainer.max_epochs == (20 if mode == "overfit" else 1)
        assert cfg.trainer.val_check_interval is None  # the text preset's 200 steps would never be reached
        # sample metrics (and the GAN's FID-monitoring checkpoints) in the last epoch, not every 5th
        assert cfg.callbacks.evaluation.every_n_epochs == cfg.trainer.max_epochs
        if family == "gan":
            assert cfg.callbacks.model_checkpoint.every_n_epochs == cfg.trainer.max_epochs
    assert compose_cfg([f"model={family}", "debug=fdr"]).trainer.fast_dev_run is True
    assert compose_cfg([f"model={family}", "debug=limit"]).trainer.limit_train_batches == 5
    assert compose_cfg([f"model={family}", "debug=profiler"]).trainer.profiler == "simple"


def test_the_debugging_switches_are_settings_of_the_trainer():
    """Before the debug group, ``trainer.fast_dev_run=true`` was refused ("not in struct")."""
    check_command_line(CONF, "train", ["trainer.fast_dev_run=true", "trainer.overfit_batches=1"])
    check_command_line(CONF, "train", ["trainer.fast_dev_run=5", "trainer.profiler=simple"])
    with pytest.raises(ConfigError, match="trainer.fast_dev_run=maybe"):
        check_command_line(CONF, "train", ["trainer.fast_dev_run=maybe"])


def test_overfit_trains_on_one_batch_and_its_loss_falls(make_cfg, tmp_path):
    cfg = make_cfg(["debug=overfit", "trainer.max_epochs=8", "trainer.check_val_every_n_epoch=8", *QUIET], tiny=False)
    result = train(cfg)
    trainer = result["trainer"]
    assert trainer.num_training_batches == 1 and trainer.global_step == 8
    df = pd.read_csv(result["output_dir"] / "csv" / "metrics.csv").dropna(subset=["train/loss"])
    assert len(df) == 8 and df["train/loss"].iloc[-1] < 0.8 * df["train/loss"].iloc[0]
    assert (result["output_dir"] / "checkpoints" / "last.ckpt").is_file()


def test_profiler_times_every_hook_of_a_short_run(make_cfg):
    cfg = make_cfg(["debug=profiler", "trainer.limit_train_batches=4", *QUIET], tiny=False)
    result = train(cfg)
    profiler = result["trainer"].profiler
    assert isinstance(profiler, SimpleProfiler)
    assert len(profiler.recorded_durations["run_training_batch"]) == 4
    assert any(name.startswith("[Callback]Evaluation.") for name in profiler.recorded_durations)
