"""The command-line entry points behind ``train.py``, ``eval.py``, ``sample.py`` and ``compare.py``.

Each is a thin ``@hydra.main`` wrapper. The heavy imports (torch, Lightning) happen inside, after Hydra has
composed the config, so a mistyped option is reported in about a second. A user's mistake (`GensuiteError`) is
printed as a short message and exits with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from gensuite.launch import register_resolvers

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")
register_resolvers()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def train(cfg: DictConfig) -> float | None:
    from gensuite.config import report_user_errors
    from gensuite.train import train as run

    with report_user_errors():
        result = run(cfg)
    # a sweeper (hparams_search=optuna) optimises the value returned here
    target = cfg.get("optimized_metric")
    value = result["metrics"].get(target) if target else None
    return float(value) if value is not None else None


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def evaluate(cfg: DictConfig) -> None:
    from gensuite.config import report_user_errors
    from gensuite.eval import evaluate as run

    with report_user_errors():
        run(cfg)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="sample")
def sample(cfg: DictConfig) -> None:
    from gensuite.config import report_user_errors
    from gensuite.sample import sample as run

    with report_user_errors():
        run(cfg)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="compare")
def compare(cfg: DictConfig) -> None:
    from gensuite.compare import compare as run
    from gensuite.config import report_user_errors

    with report_user_errors():
        run(cfg)
