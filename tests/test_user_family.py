"""A user's own family without forking: a package and a config folder outside src/gensuite (tests/user_family),
with nothing but ``losses`` and ``sample``, trains, evaluates and samples through the suite's entry points; its
checkpoints are refused by sample.py until its package is declared trusted."""

from __future__ import annotations

import json
import os

from .conftest import ROOT, run_entry

HERE = ROOT / "tests" / "user_family"


def test_a_family_outside_the_package_trains_samples_and_is_trusted_only_when_declared(tmp_path, cache_dir):
    env = {"PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
           "GENSUITE_CACHE_DIR": str(cache_dir)}  # fmt: skip
    run = run_entry("train.py", "model=mean_image", f"hydra.searchpath=[file://{HERE / 'conf'}]", "data=digits",
                    "debug=limit", f"paths.log_dir={tmp_path}", env=env)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    (metrics_file,) = tmp_path.rglob("metrics.json")
    metrics = json.loads(metrics_file.read_text())
    assert metrics["run/family"] == "mean_image" and "val/fid_classifier" in metrics
    assert "val/nll_bpd" not in metrics and "val/psnr" not in metrics  # no likelihood, no encoder: absent
    ckpt = metrics_file.parent / "checkpoints" / "last.ckpt"

    refused = run_entry("sample.py", f"ckpt_path={ckpt}", "n=8", f"out={tmp_path / 'a.png'}", env=env)
    assert refused.returncode == 2 and "GENSUITE_TRUSTED_MODULES=mypkg" in refused.stderr + refused.stdout
    assert "Traceback" not in refused.stderr and not (tmp_path / "a.png").exists()

    trusted = {**env, "GENSUITE_TRUSTED_MODULES": "mypkg"}
    done = run_entry("sample.py", f"ckpt_path={ckpt}", "n=8", f"out={tmp_path / 'a.png'}", env=trusted)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "a.png").stat().st_size > 0
