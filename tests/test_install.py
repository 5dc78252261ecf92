"""Installable as a package: a non-editable install carries the configs, and runs from an empty folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from .conftest import ROOT


def test_a_wheel_runs_from_an_empty_folder(tmp_path, cache_dir):
    # build from a copy, so the checkout gets no build/ folder; no network: setuptools of this venv
    src = tmp_path / "src"
    for name in ("src", "conf", "pyproject.toml", "setup.py", "README.md"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist", src], check=True)
    (wheel,) = (tmp_path / "dist").glob("gensuite-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", tmp_path / "site", wheel], check=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "GENSUITE_CACHE_DIR": str(cache_dir)}
    where = subprocess.run([sys.executable, "-c", "import gensuite; print(gensuite.config_dir())"], cwd=empty,
                           env=env, capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    assert where == str(tmp_path / "site" / "gensuite" / "conf")  # the installed copy, not the checkout
    proc = subprocess.run([sys.executable, "-m", "gensuite", "train", "debug=fdr", "data=digits"], cwd=empty,
                          env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (empty / "logs" / "runs").is_dir()  # the run's folder is where it was started
    assert sorted(p.name for p in empty.iterdir()) == ["logs"]
