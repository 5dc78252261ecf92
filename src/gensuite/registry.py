"""The families: one per ``conf/model/<family>.yaml``, read from those files and nothing else (no torch import).

Everything that goes over the families asks here: ``make smoke``, the comparison's ``families: all``, the
benchmarks and the tests' parametrisation. Adding ``conf/model/<new>.yaml`` adds the family everywhere.

What a family needs before it trains is read from its yaml too: a family whose model takes a value from a top-level
setting that is neither a config group nor a setting of ``conf/train.yaml`` (``autoencoder_ckpt:
${oc.select:autoencoder_ckpt,null}`` in ``latent_diffusion.yaml``) is built on something a run must be given,
another family's trained model; every other family trains from nothing. ``tests/test_config.py`` builds every
family and holds this reading to what the families do.

    python -m gensuite.registry          # vae,gan,...: the families that train from nothing, as make smoke takes them
    python -m gensuite.registry --all    # every family, with what each needs
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gensuite import config_dir
from gensuite.errors import ConfigError

#: a value that reads a top-level setting: ``${name}`` or ``${oc.select:name,<default>}``
TOP_LEVEL_READ = re.compile(r"\$\{(?:oc\.select:)?([A-Za-z_]\w*)\s*(?:,[^}]*)?\}")
#: what ``families:`` of conf/compare.yaml (or a command line) says for "every family that trains from nothing"
ALL = "all"


@dataclass(frozen=True)
class Family:
    """A family as its ``conf/model/<name>.yaml`` declares it.

    Attributes:
        name: what ``model=`` takes.
        target: the class the yaml builds (its ``_target_``).
        needs: top-level settings a run must give it (``("autoencoder_ckpt",)``); empty when it trains from nothing.
    """

    name: str
    target: str
    needs: tuple[str, ...] = ()

    @property
    def from_nothing(self) -> bool:
        """Whether ``python train.py model=<name>`` trains with no other setting given."""
        return not self.needs


def families(conf: Path | None = None) -> tuple[Family, ...]:
    """Every family of ``conf/model/`` (default: `gensuite.config_dir`), sorted by name."""
    from omegaconf import OmegaConf

    conf = Path(conf) if conf is not None else config_dir()
    train_keys = set(OmegaConf.load(conf / "train.yaml"))
    groups = {p.name for p in conf.iterdir() if p.is_dir()}
    out = []
    for path in sorted((conf / "model").glob("*.yaml")):
        node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        reads = {m for value in _strings(node) for m in TOP_LEVEL_READ.findall(value)}
        needs = tuple(sorted(reads - groups - train_keys))
        out.append(Family(path.stem, str(node.get("_target_", "")), needs))
    return tuple(out)


def names(conf: Path | None = None, *, from_nothing: bool = False) -> list[str]:
    """The families' names (sorted); ``from_nothing=True``: only those that train without another's model."""
    return [f.name for f in families(conf) if f.from_nothing or not from_nothing]


def chosen(value: str | Iterable[str], key: str = "families", conf: Path | None = None) -> list[str]:
    """A ``families`` setting as a list of names: ``all`` (every family that trains from nothing) or a list, each
    name checked against ``conf/model/``. Raises `ConfigError` naming ``key``."""
    known = names(conf)
    if isinstance(value, str):
        if value == ALL:
            return names(conf, from_nothing=True)
        value = [value]
    picked = [str(f) for f in value]
    if not picked:
        raise ConfigError(f"{key} is empty", keys=(key,), fix=f"{key}={ALL} or e.g. {key}=[vae,gan]")
    unknown = [f for f in picked if f not in known]
    if unknown:
        raise ConfigError(
            f"{key}: no such family: {', '.join(unknown)} (the families: {', '.join(known)})",
            keys=(key,),
            fix=f"{key}={ALL}, or a list of the families above, e.g. {key}=[{','.join(known[:2])}]",
        )
    return picked


def _strings(node) -> Iterable[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if "--all" in args:
        for f in families():
            print(f"{f.name}\t{'needs ' + ', '.join(f.needs) if f.needs else 'trains from nothing'}")
    else:
        print(",".join(names(from_nothing=True)))


if __name__ == "__main__":
    main()
