"""The one place where the suite reaches Hydra's members that are not its documented API, because no public way does
the job (Lightning's and torch's: `gensuite.lightning_compat`). Each function names the version it was checked
against and has a test in ``tests/test_lightning_compat.py`` that fails loudly when an upgrade changes it."""

from __future__ import annotations

import argparse

CHECKED_WITH = "1.3.8"


def args_parser() -> argparse.ArgumentParser:
    """The parser ``@hydra.main`` reads the command line with (Hydra 1.3.8: ``hydra._internal.utils.
    get_args_parser``): its ``overrides``, ``multirun``, ``cfg``, ``config_name`` and the flags that print instead
    of running (``help``, ``hydra_help``, ``shell_completion``, ``info``, ``experimental_rerun``, ``config_path``,
    ``config_dir``)."""
    from hydra._internal.utils import get_args_parser

    return get_args_parser()
