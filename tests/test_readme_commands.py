"""The README's commands are tests: every ``python train.py | sample.py | eval.py | compare.py ...`` line of its code
blocks composes as the real entry point composes it (the same checks: unknown keys, value types, every value of a
``-m`` sweep), a training line's model can be built, and a ``sampling.<knob>=`` line names a knob the family has."""

from __future__ import annotations

import re
import shlex

import pytest
from hydra.core.global_hydra import GlobalHydra

from gensuite.cli.command_line import check_command_line
from gensuite.cli.config import instantiate_checked
from gensuite.cli.sweep import quote_sweep
from gensuite.families.autoregressive import Autoregressive
from gensuite.families.diffusion import Diffusion
from gensuite.families.gan import GAN
from gensuite.families.vae import VAE

from .conftest import CONF, ROOT, compose_cfg

ENTRIES = {"train.py": "train", "sample.py": "sample", "eval.py": "eval", "compare.py": "compare"}
# a placeholder checkpoint names its family: <transformer last.ckpt>, <gan last.ckpt>, ...
FAMILY_OF_PLACEHOLDER = {"transformer": Autoregressive, "gan": GAN, "vae": VAE, "diffusion": Diffusion}
DUMMY = "/nonexistent/last.ckpt"
USER_CONF = ROOT / "tests" / "user_family" / "conf"


def readme_commands(text: str) -> list[tuple[int, str, str]]:
    """``(line number, entry script, command)`` for each entry-point line inside a fenced code block."""
    out, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        m = re.match(r"\s*python (train|sample|eval|compare)\.py\b(.*)", line) if fenced else None
        if m:
            out.append((number, f"{m.group(1)}.py", m.group(2)))
    return out


def to_argv(rest: str) -> tuple[list[str], str]:
    """The arguments of a README line as the shell would pass them, with placeholders made concrete.

    ``# comment`` ends the line; ``[opt=value]`` (an optional argument) is kept; ``<...>``, ``...`` and
    ``$(...)`` values become a dummy checkpoint path. Returns ``(argv, the placeholder's text)``."""
    rest = re.sub(r"\s#.*$", "", " " + rest).strip()
    rest = rest.replace("/path/to/my_conf", str(USER_CONF))  # "Add a family": the example that tests/ holds
    placeholder = " ".join(re.findall(r"<([^>]*)>", rest))
    rest = re.sub(r"\$\([^)]*\)", DUMMY, rest)
    rest = re.sub(r"<[^>]*>", DUMMY, rest)
    argv = []
    for tok in shlex.split(rest):
        if tok.startswith("[") and tok.endswith("]") and "=" in tok and not tok.startswith("[="):
            tok = tok[1:-1]  # "[metrics.n_samples=5000]": an optional argument, shown in brackets
        key, eq, value = tok.partition("=")
        if eq and (value.startswith(("...", "/path/to")) or "..." in value):
            tok = f"{key}={DUMMY}"
        argv.append(tok)
    return argv, placeholder


COMMANDS = readme_commands((ROOT / "README.md").read_text())


def test_the_readme_has_commands_of_every_entry():
    assert {"train.py", "sample.py", "eval.py"} <= {script for _, script, _ in COMMANDS}
    assert len(COMMANDS) >= 30


@pytest.mark.parametrize(("number", "script", "rest"), COMMANDS, ids=[f"L{n}" for n, _, _ in COMMANDS])
def test_readme_command_composes(number, script, rest, cache_dir, monkeypatch):
    monkeypatch.syspath_prepend(str(USER_CONF.parent))  # the "Add a family" example's package
    argv, placeholder = to_argv(rest)
    if script == "eval.py":
        argv = quote_sweep(argv)  # as the eval entry does before Hydra reads the command line
    GlobalHydra.instance().clear()
    check_command_line(CONF, ENTRIES[script], argv)  # raises the ConfigError the user would see (exit 2)
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    if script == "train.py" and "-m" not in argv and "--help" not in argv and "--cfg" not in argv:
        # the model is built (parts fit, family options valid); the data may need a download, so not the data
        cfg = compose_cfg([*overrides, f"paths.cache_dir={cache_dir}"])
        stage_two = cfg.get("autoencoder_ckpt") or "model.tokenizer.path" in rest  # loads a real stage 1
        if not stage_two:
            instantiate_checked(cfg, "model")
    swept = [a.split("=", 1)[1].strip("'") for a in overrides if a.startswith("sweep=")]
    knobs = [a.split("=")[0].split(".", 1)[1] for a in overrides + swept if a.startswith("sampling.")]
    if knobs:
        family = next((cls for name, cls in FAMILY_OF_PLACEHOLDER.items() if name in placeholder), None)
        assert family is not None, f"README line {number}: name the family in the checkpoint placeholder"
        missing = [k for k in knobs if k not in family.Options.knobs()]
        assert not missing, f"README line {number}: a {family.family} model has no knob {missing}"


def test_the_test_catches_what_it_should(cache_dir):
    """The false claims the README once made fail here: a model.* override of sample.py, a knob the family lacks."""
    from gensuite.errors import ConfigError

    GlobalHydra.instance().clear()
    with pytest.raises(ConfigError):
        check_command_line(CONF, "sample", to_argv("ckpt_path=<transformer last.ckpt> model.temperature=0.8")[0])
    with pytest.raises(ConfigError):  # denoiser=mlp on pixels: refused when the model is built
        instantiate_checked(compose_cfg(["model=diffusion", "model/denoiser=mlp", f"paths.cache_dir={cache_dir}"]),
                            "model")  # fmt: skip
    assert "truncation" not in VAE.Options.knobs()
    assert to_argv("ckpt_path=...  [metrics.n_samples=5000] # note")[0] == [
        f"ckpt_path={DUMMY}",
        "metrics.n_samples=5000",
    ]
