"""``python eval.py ckpt_path=X``: the final evaluation of `train`, run again from a checkpoint; or
``python eval.py samples=PATH data=D``: the same sample metrics of given samples (another tool's, or
``sample.py format=npz``'s) against the reference of data config ``D``.

By default the evaluation settings of a checkpoint are the ones the run used (from the checkpoint), with any
``metrics.*`` given on the command line applied on top — so ``eval.py`` on a run's checkpoint reproduces its
``metrics.json``. Samples are scored with the ``metrics`` config group as composed. Reading and checking sample
files is `gensuite.runs.sample_files`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from gensuite import config_dir
from gensuite.callbacks.evaluation import Evaluation
from gensuite.cli.config import instantiate_checked
from gensuite.cli.sampling import apply_sampler, options_from, pick_device
from gensuite.errors import ConfigError
from gensuite.record import (
    CKPT_PATH_KEY,
    EPOCHS_KEY,
    EVAL_DATA_KEY,
    NOTES_KEY,
    SAMPLES_PATH_KEY,
    STEPS_KEY,
    collect_metrics,
    print_summary,
    write_record,
)
from gensuite.runs import sample_files
from gensuite.runs.checkpoint import load_model
from gensuite.runs.trust import STORED_DATA_PATH
from gensuite.safe_files import refuse_link


def metrics_config(cfg: DictConfig, run_cfg: DictConfig) -> DictConfig:
    """The run's metrics settings, updated by the ``metrics.*`` overrides of this command line."""
    if not cfg.get("use_run_metrics", True) or run_cfg.get("metrics") is None:
        return cfg.metrics
    merged = OmegaConf.create(OmegaConf.to_container(run_cfg.metrics, resolve=True))
    try:
        from hydra.core.hydra_config import HydraConfig

        overrides = HydraConfig.get().overrides.task
    except ValueError:  # not under @hydra.main (called from Python): take cfg.metrics as given
        return cfg.metrics
    for item in overrides:
        key, _, _ = item.lstrip("+~").partition("=")
        if key.startswith("metrics."):
            OmegaConf.update(merged, key[len("metrics.") :], OmegaConf.select(cfg, key), force_add=True)
    return merged


DATA_DIR = config_dir() / "data"
IMAGE_DATA = sorted(p.stem for p in DATA_DIR.glob("*.yaml") if "modality: text" not in p.read_text())
WHAT = "ckpt_path=<.ckpt> scores a model; samples=<.npz | .npy | folder of images> data=<data> scores given samples"


def check_source(cfg: DictConfig) -> str:
    """``"ckpt"`` or ``"samples"``: exactly one of them, with the settings that go with it."""
    ckpt, samples = cfg.get("ckpt_path"), cfg.get("samples")
    if ckpt and samples:
        raise ConfigError("ckpt_path= and samples= were both given: eval.py scores one of them", fix=WHAT)
    if not ckpt and not samples:
        raise ConfigError("nothing to score: give ckpt_path= or samples=", fix=WHAT)
    if ckpt and cfg.get("data") is not None:
        raise ConfigError(
            "data= was given with ckpt_path=: a checkpoint is scored against the data it was trained on (its "
            "config travels inside it); data= is the reference of samples=",
            fix="drop data=",
        )
    if samples and cfg.get("data") is None:
        raise ConfigError(
            f"samples={samples} needs data=<name>: the data whose real images are the reference",
            fix=f"add data=<one of {', '.join(IMAGE_DATA)}>, the data the samples imitate",
        )
    if samples and cfg.get("sweep"):
        raise ConfigError("sweep= varies a checkpoint's sampling, not given samples", fix="drop sweep=")
    if samples and cfg.get("sampler") is not None:
        raise ConfigError("sampler= applies to a checkpoint's sampling, not to given samples", fix="drop sampler=")
    knobs = [f"sampling.{k}" for k, v in (cfg.get("sampling") or {}).items() if v is not None]
    if samples and knobs:
        raise ConfigError(
            f"{', '.join(knobs)} applies to a checkpoint's sampling, not to given samples",
            keys=tuple(knobs),
            fix="drop the sampling.* overrides",
        )
    return "ckpt" if ckpt else "samples"


def confirm_data_path(cfg: DictConfig, run_cfg: DictConfig) -> None:
    """A checkpoint's data read from a folder or file: the path stored in it is never followed (the file could
    name any folder, at any image size, and fill the cache); the user names it with ``data_path=``."""
    stored, given = run_cfg.get(STORED_DATA_PATH), cfg.get("data_path")
    if stored is None and given is None:
        return
    if stored is None:
        raise ConfigError(
            "data_path= was given but this checkpoint's data is not read from a folder or file",
            keys=("data_path",),
            fix="drop data_path=",
        )
    if given is None:
        raise ConfigError(
            f"this checkpoint's data ({str(run_cfg.data.get('_target_', '?')).rsplit('.', 1)[-1]}) was read from "
            f"{stored!r}; a path stored in a checkpoint is not followed (the file may come from someone else)",
            keys=("data_path",),
            fix=f"name the data yourself: data_path={stored}",
        )
    run_cfg.data.path = str(given)


def output_path(cfg: DictConfig, default: Path, folder: Path) -> tuple[Path, Path | None]:
    """Where the metrics go (``out=``, else ``default`` in ``folder``) and the folder below which no link may
    stand (None for the user's own ``out=``), checked now: a planted link costs no evaluation."""
    out, root = (Path(cfg.out), None) if cfg.get("out") else (default, folder)
    refuse_link(out, "out", root, "the metrics")
    return out, root


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    if check_source(cfg) == "samples":
        return evaluate_samples(cfg)
    if cfg.get("sweep"):  # one evaluation per value of a sampling knob: see gensuite.cli.sweep
        from gensuite.cli.sweep import run_sweep

        return {"sweep": run_sweep(cfg, evaluate)}
    model, run_cfg = load_model(cfg.ckpt_path)
    apply_sampler(model, cfg)
    options = options_from(model, cfg)  # passed to the evaluator's draws, never set on the model
    if cfg.get("seed") is not None:
        L.seed_everything(int(cfg.seed), verbose=False)
    run_cfg.metrics = metrics_config(cfg, run_cfg)
    confirm_data_path(cfg, run_cfg)
    datamodule = instantiate_checked(run_cfg, "data")
    evaluator = instantiate_checked(run_cfg, "metrics")
    evaluator.options = options
    device = pick_device(cfg.device)
    ckpt = Path(cfg.ckpt_path)
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    out, root = output_path(cfg, run_dir / f"eval-{ckpt.stem}.json", run_dir)
    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        logger=False,
        callbacks=[Evaluation(evaluator, output_dir=None)],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.validate(model, datamodule=datamodule, verbose=False)
    metrics = collect_metrics(trainer, model)
    # how the samples were made, with the options they were drawn with (collect_metrics knows only the defaults)
    metrics.update(model.eval_info(options) | model.sampling_info(options))
    metrics.pop(STEPS_KEY, None), metrics.pop(EPOCHS_KEY, None)
    metrics[CKPT_PATH_KEY] = str(ckpt)
    write_record(out, metrics, "out", root)
    print_summary(metrics, run_dir)
    print(f"[gensuite] metrics written to {out}")
    return metrics


def evaluate_samples(cfg: DictConfig) -> dict[str, Any]:
    """Score ``cfg.samples`` against the reference of ``cfg.data`` with the ``cfg.metrics`` evaluator. The file is
    read and checked before the data is loaded and the feature extractor prepared (a mistake costs no training)."""
    if cfg.get("seed") is not None:
        L.seed_everything(int(cfg.seed), verbose=False)
    datamodule = instantiate_checked(cfg, "data")
    # an image data module says so before it loads anything; any other is asked after loading
    if getattr(datamodule, "modality", None) != "image" and not datamodule.info().is_image:
        raise ConfigError(
            f"data={datamodule.name} is {datamodule.info().modality}: samples= scores images against image data",
            fix="data=<image data> (mnist5k, digits, image_folder, ...); score a text model with ckpt_path=",
        )
    path = Path(cfg.samples).expanduser()
    name = path.name if path.is_dir() else path.stem
    out, root = output_path(cfg, path.parent / f"eval-{name}.json", path.parent)
    array, source = sample_files.read_samples(path, datamodule.channels)
    images, notes = sample_files.as_images(
        array, datamodule.channels, datamodule.image_size, source, f"data={datamodule.name}"
    )
    notes += sample_files.count_notes(len(images), int(cfg.metrics.kid_subset_size), int(cfg.metrics.n_samples), source)
    labels = sample_files.read_labels(path)  # the classes a conditional model drew them for: the intra-class FID
    labels = torch.from_numpy(labels) if labels is not None and len(labels) == len(images) else None
    evaluator = instantiate_checked(cfg, "metrics")
    device = pick_device(cfg.device)
    datamodule.setup("validate")
    evaluator.prepare(datamodule, device)
    metrics = evaluator.evaluate_images(images, labels)
    if not metrics:
        raise ConfigError(
            f"no sample metric can be computed with metrics.features={cfg.metrics.features} on data="
            f"{datamodule.name}" + "".join(f"\n  {note}" for note in getattr(evaluator, "notes", [])),
            fix="metrics.features=all (ssl needs no labels; classifier where labelled) or metrics.features=inception "
            "metrics.inception_weights=<file>",
        )
    metrics.update(getattr(evaluator, "last_info", {}))
    notes = list(getattr(evaluator, "notes", [])) + notes
    if notes:
        metrics[NOTES_KEY] = " | ".join(notes)
    metrics[SAMPLES_PATH_KEY] = str(path)
    metrics[EVAL_DATA_KEY] = datamodule.name
    write_record(out, metrics, "out", root)
    print_metrics(metrics, f"{len(images)} samples against data={datamodule.name}")
    for note in notes:
        print(f"[gensuite] note: {note}")
    print(f"[gensuite] metrics written to {out}")
    return metrics


def print_metrics(metrics: dict[str, Any], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k in sorted(metrics):
        if k.startswith(("val/", "features/")):
            v = metrics[k]
            table.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    Console(width=100).print(table)
