"""The suite's side of a peer row: ``train.py model=<family>`` as a user runs it (the current default, composed), then
its last checkpoint sampled by the one draw loop ``sample.py`` uses, or its text scored byte by byte.

`suite_recipe` gives the same shape of recipe as `benchmarks.peers.recipes`: its settings are Hydra overrides (the
default's own learning rate, written out), its trials scale the learning rate and turn one knob of the default.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from benchmarks.peers.measure import CONTEXT

ROOT = Path(__file__).resolve().parents[2]
FIT_EVAL_N = 200  # the run's own final evaluation (unused here: the rows are scored from sample files)


def _knob_gan(cfg) -> dict:
    """A slower EMA of the generator; a default without EMA gets a generator of twice the width instead."""
    if cfg.callbacks.get("ema") is not None:
        return {"callbacks.ema.decay": 0.999}
    return {"model.decoder.width": 2 * cfg.model.decoder.width}


# family -> (model, data overrides, learning-rate keys, the knob's overrides from the composed default)
FAMILIES = {
    "vae": ("vae", ["data=mnist5k"], ("model.optimizer.lr",), lambda cfg: {
        "model.encoder.width": 2 * cfg.model.encoder.width, "model.decoder.width": 2 * cfg.model.decoder.width}),
    "gan": ("gan", ["data=mnist5k"], ("model.optimizer.lr", "model.optimizer_d.lr"), _knob_gan),
    "diffusion": ("diffusion", ["data=mnist5k"], ("model.optimizer.lr",), lambda cfg: {"callbacks.ema": None}),
    "text": ("transformer", ["data=text", f"data.seq_len={CONTEXT}", "data.val_fraction=0.02"],
             ("model.optimizer.lr",), lambda cfg: {"model.net.dropout": round(cfg.model.net.dropout + 0.1, 3)}),
}  # fmt: skip


def override(key: str, value) -> str:
    """``key=value`` as Hydra parses it back to ``value`` (None: null; lists in brackets)."""
    if value is None:
        return f"{key}=null"
    if isinstance(value, (list, tuple)):
        return f"{key}=[{','.join(map(str, value))}]"
    return f"{key}={value}"


def composed(family: str, text_file: Path | None = None):
    """The config ``train.py`` composes for the family's default (``text_file``: the bytes the text side trains on)."""
    from benchmarks.common import compose_cfg

    model, data, _, _ = FAMILIES[family]
    return compose_cfg([f"model={model}", *data, *([f"data.path={text_file}"] if text_file else [])])


def fingerprint(cfg) -> str:
    """A short hash of the composed default (model, data, trainer, callbacks, unresolved): rows measured with an
    older default are not taken for this one's."""
    parts = {k: OmegaConf.to_container(cfg[k], resolve=False) for k in ("model", "data", "trainer", "callbacks")}
    parts["data"].pop("path", None)  # where this invocation keeps the text file, not what it holds
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def suite_recipe(family: str, work: Path, text_file: Path | None = None) -> dict:
    """The suite's default for ``family`` as a recipe (see the module docstring); runs write under ``work``."""
    model, data, lr_keys, knob = FAMILIES[family]
    cfg = composed(family, text_file)
    data = [*data, *([f"data.path={text_file}"] if text_file else [])]

    def train(settings: dict, _data, seconds: float, seed: int):
        folder = work / f"suite-{family}-{hashlib.sha1(repr((settings, seconds, seed)).encode()).hexdigest()[:10]}"
        ckpt, metrics = run_train(model, [*data, *(override(k, v) for k, v in settings.items())], seconds, seed, folder)
        keys = {"steps": "train/global_step", "train_s": "time/train_s", "parameters": "model/parameters"}
        facts = {k: metrics.get(v) for k, v in keys.items()}
        return facts, (text_scorer(ckpt) if family == "text" else image_sampler(ckpt))

    return {
        "name": f"model={model}",
        "settings": {k: OmegaConf.select(cfg, k) for k in lr_keys},
        "lr": lr_keys,
        "lr_factors": (1 / 3, 3),
        "knob": knob(cfg),
        "variants": ("-",) if family == "text" else ("default",),
        "train": train,
        "fingerprint": fingerprint(cfg),
        "config": cfg,
    }


def hms(seconds: float) -> str:
    """Seconds as ``DD:HH:MM:SS`` (``trainer.max_time``), at least 1 s."""
    s = max(1, int(round(seconds)))
    return f"{s // 86400:02d}:{s % 86400 // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def run(args: list[str], log: Path) -> None:
    """``python <args>`` from the repository root (this checkout's ``src`` first on the path), its output into
    ``log``; a failure stops with the log's tail."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise SystemExit(f"python {' '.join(args)} failed (exit {proc.returncode}); {log}:\n{tail}")


def run_train(model: str, overrides: list[str], seconds: float, seed: int, folder: Path) -> tuple[Path, dict]:
    """``train.py model=<model> <overrides> seed=<seed>`` for ``seconds`` of training (the `TrainingClock`'s) into
    ``folder``: (last.ckpt, metrics.json)."""
    images = not any(o == "data=text" for o in overrides)
    args = [
        "train.py",
        f"model={model}",
        *overrides,
        f"seed={seed}",
        f"trainer.max_time={hms(seconds)}",
        "trainer.max_epochs=-1",  # the budget is time: no epoch or step limit may stop it first
        "trainer.max_steps=-1",
        # the run's own final evaluation stays (a preset may checkpoint on it), small: the rows are scored from
        # sample files, as the peers' are
        *([f"metrics.n_samples={FIT_EVAL_N}", f"metrics.kid_subset_size={FIT_EVAL_N}", "metrics.bootstrap=0"]
          if images else []),
        "callbacks.progress_bar=null",
        f"hydra.run.dir={folder}",
    ]  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    run(args, folder.parent / f"{folder.name}.train.log")
    return folder / "checkpoints" / "last.ckpt", json.loads((folder / "metrics.json").read_text())


def image_sampler(ckpt: Path):
    """``sampler(variant, n, seed)``: ``n`` images of the checkpoint (EMA weights where the run had EMA), drawn as
    ``sample.py ckpt_path=<ckpt> n=<n> seed=<seed>`` draws them (the one draw loop, batches of 500)."""
    from gensuite.families.draw import draw
    from gensuite.runs.checkpoint import load_model

    model, _ = load_model(ckpt)

    def sample(_variant: str, n: int, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return torch.cat([x.cpu() for x, _ in draw(model, n, 500, g)])

    return sample


def text_scorer(ckpt: Path):
    """``nats_of(windows)`` of the checkpoint's transformer: each byte's NLL, the first from its own start token."""
    from gensuite.runs.checkpoint import load_model

    model, _ = load_model(ckpt)
    model.eval()
    return lambda windows: model.token_nats(model.tokenizer.encode(windows))[0]
