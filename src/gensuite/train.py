"""Training entry logic: ``train(cfg)`` builds data, model, callbacks, logger and trainer from the composed config,
fits, runs the final evaluation and writes ``metrics.json``. ``main`` is the Hydra wrapper behind ``train.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from gensuite import lightning_compat
from gensuite.callbacks.checkpoint import foreign_paths
from gensuite.callbacks.clock import TrainingClock
from gensuite.callbacks.evaluation import BudgetPoints, Evaluation
from gensuite.callbacks.run_state import RunState
from gensuite.cli.config import flatten, instantiate_checked, to_plain
from gensuite.cli.hydra_hooks import ranks_of_this_job
from gensuite.cli.loggers import build_loggers, tensorboard_writer
from gensuite.cli.memory import MemoryWatch, catch_out_of_memory, out_of_memory_error
from gensuite.errors import CheckpointError, ConfigError
from gensuite.families.conditioning import check_data_labels
from gensuite.record import (
    DATA_KEY,
    FAMILY_KEY,
    LIKELIHOOD_KIND_KEY,
    PARTS_KEY,
    SEED_KEY,
    collect_metrics,
    print_summary,
    selects_on_test,
    write_record,
)
from gensuite.runs.checkpoint import build_model
from gensuite.runs.checkpoint_file import find_last_checkpoint, read_checkpoint
from gensuite.runs.checkpoint_io import AtomicCheckpointIO, remove_stale_temporaries
from gensuite.runs.lock import hold_run_folder, releases_run_folder
from gensuite.runs.resume import ResumePath, check_resume, resume_callbacks
from gensuite.safe_files import check_run_folder, probe_writable


def prepare_output_dir(cfg: DictConfig) -> Path:
    """The run folder, created, locked for this run and checked: writable, and no link planted where an output
    goes (`gensuite.safe_files.check_run_folder`)."""
    out = Path(cfg.paths.output_dir)
    check_run_folder(out)  # before mkdir, which would follow a link standing at the folder's name
    try:
        out.mkdir(parents=True, exist_ok=True)
        hold_run_folder(out)  # one run per folder, taken before anything is written (gensuite.runs.lock)
        probe_writable(out)  # a fresh name, O_EXCL | O_NOFOLLOW: never another's file or link
    except OSError as err:
        raise ConfigError(
            f"cannot write into the run folder {out} ({type(err).__name__}: {err.strerror or err})",
            fix="choose a writable folder: paths.log_dir=<dir> (or hydra.run.dir=<dir>)",
        ) from err
    return out


def check_environment(cfg: DictConfig) -> None:
    """Settings that cannot work on this machine, caught before anything is built."""
    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator", default="auto"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator} but this machine has no CUDA GPU",
            fix="train on the CPU: trainer=cpu (or trainer.accelerator=cpu / auto)",
        )


def check_selection(cfg: DictConfig) -> None:
    """The validation split chooses, the test split only reports: a checkpoint, early stop or sweep that would pick
    by a metric measured against the held-out test split is refused before anything is built."""
    chosen = {
        f"callbacks.{name}.monitor": (node or {}).get("monitor") for name, node in (cfg.get("callbacks") or {}).items()
    }
    chosen["optimized_metric"] = cfg.get("optimized_metric")
    for key, metric in chosen.items():
        if selects_on_test(metric):
            raise ConfigError(
                f"{key}={metric} is measured against the held-out test split, which reports and never chooses "
                "(a checkpoint or a sweep picked by it would overstate the test numbers)",
                keys=(key,),
                fix=f"choose by the val split's reference: {key}={metric}_val",
            )


def check_trainer_for_model(cfg: DictConfig, model: L.LightningModule) -> None:
    """Trainer settings Lightning refuses for this model (``MisconfigurationException`` from inside ``fit``, a
    traceback), caught before the trainer is built: under manual optimisation (``automatic_optimization=False``,
    e.g. the GAN, whose step updates two networks by its own rule) the Trainer can neither accumulate gradients nor
    clip them."""
    if model.automatic_optimization:
        return
    why = f"model={model.family} optimises manually (its training step calls the optimisers itself), and"
    accumulate = OmegaConf.select(cfg, "trainer.accumulate_grad_batches", default=1)
    if accumulate not in (None, 1):
        batch = OmegaConf.select(cfg, "data.batch_size", default=None)
        bigger = f"data.batch_size={batch * accumulate}" if isinstance(batch, int) else "data.batch_size=<larger>"
        raise ConfigError(
            f"trainer.accumulate_grad_batches={accumulate}: {why} Lightning accumulates gradients only under "
            "automatic optimisation",
            fix=f"trainer.accumulate_grad_batches=1; for the same number of examples per update: {bigger}",
        )
    clip = OmegaConf.select(cfg, "trainer.gradient_clip_val", default=None)
    if clip is not None and clip > 0:
        own = sorted(k for k in (cfg.get("model") or {}) if str(k).startswith("clip_grad"))
        per_network = " or ".join(f"model.{k}={clip}" for k in own)
        raise ConfigError(
            f"trainer.gradient_clip_val={clip}: {why} Lightning clips gradients only under automatic optimisation",
            fix="trainer.gradient_clip_val=null" + (f"; to clip per network: {per_network}" if own else ""),
        )


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    """Every callback named under ``callbacks:`` (null entries are off) plus `RunState`.

    Weight-averaging callbacks go last (before ModelCheckpoint, which Lightning moves to the end itself), so that
    `Evaluation` samples while the averaged weights are in place.
    """
    callbacks: list[L.Callback] = []
    for name, node in (cfg.get("callbacks") or {}).items():
        if node is not None and "_target_" in node:
            callbacks.append(instantiate_checked(cfg, f"callbacks.{name}"))
    callbacks.append(RunState(to_plain(cfg)))
    callbacks.sort(key=lambda cb: isinstance(cb, WeightAveraging))
    return callbacks


def hand_in_clock(callbacks: list[L.Callback], model: L.LightningModule) -> None:
    """The run's `TrainingClock`, where it has one, handed to those that read it: the model's learning-rate
    schedule (the fraction of a time budget spent), the `Evaluation` callback (training seconds so far) and
    the `BudgetPoints` callback (the clock, and the evaluation it repeats at each point)."""
    clock = next((cb for cb in callbacks if isinstance(cb, TrainingClock)), None)
    if clock is None:
        return
    if clock.duration is not None:
        model.budget_progress = clock.progress
    evaluation = next((cb for cb in callbacks if isinstance(cb, Evaluation)), None)
    for cb in callbacks:
        if isinstance(cb, Evaluation):
            cb.training_seconds = clock.time_elapsed
        if isinstance(cb, BudgetPoints):
            cb.clock, cb.evaluation = clock, evaluation


def resolve_ckpt_path(cfg: DictConfig, model: L.LightningModule) -> str | None:
    """``ckpt_path``: null (fresh run), ``last`` (resume the newest run of this model and data) or a file;
    ``auto_resume=true`` resumes like ``last`` when there is something to resume and starts fresh otherwise.

    The file is checked here — readable without unpickling, ours, same family, weights of the same shapes — so
    a wrong checkpoint fails before training starts, not deep inside ``load_state_dict``.
    """
    value = cfg.get("ckpt_path")
    if not value and cfg.get("auto_resume"):
        value = find_last_checkpoint(cfg.paths.output_dir, cfg.paths.log_dir, cfg.get("run_name"), required=False)
    if not value:
        return None
    if str(value) == "last":
        path = find_last_checkpoint(cfg.paths.output_dir, cfg.paths.log_dir, cfg.get("run_name"))
    else:
        path = Path(str(value))
    ckpt = read_checkpoint(path)
    foreign = foreign_paths(ckpt)
    if foreign:  # a crafted state: Lightning would delete (recursively) what it names after its first save
        raise CheckpointError(
            f"ckpt_path={path}: its checkpoint callback state names {len(foreign)} path(s) that Lightning never "
            f"writes there, e.g. {foreign[0]}; resuming from it could delete files outside the run",
            fix="the checkpoint was edited; resume from one written by `python train.py` (or start a new run)",
        )
    family = ckpt["gensuite"].get("family")
    if family != model.family:
        raise CheckpointError(
            f"ckpt_path={path} is a '{family}' checkpoint but this run trains model={model.family}",
            fix=f"resume with model={family}, or give a {model.family} checkpoint",
        )
    own = model.state_dict()
    theirs = ckpt.get("current_model_state", ckpt["state_dict"])
    bad = [k for k in own if k not in theirs or theirs[k].shape != own[k].shape]
    if bad or set(theirs) - set(own):
        k = bad[0] if bad else sorted(set(theirs) - set(own))[0]
        detail = f"{k}: checkpoint {tuple(theirs[k].shape) if k in theirs else 'missing'} vs model " + (
            f"{tuple(own[k].shape)}" if k in own else "missing"
        )
        changed = config_differences(ckpt["gensuite"]["config"].get("model", {}), to_plain(cfg).get("model", {}))
        raise CheckpointError(
            f"ckpt_path={path} does not fit this model's shapes ({len(bad)} tensors differ; e.g. {detail})"
            + (f"; settings that differ: {', '.join(changed[:6])}" if changed else ""),
            fix="resume with the model settings the checkpoint was trained with (its config is in the run "
            "folder's .hydra/config.yaml)",
        )
    # every other changed setting: applied (printed) or refused (gensuite.runs.resume.RESUME_RULES)
    redo = check_resume(ckpt["gensuite"]["config"], to_plain(cfg), str(path))
    return ResumePath(str(path), redo)


def config_differences(theirs: dict, ours: dict, prefix: str = "model") -> list[str]:
    """``model.latent_dim: 16 in the checkpoint, 8 now`` for every leaf that differs."""
    out = []
    for key in sorted(set(theirs) | set(ours)):
        a, b = theirs.get(key), ours.get(key)
        name = f"{prefix}.{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, name)
        elif a != b:
            out.append(f"{name}: {a} in the checkpoint, {b} now")
    return out


def log_hparams(trainer: L.Trainer, cfg: DictConfig, metrics: dict[str, Any]) -> None:
    """Write the hparams-tab summary: the flat config against the final numeric metrics (already logged)."""
    writer = tensorboard_writer(trainer)
    if writer is None:  # no TensorBoard logger (logger=csv), or fast_dev_run (Lightning's dummy logger)
        return
    from torch.utils.tensorboard.summary import hparams

    params = flatten(to_plain(cfg))
    params = {k: v for k, v in params.items() if not k.startswith(("hydra.", "paths."))}
    numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    exp, ssi, sei = hparams(params, numeric)
    for summary in (exp, ssi, sei):  # into the run's own event file (lightning_compat.file_writer says why)
        lightning_compat.file_writer(writer).add_summary(summary)
    writer.flush()


def describe_run(cfg: DictConfig, model: L.LightningModule, datamodule) -> dict[str, Any]:
    parts = {}
    for k, v in cfg.model.items() if cfg.get("model") else []:
        if isinstance(v, DictConfig) and "_target_" in v and not v.get("_partial_", False):
            built = getattr(model, k, None)  # the class actually built (a factory's _target_ is a function)
            parts[k] = type(built).__name__ if built is not None else str(v._target_).rsplit(".", 1)[-1]
    has_likelihood = getattr(model, "has_likelihood", lambda: False)()
    return {
        FAMILY_KEY: model.family,
        DATA_KEY: datamodule.name,
        PARTS_KEY: ", ".join(f"{k}={v}" for k, v in sorted(parts.items())),
        SEED_KEY: cfg.get("seed"),
        **({LIKELIHOOD_KIND_KEY: getattr(model, "likelihood_kind", "upper bound")} if has_likelihood else {}),
    }


def compile_parts(model: L.LightningModule) -> None:
    """``compile=true``: `torch.compile` each network of the family in place (``nn.Module.compile``), so the
    state dict keeps its plain names (no ``_orig_mod.``) and checkpoints stay loadable without compiling."""
    for child in model.children():
        if any(p.requires_grad for p in child.parameters()):
            child.compile()


@releases_run_folder  # the run folder's lock (taken in prepare_output_dir) is released however the run ends
def train(cfg: DictConfig) -> dict[str, Any]:
    """Train one model as configured and evaluate it. Returns metrics and the objects (for tests and sweeps)."""
    check_environment(cfg)
    check_selection(cfg)
    out_dir = prepare_output_dir(cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.get("matmul_precision"):
        torch.set_float32_matmul_precision(cfg.matmul_precision)
    datamodule = instantiate_checked(cfg, "data")
    model = build_model(cfg)
    check_data_labels(model, datamodule)  # a conditional model of any family needs labelled data
    check_trainer_for_model(cfg, model)
    ckpt_path = resolve_ckpt_path(cfg, model)
    callbacks = build_callbacks(cfg)
    callbacks += resume_callbacks(ckpt_path)  # new optimiser settings over the restored ones (gensuite.runs.resume)
    watch = MemoryWatch()  # where a run ran out of memory, for the message (gensuite.cli.memory)
    callbacks.append(watch)
    logger = build_loggers(cfg)  # TensorBoard and CSV by default (conf/logger/)
    # checkpoints are written atomically beside their target (see gensuite.runs.checkpoint_io)
    # ... never through a link below the run folder, and removed only inside the folders of this run
    roots = [out_dir, *(cb.dirpath for cb in callbacks if getattr(cb, "dirpath", None))]
    plugins = [AtomicCheckpointIO(root=out_dir, roots=roots)]
    hand_in_clock(callbacks, model)
    # max_time is the TrainingClock's (callbacks.timer): given to the Trainer, it would add a wall-clock Timer
    clock = any(isinstance(cb, TrainingClock) for cb in callbacks)
    extra = {"max_time": None} if clock else {}
    trainer: L.Trainer = instantiate_checked(
        cfg, "trainer", callbacks=callbacks, logger=logger, plugins=plugins, **extra
    )
    if trainer.fast_dev_run:
        # Lightning 2.6.6 mutes ModelCheckpoint under fast_dev_run except its on_train_end, which still writes
        # last.ckpt: a debug run's checkpoint that `ckpt_path=last` would then resume from
        for checkpoint in trainer.checkpoint_callbacks:
            if hasattr(checkpoint, "save_last"):
                checkpoint.save_last = False
    if trainer.is_global_zero:
        for leftover in remove_stale_temporaries(out_dir / "checkpoints"):
            print(f"[gensuite] removed {leftover.name}, left by a checkpoint write that was killed")
        print(f"[gensuite] {model.family} on {datamodule.describe()}")
        print(f"[gensuite] run folder: {out_dir}" + (f" (resuming {ckpt_path})" if ckpt_path else ""))

    if cfg.get("compile"):
        compile_parts(model)
    result = {"metrics": {}, "trainer": trainer, "model": model, "datamodule": datamodule, "output_dir": out_dir}
    with ranks_of_this_job():
        # out of memory ends the run with a message naming the batch size that fits, not the allocator's traceback
        try:
            oom = catch_out_of_memory(lambda: trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path,
                                                          weights_only=True))  # fmt: skip
        except SIGTERMException:
            # Lightning 2.6 exits with status 0 after SIGTERM; a scheduler would read that as success
            print(f"[gensuite] SIGTERM at step {trainer.global_step}: stopped; resume with ckpt_path=last", flush=True)
            raise SystemExit(143) from None
        if oom is None and not trainer.interrupted:
            # final evaluation with the weights in place at the end (the EMA weights when the run averages them)
            oom = catch_out_of_memory(lambda: trainer.validate(model, datamodule=datamodule, verbose=False))
        if oom is not None:
            raise out_of_memory_error(cfg, trainer, model, datamodule, watch, oom)
        if trainer.interrupted:
            return result
    metrics = collect_metrics(trainer, model)
    metrics.update(describe_run(cfg, model, datamodule))
    if trainer.is_global_zero:
        write_record(out_dir / "metrics.json", metrics, "hydra.run.dir")
        log_hparams(trainer, cfg, metrics)
        print_summary(metrics, out_dir)
    result["metrics"] = metrics
    return result
