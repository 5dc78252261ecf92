"""gensuite: train, evaluate and compare generative model families on one parts zoo."""

from pathlib import Path

__version__ = "0.1.0"


def config_dir() -> Path:
    """The suite's Hydra configs: shipped inside the package by ``pip install .`` (``gensuite/conf``), or the
    checkout's ``conf/`` (an editable install, or ``PYTHONPATH=src``)."""
    here = Path(__file__).resolve().parent
    packaged = here / "conf"
    return packaged if packaged.is_dir() else here.parents[1] / "conf"
