"""``python eval.py ckpt_path=X``: the final evaluation of `train`, run again from a checkpoint.

By default the evaluation settings are the ones the run used (from the checkpoint), with any ``metrics.*`` given
on the command line applied on top — so ``eval.py`` on a run's checkpoint reproduces its ``metrics.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from gensuite.callbacks.evaluation import Evaluation
from gensuite.checkpoint import load_model
from gensuite.config import instantiate_checked
from gensuite.sample import apply_sampler, pick_device
from gensuite.train import collect_metrics, print_summary


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


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    model, run_cfg = load_model(cfg.ckpt_path)
    apply_sampler(model, cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(int(cfg.seed), verbose=False)
    run_cfg.metrics = metrics_config(cfg, run_cfg)
    datamodule = instantiate_checked(run_cfg, "data")
    evaluator = instantiate_checked(run_cfg, "metrics")
    device = pick_device(cfg.device)
    ckpt = Path(cfg.ckpt_path)
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
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
    metrics.pop("train/global_step", None), metrics.pop("train/epochs", None)
    metrics["eval/ckpt_path"] = str(ckpt)
    out = Path(cfg.out) if cfg.get("out") else run_dir / f"eval-{ckpt.stem}.json"
    out.write_text(json.dumps(metrics, indent=2, sort_keys=True, default=str) + "\n")
    print_summary(metrics, run_dir)
    print(f"[gensuite] metrics written to {out}")
    return metrics
