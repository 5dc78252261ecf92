"""Hydra's errors about a command line, reprinted as a `ConfigError` (exit 2) in the suite's format: what was
wrong, Hydra's own words, and the closest valid key or option (``modle=vae`` -> ``model``)."""

from __future__ import annotations

import difflib

from omegaconf import DictConfig, OmegaConf

from gensuite.errors import ConfigError

GRAMMAR = "https://hydra.cc/docs/advanced/override_grammar/basic/"


def explain_hydra_error(exc: Exception, config_name: str, overrides: list[str]) -> Exception:
    """A `ConfigError` for an error Hydra raises while parsing or composing the command line; other exceptions
    (bugs) are returned unchanged, to be raised with their traceback."""
    from hydra.errors import HydraException, MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    script = f"{config_name or 'train'}.py"
    hydra_says = _lines(str(exc))
    if isinstance(exc, OverrideParseException):
        key, _, value = exc.override.partition("=")
        fix = f"values with spaces or any of = , : [ ] ( ) {{ }} go in quotes: {key}='...' (see {GRAMMAR})"
        if value.startswith("[") and "=" in value:  # a list of overrides (compare.py overrides=[...])
            items = ",".join(f'"{item.strip()}"' for item in value.strip("[]").split(","))
            fix = f"quote each item that contains '=', and the argument for the shell: '{key}=[{items}]'"
        return ConfigError(f"cannot read the override {exc.override!r}: {hydra_says[0]}", fix=fix)
    if isinstance(exc, MissingConfigException) and exc.options is not None and exc.missing_cfg_file:
        group, _, name = exc.missing_cfg_file.rpartition("/")
        options = sorted(exc.options)
        close = difflib.get_close_matches(name, options, n=1)
        return ConfigError(
            f"{group}={name}: no such option ({hydra_says[0]}).\n  Available options in '{group}': "
            + ", ".join(options),
            fix=f"did you mean {group}={close[0]}?" if close else f"choose one, e.g. {group}={options[0]}",
        )
    cause = exc.__cause__
    full_key = getattr(cause, "full_key", None)
    if isinstance(exc, HydraException) and isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and full_key:
        keys = {o: o.lstrip("~+").partition("=")[0] for o in overrides}
        bad = next((o for o, k in keys.items() if k == full_key or k.startswith(full_key + ".")), full_key)
        key = keys.get(bad, full_key)
        close = closest_key(config_name, [o for o in overrides if o != bad], full_key)
        return ConfigError(
            f"{bad}: no such setting ({_lines(str(cause))[0]})",
            fix=(f"did you mean {close}? " if close else "")
            + f"(python {script} --cfg job lists the settings; +{key}=... adds a new one)",
        )
    if isinstance(exc, (HydraException, OmegaConfBaseException)):
        detail = hydra_says[:6] + (_lines(str(cause))[:1] if isinstance(cause, OmegaConfBaseException) else [])
        return ConfigError(
            "the command line does not compose: " + "\n  ".join(detail),
            fix=f"python {script} --help lists the config groups, python {script} --cfg job the settings",
        )
    return exc


def _lines(text: str) -> list[str]:
    """Hydra's message without blank lines and the 'Config search path' listing (not the user's concern)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if "Config search path:" in lines:
        lines = lines[: lines.index("Config search path:")]
    return lines or [text]


def closest_key(config_name: str, overrides: list[str], full_key: str) -> str | None:
    """The valid key nearest to ``full_key``: among the keys of its parent node, else among every key (a setting
    given at the wrong level); group names count at the top level (``modle=vae`` -> ``model``). ``overrides`` are
    the command line without the bad one."""
    from hydra import compose

    try:  # the group choices alone compose (Hydra fails on values only after applying the groups)
        cfg = compose(config_name=config_name, overrides=_groups_only(overrides), return_hydra_config=True)
    except Exception:
        return None
    parent_key, _, leaf = full_key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    if isinstance(parent, DictConfig):
        names = [k for k in parent if parent_key or k != "hydra"]
        if not parent_key:
            names += [g for g in cfg.hydra.runtime.choices if not g.startswith("hydra/") and "@" not in g]
        close = difflib.get_close_matches(leaf, names, n=1)
        if close:
            return f"{parent_key}.{close[0]}" if parent_key else close[0]
    every = [k for k in _all_keys(OmegaConf.to_container(cfg, resolve=False)) if not k.startswith("hydra.")]
    close = difflib.get_close_matches(full_key, every, n=1)
    return close[0] if close else None


def _groups_only(overrides: list[str]) -> list[str]:
    """Overrides that look like group choices (``model=gan``, ``model/encoder=mlp``): no dot in the key; and
    ``hydra.searchpath``, where a user's own options live."""
    keys = [o.lstrip("~+").partition("=")[0] for o in overrides]
    return [o for o, key in zip(overrides, keys, strict=True) if "." not in key or key == "hydra.searchpath"]


def _all_keys(node: dict, prefix: str = "") -> list[str]:
    out = []
    for k, child in node.items():
        out.append(f"{prefix}{k}")
        if isinstance(child, dict):
            out += _all_keys(child, f"{prefix}{k}.")
    return out
