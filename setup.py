"""Ship the Hydra configs inside the package: ``pip install .`` copies ``conf/`` to ``gensuite/conf``, where
`gensuite.config_dir` finds them, so an installed suite runs from any folder (``python -m gensuite.train``).
An editable install (``pip install -e .``, the Makefile's) reads the checkout's ``conf/`` instead."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithConfigs(build_py):
    def run(self):
        super().run()
        if not self.editable_mode:
            target = Path(self.build_lib) / "gensuite" / "conf"
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(Path(__file__).parent / "conf", target)


setup(cmdclass={"build_py": BuildWithConfigs})
