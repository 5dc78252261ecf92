"""The run record (`gensuite.record`) and the ``python -m gensuite`` dispatcher: reading runs and writing the
comparison's report need neither torch nor Lightning; a mistyped command gets the usage and status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from gensuite import record

from .conftest import ROOT


def python(code: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


def test_the_record_imports_neither_torch_nor_lightning():
    proc = python("""
        import sys
        import gensuite.record
        heavy = sorted(m for m in ("torch", "lightning", "torchvision", "torchmetrics") if m in sys.modules)
        assert not heavy, heavy
    """)
    assert proc.returncode == 0, proc.stderr


def test_reading_runs_and_writing_the_report_need_no_torch(tmp_path):
    for family, fid in (("vae", 30.0), ("gan", 20.0)):
        run = tmp_path / "runs" / family
        run.mkdir(parents=True)
        metrics = {
            record.FAMILY_KEY: family,
            record.DATA_KEY: "mnist5k",
            record.TRAIN_SECONDS_KEY: 10.0,
            record.space_key("fid", "classifier"): fid,
            record.SAMPLING_SPEED_KEY: 100.0,
        }
        record.write_record(run / "metrics.json", metrics, "hydra.run.dir")
    proc = python(f"""
        import sys
        from pathlib import Path
        from gensuite.compare import build_report, read_runs
        runs = read_runs(Path({str(tmp_path / "runs")!r}))
        paths = build_report(runs, Path({str(tmp_path / "report")!r}))
        assert "torch" not in sys.modules and "lightning" not in sys.modules
        print(sorted(r.family for r in runs), paths["report.md"].is_file())
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split("\n")[-2] == "['gan', 'vae'] True"


def test_a_record_reads_back_as_written(tmp_path):
    metrics = {record.STEPS_KEY: 3, record.space_key("fid", "ssl", "floor"): 1.5, record.NOTES_KEY: "a | b"}
    record.write_record(tmp_path / "metrics.json", metrics, "out")
    assert record.read_record(tmp_path / "metrics.json") == metrics
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics


def test_collect_metrics_asks_the_callbacks_what_they_add():
    class Clock:
        def record_entries(self):
            return {record.TRAIN_SECONDS_KEY: 4.0}

    class Trainer:
        callback_metrics = {"val/fid_ssl": 2.0, "val/bad": float("nan"), "train/loss": 1.0}
        callbacks = [Clock(), object()]
        global_step, current_epoch = 8, 2

    class Model:
        def parameters(self):
            return [type("P", (), {"numel": lambda self: 5})()]

    assert record.collect_metrics(Trainer(), Model()) == {
        "val/fid_ssl": 2.0,
        record.TRAIN_SECONDS_KEY: 4.0,
        record.PARAMETERS_KEY: 5,
        record.STEPS_KEY: 8,
        record.EPOCHS_KEY: 2,
        record.STEPS_PER_S_KEY: 2.0,
    }


def test_the_dispatcher_prints_its_usage_for_no_or_an_unknown_command():
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    for args, said in (([], "no command given"), (["trian"], "unknown command 'trian'")):
        proc = subprocess.run(
            [sys.executable, "-m", "gensuite", *args], capture_output=True, text=True, env=env, timeout=120
        )
        assert proc.returncode == 2
        assert said in proc.stderr and "python -m gensuite <command>" in proc.stderr
        assert all(f"  {c} " in proc.stderr for c in ("train", "sample", "eval", "compare"))
        assert len(proc.stderr.splitlines()) < 20


def test_the_dispatcher_runs_a_command_with_its_overrides(tmp_path):
    run = tmp_path / "runs" / "vae"
    run.mkdir(parents=True)
    record.write_record(run / "metrics.json", {record.FAMILY_KEY: "vae", "val/fid_classifier": 3.0}, "out")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, "-m", "gensuite", "compare", f"runs={tmp_path / 'runs'}", f"out={tmp_path / 'report'}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "report" / "report.md").is_file()
