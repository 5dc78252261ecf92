"""Helpers shared by the benchmarks: compose the real config, time things, print markdown tables."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from gensuite.cli.hydra_hooks import register_resolvers

CONF = str(Path(__file__).resolve().parents[1] / "conf")
register_resolvers()


def compose_cfg(
    overrides: Sequence[str], output_dir: str | Path = "/tmp/gensuite-bench", config_name: str = "train"
) -> DictConfig:
    """The config ``python <config_name>.py <overrides>`` would run, writing into ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def timeit(fn: Callable[[], object], repeat: int, warmup: int = 2) -> float:
    """Median seconds of ``fn()`` over ``repeat`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def spread(values: Sequence[float]) -> dict[str, float]:
    """Min, median and max of repeated measurements, and ``spread = max / min - 1`` (0.03: the repeats agree
    within 3 %). Positive values, e.g. steps/s of each repeat.

    >>> spread([2.0, 1.0, 1.5])
    {'min': 1.0, 'median': 1.5, 'max': 2.0, 'spread': 1.0}
    """
    xs = sorted(values)
    if not xs or xs[0] <= 0:
        raise ValueError(f"spread needs positive values, got {list(values)}")
    return {"min": xs[0], "median": statistics.median(xs), "max": xs[-1], "spread": xs[-1] / xs[0] - 1}


def table(rows: list[dict], columns: Sequence[str]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def machine() -> str:
    import os
    import platform

    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
