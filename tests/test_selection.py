"""The validation split chooses; the test split only reports: no shipped config selects by a held-out metric, and a
run told to is refused before it starts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gensuite import registry
from gensuite.record import selects_on_test

from .conftest import CONF, compose_cfg, run_entry

SELECTING_KEYS = ("monitor", "optimized_metric")


def _selections(node, where=""):
    if isinstance(node, dict):
        for k, v in node.items():
            if k in SELECTING_KEYS and isinstance(v, str):
                yield f"{where}.{k}".lstrip("."), v
            yield from _selections(v, f"{where}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _selections(v, f"{where}[{i}]")


def test_the_rule():
    for key in ("val/fid_classifier", "val/kid_ssl", "val/precision_ssl", "val/coverage_classifier",
                "val/copy_rate_ssl", "val/fid_ssl_intra"):  # fmt: skip
        assert selects_on_test(key), key
    for key in ("val/fid_classifier_val", "val/fid_ssl_val", "val/loss", "val/nelbo_nats", "val/nll_bpd",
                "val/fid_classifier_train", "val/recon_nats", None, ""):  # fmt: skip
        assert not selects_on_test(key), key


def test_no_shipped_config_file_selects_on_the_test_split():
    files = sorted(Path(CONF).rglob("*.yaml"))
    found = [(f, k, v) for f in files for k, v in _selections(yaml.safe_load(f.read_text()) or {})]
    assert any(k.endswith("monitor") for _, k, _ in found)  # the scan sees what it checks
    bad = [f"{f.relative_to(CONF)}: {k}={v}" for f, k, v in found if selects_on_test(v)]
    assert not bad, bad


@pytest.mark.parametrize("family", registry.names())
def test_no_composed_family_config_selects_on_the_test_split(family):
    cfg = compose_cfg([f"model={family}", "hparams_search=optuna"])
    for name, node in (cfg.callbacks or {}).items():
        assert not selects_on_test((node or {}).get("monitor")), (family, name)
    assert not selects_on_test(cfg.optimized_metric)


def test_a_run_told_to_choose_by_the_test_split_is_refused(tmp_path):
    res = run_entry(
        "train.py", "callbacks.model_checkpoint.monitor=val/fid_ssl", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert "held-out test split" in res.stderr and "monitor=val/fid_ssl_val" in res.stderr
