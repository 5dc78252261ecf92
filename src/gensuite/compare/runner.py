"""Making the runs: every family × seed as one Hydra multirun of ``python -m gensuite train`` under one equal time
budget, into ``<out>/runs/<family>-seed<seed>`` (with the feature networks cached in ``<out>/cache``); and, with
``curves=true``, one ``python -m gensuite eval ... sweep=...`` per run on its last checkpoint (every seed: an
interval over seeds at each knob value).

An interrupted comparison continues: run again with the same ``out=``, it keeps every run that finished (its
``metrics.json`` is there) and launches only the others, each with ``auto_resume=true`` so that a run killed midway
goes on from its newest checkpoint, the training clock included. The settings of the runs are kept in
``<out>/compare.json``; a rerun with other settings is refused (its finished runs would not be comparable)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from omegaconf import DictConfig

from gensuite import registry
from gensuite.compare.runs import Run, by_family
from gensuite.errors import ConfigError, DataError


def hms(seconds: float) -> str:
    """Seconds as Lightning's time string ``DD:HH:MM:SS``."""
    s = max(1, int(round(float(seconds))))
    return f"{s // 86400:02d}:{s % 86400 // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


RECORD = "compare.json"  # <out>/compare.json: the settings the runs under <out>/runs were launched with


def families_and_seeds(cfg: DictConfig) -> tuple[list[str], list[str]]:
    """The comparison's entries (families of conf/model/, and the two-stage entries of ``stages:``; ``all``: every
    family that trains from nothing, then every staged entry) and its seeds."""
    staged = stages(cfg)
    value = cfg.families
    if value == registry.ALL:
        families = [*registry.chosen(value), *staged]
    else:
        picked = [str(value)] if isinstance(value, str) else [str(f) for f in value]
        plain = [f for f in picked if f not in staged]
        if plain or not picked:
            registry.chosen(plain)  # unknown names and an empty list: a ConfigError naming families
        families = picked
    seeds = list(range(1, int(cfg.seeds) + 1))
    if not seeds:
        raise ConfigError(f"seeds must be >= 1, got {cfg.seeds}", keys=("seeds",), fix="seeds=1")
    return families, seeds


def stages(cfg: DictConfig) -> dict[str, dict]:
    """``stages:`` of conf/compare.yaml, checked: entry -> {first, then, share, overrides}."""
    from omegaconf import OmegaConf

    node = cfg.get("stages") or {}
    out = OmegaConf.to_container(node, resolve=False) if not isinstance(node, dict) else dict(node)
    known = registry.names()
    for name, spec in out.items():
        where = f"stages.{name}"
        if not isinstance(spec, dict) or any(spec.get(k) not in known for k in ("first", "then")):
            raise ConfigError(
                f"{where} needs first: and then:, each a family of conf/model/ ({', '.join(known)})",
                keys=(where,),
                fix=f"{where}: {{first: vqvae, then: transformer, share: 0.333, overrides: [...]}}",
            )
        share = spec.get("share", 1 / 3)
        if not isinstance(share, (int, float)) or not 0 < float(share) < 1:
            raise ConfigError(
                f"{where}.share={share}: stage 1's share of the budget must lie strictly between 0 and 1",
                keys=(f"{where}.share",),
                fix=f"{where}.share=0.333",
            )
        if name in known:
            raise ConfigError(
                f"stages.{name} has the name of a family of conf/model/", keys=(where,), fix="give it another name"
            )
        out[name] = {**spec, "share": float(share), "overrides": [str(o) for o in spec.get("overrides") or []]}
    return out


def stage1_folder(out: Path, entry: str, seed: int) -> Path:
    """Where stage 1 of the staged ``entry`` trains, outside ``runs/`` (the report reads only the finished pairs)."""
    return out / "stages" / f"{entry}-seed{seed}"


STAGE1_KEYS = {"model": "stage1/model", "seconds": "stage1/train_s", "ckpt": "stage1/ckpt", "share": "stage1/share"}


def run_folder(out: Path, family: str, seed: int) -> Path:
    """Where the run of ``family`` and ``seed`` trains (``hydra.sweep.subdir`` of `train_args`)."""
    return out / "runs" / f"{family}-seed{seed}"


def train_args(
    cfg: DictConfig, out: Path, families: list[str] | None = None, seeds: list[int] | None = None
) -> list[str]:
    """The multirun's command line: families × seeds (all of the comparison's unless given; staged entries are
    left to `stage_args`), the equal budget, validation on the same clock, one stable folder per run, resuming
    what a killed comparison left."""
    every_family, every_seed = families_and_seeds(cfg)
    staged = stages(cfg)
    return [
        "-m",
        f"model={','.join(f for f in families or every_family if f not in staged)}",
        f"seed={','.join(map(str, seeds or every_seed))}",
        *run_settings(cfg, out),
    ]


def stage_args(cfg: DictConfig, out: Path, entry: str, seeds: list[int]) -> tuple[list[str], list[str]]:
    """The two multiruns of a staged entry (``stages.<entry>``): stage 1 (``first``) for ``share`` of the budget
    into ``<out>/stages/<entry>-seed<seed>``, then stage 2 (``then``) for the rest into
    ``<out>/runs/<entry>-seed<seed>``, reading stage 1's ``checkpoints/last.ckpt`` where its ``overrides`` say
    ``{ckpt}``. With ``budgets=`` the budget is the largest point: stage 1 has no budget points, stage 2 makes
    those after stage 1's share, each on the entry's whole clock (stage 1's seconds plus its own)."""
    spec, points = stages(cfg)[entry], budget_seconds(cfg)
    total = points[-1] if points else seconds(cfg.max_time)
    first = max(1, round(total * spec["share"]))  # whole seconds, as trainer.max_time holds them
    head = [f"seed={','.join(map(str, seeds))}", f"hydra.sweep.subdir={entry}-seed${{seed}}"]
    ckpt = f"{out / 'stages' / entry}-seed${{seed}}/checkpoints/last.ckpt"  # Hydra resolves ${seed} per job
    one = [a for a in run_settings(cfg, out, hms(first), points_from=None) if not a.startswith("hydra.sweep.")]
    two = run_settings(cfg, out, hms(total - first), points_from=first)
    two = [a for a in two if not a.startswith("hydra.sweep.subdir")]
    return (
        ["-m", f"model={spec['first']}", *head, f"hydra.sweep.dir={out / 'stages'}", *one],
        ["-m", f"model={spec['then']}", *head, *two, *(o.replace("{ckpt}", ckpt) for o in spec["overrides"])],
    )


def seconds(time: str) -> float:
    """Lightning's ``DD:HH:MM:SS`` as seconds."""
    try:
        d, h, m, s = (float(p) for p in str(time).split(":"))
    except ValueError:
        raise ConfigError(f"max_time={time}: not DD:HH:MM:SS", keys=("max_time",), fix="max_time=00:00:06:00") from None
    return ((d * 24 + h) * 60 + m) * 60 + s


def mark_staged(out: Path, entry: str, spec: dict, seed: int) -> None:
    """Name stage 1 in the finished staged run's ``metrics.json``: the entry as its family, stage 1's model,
    training seconds and checkpoint (``stage1/*``), and its ``time/train_s`` as both stages' training."""
    from gensuite.record import FAMILY_KEY, PARTS_KEY, TRAIN_SECONDS_KEY, read_record, write_record

    path = run_folder(out, entry, seed) / "metrics.json"
    metrics = read_record(path)
    if STAGE1_KEYS["model"] in metrics:
        return
    first = read_record(stage1_folder(out, entry, seed) / "metrics.json")
    s1 = float(first.get(TRAIN_SECONDS_KEY, 0.0))
    ckpt = stage1_folder(out, entry, seed) / "checkpoints" / "last.ckpt"
    took = f"{s1 / 60:.1f} min" if s1 >= 60 else f"{s1:.0f} s"
    metrics.update({
        STAGE1_KEYS["model"]: spec["first"], STAGE1_KEYS["seconds"]: s1, STAGE1_KEYS["ckpt"]: str(ckpt),
        STAGE1_KEYS["share"]: spec["share"], "stage2/train_s": metrics.get(TRAIN_SECONDS_KEY),
        FAMILY_KEY: entry, TRAIN_SECONDS_KEY: s1 + float(metrics.get(TRAIN_SECONDS_KEY, 0.0)),
        PARTS_KEY: f"{spec['then']} on {spec['first']} (stage 1 = {took} of training); "
        + str(metrics.get(PARTS_KEY, "")),
    })  # fmt: skip
    write_record(path, metrics, "out", out)


def budget_seconds(cfg: DictConfig) -> list[float]:
    """``budgets=[1,2,4,8]`` (minutes of the training clock) as training seconds, increasing; [] without."""
    budgets = cfg.get("budgets")
    if not budgets:
        return []
    try:
        minutes = [float(b) for b in budgets]
    except (TypeError, ValueError):
        minutes = []
    if not minutes or min(minutes) <= 0 or len(set(minutes)) != len(minutes):
        raise ConfigError(
            f"budgets={budgets}: give distinct positive minutes of the training clock",
            keys=("budgets",),
            fix="budgets=[1,2,4,8] (fractions allowed: budgets=[0.25,0.5])",
        )
    return sorted(60 * m for m in minutes)


def data_overrides(cfg: DictConfig) -> list[str]:
    """The runs' data as ``train.py`` overrides: ``data=<name>`` (the choice of compare.py's ``data`` group, or a
    plain name in a config built by hand) and the command line's own ``data.<key>=...``."""
    if isinstance(cfg.data, str):
        return [f"data={cfg.data}"]
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get() if HydraConfig.initialized() else None
    if hc is None or hc.job.config_name != "compare":  # composed by hydra.compose without (or with another's) run
        return [f"data={_data_name(cfg)}"]
    mine = [o for o in hc.overrides.task if o.lstrip("+~").startswith("data.")]
    return [f"data={hc.runtime.choices.data}", *mine]


def _data_name(cfg: DictConfig) -> str:
    """The conf/data/ file whose ``_target_`` is the composed data's (only the name is recoverable there)."""
    import yaml

    from gensuite import config_dir
    from gensuite.errors import ConfigError

    target = cfg.data.get("_target_")
    names = [f.stem for f in sorted((Path(config_dir()) / "data").glob("*.yaml"))
             if (yaml.safe_load(f.read_text()) or {}).get("_target_") == target]  # fmt: skip
    if len(names) != 1:
        raise ConfigError(f"data: cannot tell which conf/data/ entry {target} is ({names or 'none'}); fix: data=<name>")
    return names[0]


def run_settings(cfg: DictConfig, out: Path, max_time: str | None = None, points_from: float | None = 0.0) -> list[str]:
    """Every override of the runs except the family and the seed: what makes two runs comparable. With
    ``budgets=``, one run per family and seed to the largest budget (its ``trainer.max_time``), evaluated and
    saved at every point (`gensuite.callbacks.evaluation.BudgetPoints`). ``max_time``: a stage's own share;
    ``points_from``: the training seconds of the budget spent before the run (stage 1's), None for no points."""
    points = budget_seconds(cfg)
    budget = max_time or (hms(points[-1]) if points else cfg.max_time)
    with_points = [
        "+callbacks.budget_points._target_=gensuite.callbacks.evaluation.BudgetPoints",
        "+callbacks.budget_points.seconds=[" + ",".join(f"{p:g}" for p in points) + "]",
        "+callbacks.budget_points.output_dir=${paths.output_dir}",
        *([f"+callbacks.budget_points.offset={points_from:g}"] if points_from else []),
    ]
    return [
        *data_overrides(cfg),
        f"hydra.sweep.dir={out / 'runs'}",
        # a folder named by family and seed, not by job number: a resumed comparison finds each run where it was
        "hydra.sweep.subdir=${hydra:runtime.choices.model}-seed${seed}",
        # a run killed midway goes on from its own newest checkpoint; a fresh one finds none (log_dir is out, whose
        # runs/<run_name>/ holds nothing: no other run's checkpoint is picked up)
        "auto_resume=true",
        f"paths.log_dir={out}",
        # the equal budget is wall-clock time: no epoch or step limit may stop a family first
        f"trainer.max_time={budget}",
        *(with_points if points and points_from is not None else []),
        "trainer.max_epochs=-1",
        "trainer.max_steps=-1",
        f"callbacks.evaluation.every_n_seconds={cfg.eval_every_n_seconds}",
        # validation (where the evaluation runs) on the same clock, whatever a family's epoch length or preset
        f"trainer.val_check_interval={hms(cfg.eval_every_n_seconds)}",
        "trainer.check_val_every_n_epoch=1",
        f"metrics.features={_features(cfg.metrics.features)}",
        "callbacks.progress_bar=null",
        # everything the comparison writes stays under its out (GENSUITE_CACHE_DIR: a cache shared on purpose)
        *([] if os.environ.get("GENSUITE_CACHE_DIR") else [f"paths.cache_dir={out / 'cache'}"]),
        *list(cfg.overrides or []),
    ]


def _features(features) -> str:
    """``metrics.features`` as one override value: a list becomes ``[a,b]``."""
    if isinstance(features, str):
        return features
    return "[" + ",".join(map(str, features)) + "]"


def check_settings(out: Path, settings: list[str]) -> None:
    """Record the runs' settings in ``<out>/compare.json``, or refuse a rerun on ``out`` with other settings."""
    from gensuite.safe_files import write_text_atomic

    record = out / RECORD
    if record.is_file():
        before = json.loads(record.read_text()).get("settings", [])
        if before != settings:
            changed = sorted(set(before) ^ set(settings))
            raise ConfigError(
                f"out={out} holds a comparison run with other settings ({', '.join(changed[:4])}); its finished "
                "runs would not be comparable with new ones",
                keys=("out",),
                fix="continue it with the settings it was started with (see its compare.json), or give a new out=",
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(record, json.dumps({"settings": settings}, indent=2) + "\n", "out")


def remaining(cfg: DictConfig, out: Path) -> dict[tuple[int, ...], list[str]]:
    """The runs still to make, as multiruns: seeds -> the families that lack exactly those seeds (one multirun
    while nothing has finished)."""
    families, seeds = families_and_seeds(cfg)
    todo: dict[tuple[int, ...], list[str]] = {}
    for family in families:
        missing = tuple(s for s in seeds if not (run_folder(out, family, s) / "metrics.json").is_file())
        if missing:
            todo.setdefault(missing, []).append(family)
    return todo


def run_families(cfg: DictConfig, out: Path) -> tuple[Path, str]:
    """Train every family (x seeds) as a Hydra multirun of train.py into ``out/runs``, and every staged entry as
    two (`stage_args`): the runs that have not finished, each resumed from its checkpoint where it has one (see
    the module's docstring)."""
    families, seeds = families_and_seeds(cfg)
    staged = {f: spec for f, spec in stages(cfg).items() if f in families}
    settings = run_settings(cfg, out) + ([f"jobs={parallel_jobs(cfg)}"] if parallel_jobs(cfg) > 1 else [])
    check_settings(out, settings + [f"stages.{f}={json.dumps(spec, sort_keys=True)}" for f, spec in staged.items()])
    commands = ["python -m gensuite train " + " ".join(train_args(cfg, out))] if set(families) - set(staged) else []
    for entry in staged:
        commands += ["python -m gensuite train " + " ".join(a) for a in stage_args(cfg, out, entry, seeds)]
    todo = remaining(cfg, out)
    done = len(families) * len(seeds) - sum(len(f) * len(s) for s, f in todo.items())
    if done:
        print(f"[gensuite] compare: {done} finished run(s) in {out / 'runs'} kept", flush=True)
    jobs = parallel_jobs(cfg)
    if jobs > 1:
        _train_parallel(cfg, out, todo, staged, jobs)
    else:
        for missing, group in todo.items():
            for args in multiruns(cfg, out, group, list(missing), staged):
                _train(args, out)
    for entry, spec in staged.items():
        for seed in seeds:
            if _finished(run_folder(out, entry, seed)):
                mark_staged(out, entry, spec, seed)
    return out / "runs", " && ".join(commands)


def multiruns(cfg: DictConfig, out: Path, group: list[str], seeds: list[int], staged: dict) -> list[list[str]]:
    """The train.py multiruns that make ``group`` x ``seeds``, in order: the plain families as one, and per staged
    entry its stage 1 (for the seeds whose stage 1 has not finished) and then its stage 2."""
    runs = [train_args(cfg, out, group, seeds)] if set(group) - set(staged) else []
    for entry in (f for f in group if f in staged):
        first = [s for s in seeds if not _finished(stage1_folder(out, entry, s))]
        runs += [stage_args(cfg, out, entry, first)[0]] if first else []
        runs.append(stage_args(cfg, out, entry, seeds)[1])
    return runs


def parallel_jobs(cfg: DictConfig) -> int:
    """``jobs=N``: how many runs train at once (each on its share of the cores); 1 by default."""
    jobs = 1 if cfg.get("jobs") is None else cfg.get("jobs")
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ConfigError(
            f"jobs={jobs}: how many runs train at once", keys=("jobs",), fix="jobs=1, or jobs=2 on 2 cores"
        )
    return jobs


def _train_parallel(cfg: DictConfig, out: Path, todo: dict, staged: dict, jobs: int) -> None:
    """The missing runs, ``jobs`` at a time: one train.py per run (a staged entry's two stages in order, as one
    job), each with ``cores // jobs`` threads, its output in ``<out>/jobs/<family>-seed<seed>.log``. Every run
    trains on its own training clock; the runs beside it share the machine, the same for every family."""
    from concurrent.futures import ThreadPoolExecutor

    queue = [(f"{family}-seed{seed}", multiruns(cfg, out, [family], [seed], staged))
             for missing, group in todo.items() for seed in missing for family in group]  # fmt: skip
    queue.sort(key=lambda job: int(job[0].rpartition("-seed")[2]))  # seed by seed: every family early
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    (out / "jobs").mkdir(parents=True, exist_ok=True)

    def one(job: tuple[str, list[list[str]]]) -> str | None:
        name, multiruns = job
        log = out / "jobs" / f"{name}.log"
        print(f"[gensuite] compare: {name} started ({threads} thread(s); output in {log})", flush=True)
        with log.open("a") as f:
            for args in multiruns:
                f.write(f"python -m gensuite train {' '.join(args)}\n")
                f.flush()
                code = subprocess.run([sys.executable, "-m", "gensuite", "train", *args], stdout=f, stderr=f, env=env)
                if code.returncode != 0:
                    print(f"[gensuite] compare: {name} failed (exit {code.returncode}); see {log}", flush=True)
                    return name
        print(f"[gensuite] compare: {name} finished", flush=True)
        return None

    print(f"[gensuite] compare: {len(queue)} run(s), {jobs} at a time; interrupted? the same command with "
          f"out={out} continues", flush=True)  # fmt: skip
    with ThreadPoolExecutor(jobs) as pool:
        failed = [name for name in pool.map(one, queue) if name]
    if failed:
        raise DataError(
            f"the comparison runs {', '.join(failed)} failed; their output is in {out / 'jobs'}; finished runs are in "
            f"{out / 'runs'}",
            fix=f"continue: the same compare.py command with out={out}; or the report on what finished: "
            f"python compare.py runs={out / 'runs'}",
        )


def _finished(folder: Path) -> bool:
    return (folder / "metrics.json").is_file()


def _train(args: list[str], out: Path) -> None:
    print(f"[gensuite] compare: python -m gensuite train {' '.join(args)}", flush=True)
    print(f"[gensuite] compare: interrupted? the same command with out={out} continues", flush=True)
    proc = subprocess.run([sys.executable, "-m", "gensuite", "train", *args])
    if proc.returncode != 0:
        raise DataError(
            f"the comparison runs failed (exit {proc.returncode}); finished runs are in {out / 'runs'}",
            fix=f"continue: the same compare.py command with out={out}; or the report on what finished: "
            f"python compare.py runs={out / 'runs'}",
        )


def curve_command(run: Run, args: str) -> list[str]:
    """eval.py on the run's last checkpoint with the family's sweep arguments (``curve_args.<family>``)."""
    return [sys.executable, "-m", "gensuite", "eval", f"ckpt_path={run.checkpoint}", *shlex.split(args)]


def sweep_knob(family: str, args: str) -> str:
    """The knob ``curve_args.<family>`` sweeps: ``sampler=ddim sweep=sampler.steps=5,10`` -> ``sampler.steps``."""
    for arg in shlex.split(args):
        if arg.startswith("sweep="):
            return arg[len("sweep=") :].strip("'\"").partition("=")[0]
    raise ConfigError(
        f"curve_args.{family}={args!r} sweeps no knob",
        keys=(f"curve_args.{family}",),
        fix=f"e.g. curve_args.{family}='sweep=sampling.temperature=0.6,0.8,1.0' (eval.py's sweep= argument)",
    )


def run_curves(runs: list[Run], curve_args: dict) -> list[str]:
    """One trade-off curve per run, every seed of a family (each knob value then has an interval over seeds),
    unless the run has that knob's sweep folder already. Returns notes on the families and runs that got none."""
    notes = []
    for family, group in by_family(runs).items():
        args = (curve_args or {}).get(family)
        if not args:
            notes.append(f"{family}: no curve_args.{family}, no curve")
            continue
        knob = sweep_knob(family, str(args))
        for run in group:
            if run.checkpoint is None:
                notes.append(f"{family}: no checkpoints/last.ckpt in {run.path}, no curve")
                continue
            if run.has_sweep(knob):  # made before (a report re-rendered, a comparison continued): reuse it
                continue
            cmd = curve_command(run, str(args))
            print(f"[gensuite] compare curve: {shlex.join(cmd[1:])}", flush=True)
            if subprocess.run(cmd).returncode != 0:
                notes.append(f"{family}: the sweep of {run.path.name} failed ({args})")
    return notes
