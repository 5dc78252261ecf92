"""The command-line entry points behind ``train.py``, ``eval.py``, ``sample.py`` and ``compare.py``.

Each is a thin ``@hydra.main`` wrapper. The heavy imports (torch, Lightning) happen inside, after Hydra has
composed the config, so a mistyped option is reported in about a second; then the libraries' log lines are routed
through Hydra's logging, once each and without advertising (`gensuite.cli.loggers.route_library_logs`). A user's
mistake (`GensuiteError`) is printed as a short message and exits with status 2; anything else is a bug and keeps
its traceback.

`checked` runs `gensuite.cli.command_line.check_command_line` before ``@hydra.main``: Hydra reports its own errors
(unknown option, misspelt key, unparsable override) itself and exits 1, so the command line is composed and its
values checked first, and those mistakes come out in the same format and with status 2. (Checking the type of a
key of a built part imports that part: a few seconds, which a valid run then does not spend again.)
"""

from __future__ import annotations

import functools
import sys

import hydra
from omegaconf import DictConfig

from gensuite import config_dir
from gensuite.cli.hydra_hooks import register_resolvers

CONFIG_DIR = str(config_dir())
register_resolvers()


def checked(config_name: str):
    """Wrap a ``@hydra.main`` function: check ``sys.argv`` against ``config_name`` first (see module doc)."""

    def wrap(main):
        @functools.wraps(main)
        def run(cfg_passthrough: DictConfig | None = None):
            if cfg_passthrough is None:  # called from the command line, not with a config (tests)
                if config_name == "eval":  # sweep=sampling.temperature=0.6,0.8 as typed: quoted for Hydra
                    from gensuite.cli.sweep import quote_sweep

                    sys.argv[1:] = quote_sweep(sys.argv[1:])
                from gensuite.cli.command_line import check_command_line
                from gensuite.cli.config import report_user_errors

                with report_user_errors():
                    check_command_line(CONFIG_DIR, config_name, sys.argv[1:])
            return main(cfg_passthrough)

        return run

    return wrap


@checked("train")
@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def train(cfg: DictConfig) -> float | None:
    from gensuite.cli.command_line import warn_cpu_oversubscription
    from gensuite.cli.config import report_user_errors
    from gensuite.cli.loggers import route_library_logs
    from gensuite.train import train as run

    route_library_logs()
    with report_user_errors():
        warn_cpu_oversubscription(cfg)
        result = run(cfg)
    # a sweeper (hparams_search=optuna) optimises the value returned here
    target = cfg.get("optimized_metric")
    value = result["metrics"].get(target) if target else None
    return float(value) if value is not None else None


@checked("eval")
@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def evaluate(cfg: DictConfig) -> None:
    from gensuite.cli.config import report_user_errors
    from gensuite.cli.loggers import route_library_logs
    from gensuite.eval import evaluate as run

    route_library_logs()
    with report_user_errors():
        run(cfg)


@checked("sample")
@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="sample")
def sample(cfg: DictConfig) -> None:
    from gensuite.cli.config import report_user_errors
    from gensuite.cli.loggers import route_library_logs
    from gensuite.sample import sample as run

    route_library_logs()
    with report_user_errors():
        run(cfg)


@checked("compare")
@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="compare")
def compare(cfg: DictConfig) -> None:
    from gensuite.cli.config import report_user_errors
    from gensuite.cli.loggers import route_library_logs
    from gensuite.compare import compare as run

    route_library_logs()
    with report_user_errors():
        run(cfg)
