"""Checks of a command line before anything is built, so that a user's mistake reads as a `ConfigError` (exit 2).

- `check_command_line` composes the command line with Hydra's compose API before ``@hydra.main`` does. Hydra
  catches its own errors inside ``hydra.main`` and exits 1 with its message, so they cannot be caught around it;
  composing first raises them here, where they are reprinted in the suite's format with the closest valid key or
  option. It then checks each ``key=value`` against the type the key is declared with (`check_override_types`):
  the type hint of the argument it becomes (``trainer.max_epochs`` -> ``Trainer(max_epochs: int | None)``), else
  the kind of its yaml default.
- `warn_cpu_oversubscription`: more CPU processes than cores is a warning, not an error.

Hydra's own errors are reprinted by `gensuite.cli.hydra_errors`.
"""

from __future__ import annotations

import difflib
import inspect
import os
import sys
import types
import typing
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from gensuite.cli.hydra_errors import explain_hydra_error
from gensuite.errors import ConfigError

# a sweep is checked value by value; past this many compositions (a long range()) the rest is left to Hydra
MAX_COMPOSITIONS = 32


def check_command_line(config_dir: str, config_name: str, argv: list[str]) -> None:
    """Compose ``argv``'s overrides as ``@hydra.main`` will (every value of a ``-m`` sweep) and check the values.

    Commands that do not compose the app's config (``--help``, ``--info``, another config dir...) are left to
    Hydra. Raises `ConfigError`.
    """
    from hydra import initialize_config_dir

    from gensuite.hydra_compat import args_parser  # the parser @hydra.main itself reads argv with

    args, _ = args_parser().parse_known_args(argv)
    if (
        args.help
        or args.hydra_help
        or args.shell_completion
        or args.info
        or args.experimental_rerun
        or args.config_path
        or args.config_dir
    ):
        return
    config_name = args.config_name or config_name
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        for overrides in _compositions(config_name, list(args.overrides), bool(args.multirun)):
            cfg = _compose(config_name, overrides)
            check_search_space(config_name, cfg, overrides)
            if args.cfg is None:  # --cfg only prints the config: no need to import the targets for their types
                check_override_types(cfg, _compose(config_name, _group_overrides(cfg, overrides)), overrides)


def check_search_space(config_name: str, cfg: DictConfig, overrides: list[str]) -> None:
    """A sweeper's search space (``hparams_search=optuna``: ``hydra.sweeper.params``) must exist and every key in it
    must compose with this command line, so that a space for another family fails here, not in every trial."""
    search = cfg.hydra.runtime.choices.get("hparams_search")
    if not search or not _multirun(cfg):
        return
    params = dict(OmegaConf.select(cfg, "hydra.sweeper.params") or {})
    model = cfg.hydra.runtime.choices.get("model")
    if not params:
        raise ConfigError(
            f"hparams_search={search}: no search space for model={model}",
            keys=("hydra.sweeper.params",),
            fix=f"write conf/preset/search/{search}_{model}.yaml (one 'key: choice(...)|interval(...)' line per "
            "setting, as the suite's own files there), or give 'hydra.sweeper.params.<key>=choice(...)'",
        )
    for key, space in params.items():
        value = _first_value(str(space))
        try:
            _compose(config_name, [*overrides, f"{key}={value}"])
        except ConfigError as exc:
            raise ConfigError(
                f"hparams_search={search}: the search space of model={model} sets {key}, which this run's config "
                f"does not take ({str(exc).splitlines()[0]})",
                keys=(key,),
                fix=f"remove {key} from conf/preset/search/{search}_{model}.yaml, or override it: "
                f"'hydra.sweeper.params.{key}=null'",
            ) from None


def _multirun(cfg: DictConfig) -> bool:
    """Whether the composed config runs as a multirun (``hydra.mode`` is a `RunMode` once composed, or a string)."""
    return str(cfg.hydra.mode).rsplit(".", 1)[-1] == "MULTIRUN"


def _first_value(space: str) -> str:
    """A value of a sweeper's search-space entry: the first of ``choice(a, b)`` / ``range(a, b)``, the low end of
    ``interval(lo, hi)``, a plain value as it is."""
    inner = space[space.find("(") + 1 : space.rfind(")")] if space.endswith(")") and "(" in space else space
    first = inner.split(",")[0].strip()
    return first or space


def _compose(config_name: str, overrides: list[str]) -> DictConfig:
    from hydra import compose

    try:
        return compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    except Exception as exc:
        raise explain_hydra_error(exc, config_name, overrides) from None


def _parse(overrides: list[str]) -> list:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_overrides(overrides)
    except Exception as exc:
        raise explain_hydra_error(exc, "", overrides) from None


def _compositions(config_name: str, overrides: list[str], multirun: bool) -> list[list[str]]:
    """The override lists to compose: the command line itself, or under multirun one list per sweep value (the
    other sweeps at their first value), so that a bad second value fails before the first job has run."""
    parsed = _parse(overrides)
    sweeps = [o for o in parsed if o.is_sweep_override()]
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    if not sweeps:
        return [overrides]
    if not multirun:  # a config may switch to multirun itself (hparams_search=optuna sets hydra.mode)
        multirun = _multirun(_compose(config_name, fixed))
        if not multirun:
            return [overrides]  # Hydra's "Ambiguous value ... add --multirun" comes from composing it
    values = {}
    for o in sweeps:
        try:
            values[o.get_key_element()] = list(o.sweep_string_iterator()) or [""]
        except Exception:  # interval() (a sweeper draws the values) or glob(): nothing to enumerate here
            continue
    first = [f"{key}={vals[0]}" for key, vals in values.items()]
    out = [fixed + first]
    for i, (key, vals) in enumerate(values.items()):
        for v in vals[1:]:
            out.append(fixed + first[:i] + [f"{key}={v}"] + first[i + 1 :])
    return out[:MAX_COMPOSITIONS]


def _group_overrides(cfg: DictConfig, overrides: list[str]) -> list[str]:
    """The overrides that choose config-group options (``model=gan``): composed alone they give the defaults that
    the value overrides replace. ``hydra.searchpath=[...]`` stays: it is where a user's own options live."""
    choices = set(cfg.hydra.runtime.choices)
    return [o.input_line for o in _parse(overrides) if _group_key(o) in choices or o.key_or_group == "hydra.searchpath"]


def _group_key(o) -> str:
    return o.key_or_group + (f"@{o.package}" if o.package else "")


# -- values of the wrong kind ------------------------------------------------------------------------------------
def check_override_types(cfg: DictConfig, defaults: DictConfig, overrides: list[str]) -> None:
    """Each ``key=value`` against the type the key is declared with: the type hint of the argument it becomes
    when its node has a ``_target_`` (``trainer.max_epochs`` -> ``Trainer(max_epochs: int | None)``), else the kind
    of its yaml default in ``defaults`` (the config composed with the same group choices): a number where the
    default is a number, ``true``/``false`` where it is a bool. ``+key=`` on a target that has no such argument
    names the closest one.

    Not checked: ``hydra.*`` (Hydra checks its own), null (means off / auto here), interpolations, and keys
    without a declared type (no hint, and a null or text default).
    """
    choices = set(cfg.hydra.runtime.choices)
    for o in _parse(overrides):
        if o.is_sweep_override() or o.is_delete() or o.is_hydra_override() or _group_key(o) in choices:
            continue
        key, given = o.key_or_group, o.value()
        if given is None or (isinstance(given, str) and "${" in given):
            continue
        text = o.input_line.partition("=")[2]
        parent_key, _, name = key.rpartition(".")
        found, hint, callee, names = _argument(cfg, parent_key, name)
        if found == "unknown" and not name.startswith("_"):
            close = difflib.get_close_matches(name, names, n=1)
            raise ConfigError(
                f"{key}: {callee} has no argument {name!r}",
                fix=f"did you mean {parent_key}.{close[0]}?" if close else f"{callee} takes: {', '.join(names)}",
            )
        if found == "argument" and hint is not None:
            if not _fits(given, hint):
                default = _default(defaults, key)
                example = f"e.g. {key}={_yaml(default)} (its default)" if default is not None else ""
                raise ConfigError(
                    f"{key}={text}: {callee}({name}=...) takes {_describe(hint)}, got {_kind(given)}",
                    fix=example or f"give {_describe(hint)}",
                )
            continue
        if o.is_add() or o.is_force_add():  # a new key: no default to compare with
            continue
        default = _default(defaults, key)
        if isinstance(default, bool):
            if not isinstance(given, bool):
                raise ConfigError(
                    f"{key}={text}: expected true or false (a bool; the default is {_yaml(default)}), "
                    f"got {_kind(given)}",
                    fix=f"{key}=true or {key}=false",
                )
        elif isinstance(default, (int, float)) and (isinstance(given, bool) or not isinstance(given, (int, float))):
            expected = "an integer" if isinstance(default, int) else "a number"
            raise ConfigError(
                f"{key}={text}: expected {expected} (the default is {default}), got {_kind(given)}",
                fix=f"give {expected}, e.g. {key}={default}",
            )


def _default(defaults: DictConfig, key: str) -> Any:
    try:
        return OmegaConf.select(defaults, key, throw_on_resolution_failure=False)
    except Exception:  # a default that only resolves inside a run (${hydra:...})
        return None


def _argument(cfg: DictConfig, parent_key: str, name: str) -> tuple[str, Any, str, list[str]]:
    """How the node at ``parent_key`` takes ``name``: ``("argument", hint, callee, names)`` when its ``_target_``
    has such a parameter, ``"kwargs"`` when it takes ``**kwargs``, ``"unknown"`` when neither, ``"none"`` when
    the node is not built from a ``_target_`` (or the target cannot be inspected)."""
    try:
        from hydra.utils import get_object

        node = OmegaConf.select(cfg, parent_key) if parent_key else cfg
        target = node.get("_target_") if isinstance(node, DictConfig) else None
        if not isinstance(target, str) or "${" in target:
            return "none", None, "", []
        obj = get_object(target)  # imports the module the run imports next anyway
        params = inspect.signature(obj).parameters
    except Exception:
        return "none", None, "", []
    callee = getattr(obj, "__name__", target.rsplit(".", 1)[-1])
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    names = [p for p in params if params[p].kind not in variadic]
    if name in params:
        try:
            hints = typing.get_type_hints(obj.__init__ if inspect.isclass(obj) else obj)
        except Exception:  # an annotation that names something only imported for type checkers
            hints = {}
        return "argument", hints.get(name), callee, names
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return "kwargs", None, callee, names
    return "unknown", None, callee, names


def _kind(value: Any) -> str:
    if isinstance(value, str):
        return f"the text {value!r}"
    if isinstance(value, bool):
        return f"the bool {str(value).lower()}"
    if isinstance(value, (list, ListConfig)):
        return "a list"
    if isinstance(value, (dict, DictConfig)):
        return "a dict"
    return f"the number {value!r}"


# -- Hydra's errors in the suite's words ---------------------------------------------------------------------------
# -- the Trainer section -------------------------------------------------------------------------------------------
def warn_cpu_oversubscription(cfg: DictConfig) -> None:
    """More CPU processes (``trainer.devices``) than cores still runs, only slower (they take turns): a one-line
    warning, printed by rank 0 only (the ranks DDP starts run this entry too)."""
    from lightning.pytorch.utilities import rank_zero_only

    node = cfg.get("trainer")
    if not isinstance(node, DictConfig) or rank_zero_only.rank != 0:
        return
    accelerator = str(node.get("accelerator", "auto"))
    if accelerator == "auto":
        import torch

        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    try:
        n = int(node.get("devices"))
    except (TypeError, ValueError):  # "auto", a list of ids: Lightning picks a fitting number itself
        return
    cores = os.cpu_count() or 1
    if accelerator == "cpu" and n > cores:
        print(
            f"[gensuite] warning: trainer.devices={n} CPU processes share {cores} cores (slower, not faster); "
            f"trainer.devices={cores} gives each its own",
            file=sys.stderr,
            flush=True,
        )


def _fits(value: Any, hint: Any) -> bool:
    """Whether a plain config value is allowed by a type hint (lenient: unknown constructs pass)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if isinstance(value, dict) and "_target_" in value:  # built by Hydra; Lightning checks the object
        return True
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is typing.Literal:
        return any(type(value) is type(a) and value == a for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin in (list, tuple) or hint in (list, tuple):
        return isinstance(value, (list, tuple)) and (not args or all(_fits(v, args[0]) for v in value))
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _describe(hint: Any) -> str:
    """``an integer or null``, ``true or false, 'warn' or null``: a type hint in the words of a config file."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if float in members:  # a number covers the integers
            members = [a for a in members if a is not int]
        literals = [v for a in members if typing.get_origin(a) is typing.Literal for v in typing.get_args(a)]
        parts = [_describe(a) for a in members if typing.get_origin(a) is not typing.Literal]
        parts += [", ".join(repr(v) for v in literals)] if literals else []
        parts += ["null"] if type(None) in args else []
        return ", ".join(parts[:-1]) + " or " + parts[-1] if len(parts) > 1 else parts[0]
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is not None:
        return getattr(origin, "__name__", str(hint))
    return {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a text"}.get(
        getattr(hint, "__name__", ""), getattr(hint, "__name__", str(hint))
    )


def _yaml(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
