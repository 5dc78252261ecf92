"""Where a run's processes meet: one run folder for every rank, under Lightning's DDP relaunch, Hydra multirun,
torchrun and SLURM.

- Single run + ``strategy=ddp``: Lightning relaunches the script for ranks > 0 with ``hydra.run.dir=<rank 0's
  folder>``: one folder, nothing to do.
- Multirun + ``strategy=ddp`` is broken upstream (Lightning #11300, Hydra #2070): the relaunched ranks receive
  ``-m`` and the sweep's arguments and start a sweep of their own. `ranks_of_this_job` rewrites what Lightning
  relaunches into a single run of this job's overrides, in this job's folder (`ranks_of_this_job`).
- torchrun / srun start every rank themselves; each would resolve ``${now:...}`` on its own clock. `run_stamp`
  (the ``gs_run_stamp`` resolver used in ``hydra.run.dir``) names the folder after the launcher's job id instead.
- Several nodes started by hand (``NODE_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``, ``trainer.num_nodes``): each
  node would name its folder after its own clock; `run_stamp` gives every node node 0's (`gensuite.runs.nodes`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from gensuite.cli.precision import fast_precision
from gensuite.errors import ConfigError


def run_stamp(num_nodes=1) -> str:
    """A folder name every rank of one launch agrees on: ``GENSUITE_RUN_ID``, the SLURM job (and step), the
    torchrun run id, or else the local time: of this process, or, for the nodes of a ``trainer.num_nodes`` run
    started by hand, node 0's (`gensuite.runs.nodes`: node 0 hands it out at ``MASTER_ADDR:MASTER_PORT``)."""
    if os.environ.get("GENSUITE_RUN_ID"):
        return os.environ["GENSUITE_RUN_ID"]
    if os.environ.get("SLURM_JOB_ID") and os.environ.get("SLURM_NTASKS", "1") != "1":
        step = os.environ.get("SLURM_STEP_ID", "0")
        return f"slurm-{os.environ['SLURM_JOB_ID']}.{step}"
    if os.environ.get("TORCHELASTIC_RUN_ID") and os.environ.get("WORLD_SIZE", "1") != "1":
        return f"torchrun-{os.environ['TORCHELASTIC_RUN_ID']}"
    # to the millisecond: two runs of one config started in the same second get their own folders (the run-folder
    # lock would refuse the second one)
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")[:-3]
    return nodes_stamp(stamp, num_nodes)


def nodes_stamp(own_stamp: str, num_nodes) -> str:
    """``own_stamp``, or node 0's when this process is one node of several started by hand (`gensuite.runs.nodes`)."""
    from gensuite.runs import nodes

    where = nodes.manual_nodes(num_nodes)
    if where is None:
        return own_stamp
    try:
        return nodes.agree_on_stamp(own_stamp, *where)
    except ConfigError as error:
        nodes.stop_with(error)
        raise  # pragma: no cover - stop_with exits


def _node_subdir(num_nodes=1) -> str | None:
    from gensuite.runs.nodes import hydra_subdir

    return hydra_subdir(num_nodes)


def _node_log_suffix(num_nodes=1) -> str:
    from gensuite.runs.nodes import log_suffix

    return log_suffix(num_nodes)


def epochs_unless_steps(every_n_train_steps: int | None, every_n_epochs: int | None) -> int | None:
    """The ``gs_epochs_unless_steps`` resolver of a checkpoint's ``every_n_epochs``: off (null) when
    ``every_n_train_steps`` is set, so that setting the step interval alone works (Lightning refuses the two
    together; `gensuite.callbacks.checkpoint.RunCheckpoint` refuses both given at once)."""
    return None if every_n_train_steps else every_n_epochs


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("gs_run_stamp"):
        OmegaConf.register_new_resolver("gs_run_stamp", run_stamp, use_cache=True)
    if not OmegaConf.has_resolver("gs_epochs_unless_steps"):
        OmegaConf.register_new_resolver("gs_epochs_unless_steps", epochs_unless_steps)
    for name, fn in (("gs_node_subdir", _node_subdir), ("gs_node_log_suffix", _node_log_suffix)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn, use_cache=True)
    if not OmegaConf.has_resolver("gs_fast_precision"):
        OmegaConf.register_new_resolver("gs_fast_precision", fast_precision, use_cache=True)


@contextmanager
def ranks_of_this_job() -> Iterator[None]:
    """Around one job's fit + validate: under Hydra multirun, Lightning's DDP relaunch starts ranks of *this* job
    in this job's folder; afterwards the process is left as it was for the next job."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
    except ImportError:  # pragma: no cover - hydra is a dependency
        yield
        return
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        yield
        return
    hc = HydraConfig.get()
    job_dir = hc.runtime.output_dir
    argv, env, run_dir = list(sys.argv), dict(os.environ), hc.run.dir
    # what the relaunched ranks run: this job's own overrides as a single run, in this job's folder
    sys.argv = [sys.argv[0], *hc.overrides.task, f"hydra.run.dir={job_dir}"]
    # Lightning appends `hydra.run.dir=<HydraConfig.get().run.dir>` itself: make that this job's folder too
    _set_run_dir(hc, job_dir)
    try:
        yield
    finally:
        # Lightning leaves LOCAL_RANK, WORLD_SIZE, MASTER_PORT... in os.environ; the next job would take them
        # for a launcher's and wait for ranks that nobody starts. Restore the process as it was.
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for key in set(os.environ) - set(env):
            del os.environ[key]
        os.environ.update(env)
        sys.argv = argv
        _set_run_dir(hc, run_dir)


def _set_run_dir(hc, value: str) -> None:
    OmegaConf.set_readonly(hc, False)
    hc.run.dir = value
    OmegaConf.set_readonly(hc, True)


class OutputDirCheck(Callback):
    """Hydra callback: a run folder that cannot be created is reported in words before Hydra tries (and fails
    with a traceback) to create it; a training's run folder holding a link where an output goes is refused before
    Hydra writes ``.hydra/`` and ``train.log`` through it (`gensuite.safe_files.check_run_folder`)."""

    def on_run_start(self, config, **kwargs) -> None:
        training = kwargs.get("config_name") == "train"
        self._check(config, "run", run_folder=training)
        if training:
            # one run per folder: take the lock before Hydra writes .hydra/ and train.log (gensuite.runs.lock)
            from gensuite.runs.lock import hold_run_folder

            self._exit_on_error(hold_run_folder, str(config.hydra.run.dir))

    def on_run_end(self, config, **kwargs) -> None:
        from gensuite.runs.lock import release_all

        release_all()

    def on_multirun_start(self, config, **kwargs) -> None:
        self._check(config, "sweep")

    @classmethod
    def _check(cls, config, mode: str, run_folder: bool = False) -> None:
        from hydra.core.hydra_config import HydraConfig

        HydraConfig.instance().set_config(config)  # the folder name interpolates ${hydra:runtime.choices...}
        cls._check_folder(str(config.hydra[mode].dir), run_folder)

    @staticmethod
    def _exit_on_error(check, *args) -> None:
        from gensuite.errors import ConfigError

        try:
            check(*args)
        except ConfigError as error:
            print("\n" + error.render() + "\n", file=sys.stderr, flush=True)
            sys.exit(error.exit_code)

    @classmethod
    def _check_folder(cls, folder: str, run_folder: bool = False) -> None:
        from gensuite.errors import ConfigError
        from gensuite.safe_files import check_run_folder, probe_writable

        if run_folder:  # links planted at (or in) the run folder: before anything is created or written there
            cls._exit_on_error(check_run_folder, folder)
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
            probe_writable(folder)  # a fresh name, O_EXCL | O_NOFOLLOW: never another's file or link
        except OSError as err:
            error = ConfigError(
                f"cannot create the run folder {folder} ({type(err).__name__}: {err.strerror or err})",
                fix="point paths.log_dir (or hydra.run.dir) at a writable folder, e.g. paths.log_dir=logs",
            )
            print("\n" + error.render() + "\n", file=sys.stderr, flush=True)
            sys.exit(error.exit_code)
