"""Loading is data only: crafted checkpoints, one per attack class, through every loading entry point.

Each crafted file would write a marker file if its config were built (the attacks all worked against the old
name-prefix check). The test asserts that each is refused with a `CheckpointError`, that no marker appears and
that no file in the folder changes.
"""

from __future__ import annotations

import hashlib
import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from gensuite.errors import CheckpointError, GensuiteError
from gensuite.runs.trust import allowlist, check_stored_config, resolve_target, suite_target_names

from .conftest import TINY, compose_cfg, run_entry


class _Payload:
    """Unpickling this runs ``os.system(touch <marker>)``: the payload bytes carried inside a crafted config."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def attacks(marker: Path) -> dict[str, dict]:
    """attack class -> the stored config's sections (the model section is what loading builds)."""
    buffer = io.BytesIO()
    torch.save(_Payload(marker), buffer)
    payload = buffer.getvalue()
    return {
        # a name that starts with a trusted prefix, resolved by Hydra by walking attributes to torch.save (Hydra's
        # own blocklist stops os.system, but not the many functions that write a file they are given)
        "attribute walk": {"model": {"_target_": "gensuite.runs.checkpoint.torch.save", "_args_": [{}, str(marker)]}},
        # the payload bytes travel in the config; a reachable unpickler runs them
        "payload bytes": {
            "model": {
                "_target_": "gensuite.runs.checkpoint.torch.load",
                "f": {"_target_": "torch.nn.modules.module.torch.serialization.io.BytesIO", "_args_": [payload]},
                "weights_only": False,
            }
        },
        # an interpolation pulls a section that nobody checked into the one that is built
        "interpolation": {
            "model": {"_target_": "gensuite.nets.encoders.MLPEncoder", "in_channels": "${trainer.evil}"},
            "trainer": {"evil": {"_target_": "torch.save", "_args_": [{}, str(marker)]}},
        },
        # a function inside the trusted package that does harm on its own (creates any folder it is given)
        "harmful in-package function": {
            "model": {"_target_": "gensuite.cli.hydra_hooks.OutputDirCheck._check_folder", "folder": str(marker)}
        },
    }


def craft(path: Path, sections: dict, family: str) -> Path:
    torch.save({"state_dict": {}, "gensuite": {"config": sections, "family": family, "format": 1}}, path)
    return path


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def entry_calls(ckpt: Path, cache_dir: Path, out: Path) -> dict[str, callable]:
    """entry point -> a call of its logic (in process) that loads ``ckpt``."""
    from gensuite.eval import evaluate
    from gensuite.sample import sample
    from gensuite.train import train

    def sample_call():
        sample(compose_cfg([f"ckpt_path={ckpt}", f"out={out}/s.png"], config_name="sample"))

    def eval_call():
        evaluate(compose_cfg([f"ckpt_path={ckpt}", f"out={out}/e.json"], config_name="eval"))

    def latent_call():
        train(
            compose_cfg(
                [*TINY, "model=latent_diffusion", f"autoencoder_ckpt={ckpt}", f"paths.cache_dir={cache_dir}"],
                out / "run-ld",
            )
        )

    def tokenizer_call():
        train(
            compose_cfg(
                [
                    *TINY,
                    "model=transformer",
                    "model/tokenizer=vq",
                    f"model.tokenizer.path={ckpt}",
                    f"paths.cache_dir={cache_dir}",
                ],
                out / "run-tok",
            )
        )

    return {
        "sample.py": sample_call,
        "eval.py": eval_call,
        "latent_diffusion autoencoder_ckpt": latent_call,
        "tokenizer path": tokenizer_call,
    }


FAMILY = {"sample.py": "vae", "eval.py": "vae", "latent_diffusion autoencoder_ckpt": "vae", "tokenizer path": "vqvae"}


@pytest.mark.parametrize("attack", list(attacks(Path("m"))))
def test_a_crafted_checkpoint_runs_no_code_through_any_entry(attack, tmp_path, cache_dir):
    marker = tmp_path / "MARKER"
    files = tmp_path / "files"
    files.mkdir()
    (files / "keep.txt").write_text("untouched")
    for entry in FAMILY:
        ckpt = craft(files / f"crafted-{FAMILY[entry]}.ckpt", attacks(marker)[attack], FAMILY[entry])
        before = snapshot(files)
        call = entry_calls(ckpt, cache_dir, files)[entry]
        with pytest.raises(GensuiteError) as info:
            call()
        assert not marker.exists(), f"{attack} through {entry} ran code"
        err = info.value
        assert isinstance(err, CheckpointError) or isinstance(err.__cause__, CheckpointError), (entry, err)
        assert snapshot(files) == before, f"{attack} through {entry} changed files"
        ckpt.unlink()


def test_the_refusal_is_one_screen_and_exit_2_at_every_entry(tmp_path, cache_dir):
    marker = tmp_path / "MARKER"
    vae = craft(tmp_path / "vae.ckpt", attacks(marker)["attribute walk"], "vae")
    vq = craft(tmp_path / "vq.ckpt", attacks(marker)["attribute walk"], "vqvae")
    logs = f"paths.log_dir={tmp_path / 'logs'}"
    runs = [
        ("sample.py", [f"ckpt_path={vae}"]),
        ("eval.py", [f"ckpt_path={vae}"]),
        ("train.py", ["model=latent_diffusion", f"autoencoder_ckpt={vae}", logs]),
        ("train.py", ["model=transformer", "model/tokenizer=vq", f"model.tokenizer.path={vq}", logs]),
    ]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda r: run_entry(r[0], *r[1], cwd=tmp_path), runs))
    for (script, _), res in zip(runs, results, strict=True):
        assert res.returncode == 2, (script, res.stderr[-1500:])
        assert "Traceback" not in res.stderr and "gensuite.runs.checkpoint.torch.save" in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) <= 20
    assert not marker.exists()


def test_the_allowlist_is_exact():
    names = suite_target_names()
    assert "gensuite.families.vae.VAE" in names and "gensuite.diffusion.samplers.DDIM" in names
    assert not any(n.startswith("lightning.") for n in names)  # trainer / callbacks are never rebuilt
    assert resolve_target("torch.optim.Adam", "model.optimizer") is torch.optim.Adam
    assert resolve_target("gensuite.families.vae.VAE", "model") is allowlist()["gensuite.families.vae.VAE"]
    for bad in (
        "gensuite.families.vae.torch.load",
        "torch.nn.modules.module.torch.load",
        "os.system",
        "gensuite.record.write_record",
        "torch.optim.Adam.__init__.__globals__",
        "builtins.eval",
        3,
    ):
        with pytest.raises(CheckpointError):
            resolve_target(bad, "model")


def test_a_declared_module_is_trusted_for_its_own_definitions_only(monkeypatch):
    monkeypatch.setenv("GENSUITE_TRUSTED_MODULES", "json")
    import json

    assert resolve_target("json.JSONDecoder", "model") is json.JSONDecoder
    with pytest.raises(CheckpointError):  # json imports re; re.compile is not json's own
        resolve_target("json.decoder.re.compile", "model")
    monkeypatch.setenv("GENSUITE_TRUSTED_MODULES", "json; rm -rf")
    with pytest.raises(CheckpointError, match="not a module name"):
        resolve_target("json.JSONDecoder", "model")


def test_stored_config_checks():
    check_stored_config({"model": {"_target_": "gensuite.families.vae.VAE"}, "trainer": {"x": 1}}, ("model",))
    with pytest.raises(CheckpointError, match="interpolation"):
        check_stored_config({"model": {}, "data": {"p": "${oc.env:HOME}"}}, ("model",))
    with pytest.raises(CheckpointError):
        check_stored_config({"model": {"net": [{"_target_": "posix.system"}]}}, ("model",))
    with pytest.raises(CheckpointError, match="not a mapping"):
        check_stored_config(["model"], ("model",))
