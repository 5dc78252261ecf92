"""Resuming with changed settings: apply what can change, refuse what cannot, say which is which.

A resumed run is built from the *new* composed config, then Lightning overwrites part of it with the
checkpoint's state: the weights, the loop counters, the callbacks' states and — the silent one — the optimiser's
param groups (``lr``, ``betas``, ``weight_decay``...) and the LR schedulers' state (``base_lrs``, attributes).
`check_resume` compares the new config with the checkpoint's (``ckpt["gensuite"]["config"]``) and sorts every
difference by `RESUME_RULES`; `ApplyOnResume` puts the new optimiser / scheduler settings back after Lightning
has restored the old ones. The config stored in the new run (``.hydra/config.yaml``, every checkpoint) is the new
one, which is then what really ran.

Lightning 2.6.6 order in ``Trainer._run`` (checked in its source): restore weights + callback states
(``on_load_checkpoint``: no optimiser exists yet) -> ``strategy.setup`` (``configure_optimizers``, from the new
config) -> ``on_fit_start`` -> ``restore_training_state`` (precision, loops, optimiser and scheduler states) ->
sanity validation -> ``on_train_start`` -> the first step. So `ApplyOnResume` snapshots the freshly configured
optimisers in ``on_fit_start`` and writes the changed settings back in ``on_train_start``.
"""

from __future__ import annotations

import fnmatch
from typing import Any

import lightning as L

from gensuite import lightning_compat
from gensuite.errors import ConfigError
from gensuite.families.catalog import sampling_only_model_keys
from gensuite.runs.lock import is_global_rank_zero

APPLY = "applied"
INEXACT = "applied; the run no longer matches an uninterrupted one"
REFUSE = "refused"
IGNORE = "ignored"

# model settings that only change how samples and evaluations are made: the families' sampling-only knobs as
# declared (temperature, guidance_scale...: gensuite.families.options), and the samplers and evaluation settings
_SAMPLING = ("sampler", *sampling_only_model_keys(), "use_cache", "text_length", "text_samples")
_SAMPLING += ("clip_denoised", "nll_timesteps", "nll_seed")

# What a changed setting does on resume. The first row whose pattern matches the dotted key decides
# (fnmatch: `*` also spans dots). A key that is missing from the checkpoint's config (added to the suite since)
# is applied with a note instead of being refused; the weight-shape check still guards the model.
# fmt: off
RESUME_RULES: list[tuple[tuple[str, ...], str, str]] = [
    (("ckpt_path", "auto_resume"), IGNORE, "how this run starts"),
    (("model._target_",), REFUSE, "another family"),
    (("model.optimizer*._target_", "model.optimizer*._partial_"), REFUSE, "the saved state is the old class's"),
    (("model.optimizer*",), APPLY, "set again in the optimiser after Lightning restores the checkpoint's"),
    (("model.scheduler", "model.scheduler._target_"), REFUSE, "the saved schedule state belongs to the old one"),
    (("model.scheduler.*",), APPLY, "the schedule follows the new settings; its step count comes from the checkpoint"),
    (tuple(f"model.{k}*" for k in _SAMPLING), APPLY, "sampling / evaluation only"),
    (("model.*",), REFUSE, "the model's parts and shapes: the weights were trained for these"),
    # a new batch size is a valid run, but no longer the run an uninterrupted training would have been
    (("data.batch_size", "trainer.accumulate_grad_batches", "trainer.devices", "trainer.num_nodes"), INEXACT,
     "the batches (data order, step count) differ from here on"),
    (("data.eval_batch_size", "data.num_workers", "data.pin_memory", "data.persistent_workers"), APPLY,
     "evaluation / loading speed only"),
    (("data.*", "seed"), REFUSE, "other data, split or preprocessing than the weights were trained on"),
    (("trainer.precision",), REFUSE, "another number format: the optimiser and grad-scaler states are the old one's"),
    (("trainer.*",), APPLY, "the trainer is built from the new settings (budget, validation, logging, hardware)"),
    (("callbacks.ema", "callbacks.ema._target_", "callbacks.ema.module"), REFUSE,
     "the checkpoint's weights and averaged weights are laid out for the old EMA setting"),
    (("*",), APPLY, "built from the new settings; holds no trained state"),  # callbacks, metrics, logger, paths...
]
# fmt: on


def rule_for(key: str) -> tuple[str, str]:
    for patterns, rule, why in RESUME_RULES:
        if any(fnmatch.fnmatchcase(key, p) for p in patterns):
            return rule, why
    raise AssertionError("the last rule matches every key")


_MISSING = object()


def differences(theirs: Any, ours: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``[(dotted key, checkpoint value, new value)]`` for every leaf that differs (a dict against a non-dict,
    e.g. a callback switched on, is one difference at its key)."""
    if isinstance(theirs, dict) and isinstance(ours, dict):
        out = []
        for k in sorted(set(theirs) | set(ours), key=str):
            out += differences(theirs.get(k, _MISSING), ours.get(k, _MISSING), f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if theirs == ours else [(prefix, theirs, ours)]


def _show(v: Any) -> str:
    return "(absent)" if v is _MISSING else repr(v) if isinstance(v, str) else str(v)


def check_resume(old: dict, new: dict, path: str) -> dict[str, set[str]]:
    """Sort the differences between the checkpoint's config ``old`` and the new one: print the applied ones (one
    line each), raise `ConfigError` listing the refused ones. Returns what `ApplyOnResume` must set again:
    ``{"optimizer": {param-group keys}, "scheduler": {attribute names}}`` ("*": all of them)."""
    old_out, new_out = str(old.get("paths", {}).get("output_dir")), str(new.get("paths", {}).get("output_dir"))
    refused, notes, redo = [], [], {"optimizer": set(), "scheduler": set()}
    for key, a, b in differences(old, new):
        rule, why = rule_for(key)
        if rule == REFUSE and a is _MISSING:
            rule, why = APPLY, "not in the checkpoint's config (a setting added since)"
        if rule == IGNORE:
            continue
        if rule == REFUSE:
            refused.append(f"{key}: {_show(a)} in the checkpoint, {_show(b)} now ({why})")
            continue
        # a path inside the run folder (checkpoints/, tensorboard/...) follows paths.output_dir: one line for all
        quiet = key != "paths.output_dir" and isinstance(a, str) and a.replace(old_out, new_out) == b
        if not quiet:
            notes.append(f"[gensuite] resume: {key} {_show(a)} -> {_show(b)} ({rule})")
        parts = key.split(".")
        if parts[0] == "model" and len(parts) >= 2 and parts[1].startswith("optimizer"):
            redo["optimizer"].add(parts[2] if len(parts) > 2 else "*")
        elif parts[:2] == ["model", "scheduler"] and len(parts) > 2:
            redo["scheduler"].add(parts[2])
    if refused:
        raise ConfigError(
            f"ckpt_path={path}: {len(refused)} setting(s) differ from the checkpoint's and cannot change on "
            "resume:\n    " + "\n    ".join(refused),
            fix="resume with the checkpoint's settings (its config is in its run folder's .hydra/config.yaml), or "
            "start a new run from scratch (no ckpt_path)",
        )
    if is_global_rank_zero():
        for line in notes:
            print(line, flush=True)
    return redo


class ResumePath(str):
    """The checkpoint path handed to ``trainer.fit``, carrying what `check_resume` found must be set again."""

    redo: dict[str, set[str]]

    def __new__(cls, path: str, redo: dict[str, set[str]]):
        self = super().__new__(cls, path)
        self.redo = redo
        return self


def resume_callbacks(ckpt_path: str | None) -> list[L.Callback]:
    """The callbacks a resumed run needs for its changed settings (none for a fresh run, or nothing changed)."""
    redo = getattr(ckpt_path, "redo", None)
    return [ApplyOnResume(redo)] if redo and (redo["optimizer"] or redo["scheduler"]) else []


class ApplyOnResume(L.Callback):
    """Writes the new config's optimiser / scheduler settings back over the ones Lightning restored.

    The values come from the optimisers Lightning configured from the new config (snapshot in ``on_fit_start``,
    before it loads the checkpoint's states over them), so per-group settings (no weight decay on biases...) and
    two optimisers sharing one config (a GAN without ``optimizer_d``) come out as in a fresh run. A learning rate
    under a schedule is rescaled: the step's rate becomes ``new base x schedule(step)``, ``initial_lr`` and the
    scheduler's ``base_lrs`` the new base.
    """

    def __init__(self, redo: dict[str, set[str]]):
        self.redo = redo
        self._fresh: list[list[dict]] = []
        self._fresh_sched: list[dict] = []

    def on_fit_start(self, trainer, pl_module) -> None:
        self._fresh = [
            [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] for opt in trainer.optimizers
        ]
        self._fresh_sched = [dict(c.scheduler.state_dict()) for c in trainer.lr_scheduler_configs]

    def on_train_start(self, trainer, pl_module) -> None:
        keys = self.redo["optimizer"]
        for opt, fresh in zip(trainer.optimizers, self._fresh, strict=True):
            scheds = [c.scheduler for c in trainer.lr_scheduler_configs if c.scheduler.optimizer is opt]
            for i, (group, new) in enumerate(zip(opt.param_groups, fresh, strict=True)):
                plain = (set(new) if "*" in keys else keys & set(new)) - {"lr", "initial_lr"}
                for key in plain:  # betas, weight_decay, eps...: as the new config builds them
                    group[key] = new[key]
                if "lr" in keys or "*" in keys:
                    old_base, new_base = group.get("initial_lr", group["lr"]), new.get("initial_lr", new["lr"])
                    group["lr"] = group["lr"] * new_base / old_base if old_base else new_base
                    if "initial_lr" in group:
                        group["initial_lr"] = new_base
                    for s in scheds:
                        s.base_lrs[i] = new_base
            for s in scheds:  # what get_last_lr() / LearningRateMonitor report
                lightning_compat.set_last_lr(s, [g["lr"] for g in opt.param_groups])
        # a torch scheduler keeps its settings (step_size, gamma...) in its state: set the changed ones again
        for config, fresh in zip(trainer.lr_scheduler_configs, self._fresh_sched, strict=True):
            for key in self.redo["scheduler"] & (set(fresh) - lightning_compat.SCHEDULER_BOOKKEEPING):
                setattr(config.scheduler, key, fresh[key])
