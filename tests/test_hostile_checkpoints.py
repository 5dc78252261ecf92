"""Hostile checkpoints through the real entry points: resuming, loading and building never touch anything outside
the run, never cost more than a small file should, and every malformed file exits 2 in one screen.

Every crafted file and every victim lives in ``tmp_path``. Each test asserts the victims' bytes after the attack.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
import torch

from gensuite.callbacks.checkpoint import inside

from .conftest import TINY, run_entry

SMALL = ["model=vae", "model.encoder.width=8", "model.decoder.width=8", "callbacks.evaluation.grid_size=4"]
SMALL += ["metrics.features=none"]  # no feature network to train: these tests are about files, not quality


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def victims(root: Path) -> Path:
    """A folder of files nobody may touch: what a recursive delete or an overwrite would hit."""
    folder = root / "victim"
    (folder / "deep").mkdir(parents=True)
    (folder / "keep.txt").write_text("untouched")
    (folder / "deep" / "keep.ckpt").write_text("untouched too")
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir) -> Path:
    """A tiny VAE run's last.ckpt (trained once for this module through the real train.py)."""
    root = tmp_path_factory.mktemp("trained")
    res = run_entry(
        "train.py", *TINY, *SMALL, f"paths.cache_dir={cache_dir}", f"hydra.run.dir={root / 'run'}", cwd=root
    )
    assert res.returncode == 0, res.stderr[-2000:]
    return root / "run" / "checkpoints" / "last.ckpt"


def resume(ckpt: Path, run_dir: Path, cache_dir: Path, *extra: str):
    return run_entry(
        "train.py",
        *TINY,
        *SMALL,
        "trainer.max_epochs=2",
        f"paths.cache_dir={cache_dir}",
        f"hydra.run.dir={run_dir}",
        f"ckpt_path={ckpt}",
        *extra,
        cwd=run_dir.parent,
    )


def _checkpoint_states(ckpt: dict) -> list[dict]:
    return [s for k, s in ckpt["callbacks"].items() if k.startswith("ModelCheckpoint")]


# -- 1. a resumed run writes and deletes only inside its own folder ------------------------------------------------
def test_planted_callback_paths_delete_nothing_whatever_their_spelling(trained, tmp_path, cache_dir):
    victim = victims(tmp_path)
    run_dir = tmp_path / "run2"
    linked = tmp_path / "link-to-victim"
    linked.symlink_to(victim)
    ckpt = torch.load(trained, weights_only=True)
    spellings = [
        f"local://{victim}",  # fsspec's alias of the local filesystem: not the "file" protocol Lightning guards
        f"file://{victim}",
        f"{run_dir}/checkpoints/../../victim",  # starts with the new run's checkpoint folder
        str(victim / "deep"),
        str(linked / "deep"),  # a symlinked parent
    ]
    for state in _checkpoint_states(ckpt):
        state.pop("dirpath")  # Lightning then takes every stored path for one of its own
        state["last_model_path"] = spellings[0]
        state["kth_best_model_path"] = spellings[1]
        state["best_model_path"] = spellings[2]
        state["best_k_models"] = {s: torch.tensor(-1e9) for s in spellings}
    crafted = tmp_path / "crafted.ckpt"
    torch.save(ckpt, crafted)
    before = snapshot(victim)
    res = resume(crafted, run_dir, cache_dir)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert res.stderr.strip().startswith("CheckpointError") and "Lightning never writes there" in res.stderr
    assert len(res.stderr.strip().splitlines()) <= 6
    assert victim.is_dir() and snapshot(victim) == before
    assert not (run_dir / "checkpoints").exists()  # refused before training


@pytest.mark.parametrize("field", ["last_model_path", "kth_best_model_path", "best_model_path", "best_k_models"])
def test_each_path_field_is_checked_and_confined(trained, tmp_path, field):
    """Second layer: a state that passes the check (another run's folder, as Lightning wrote it) still has every
    path rebuilt from the new run's folder before a callback reads it."""
    from gensuite.callbacks.checkpoint import RunCheckpoint, confine_states, foreign_paths

    ckpt = torch.load(trained, weights_only=True)
    assert foreign_paths(ckpt) == []  # what Lightning wrote passes
    state = _checkpoint_states(ckpt)[0]
    bad = f"local://{tmp_path}"
    if field == "best_k_models":
        state[field] = {bad: torch.tensor(0.0)}
    else:
        state[field] = bad
    assert foreign_paths(ckpt) and bad in foreign_paths(ckpt)[0]
    # a consistent state of another folder: nothing of it survives into this run's callback
    other = torch.load(trained, weights_only=True)
    own = RunCheckpoint(dirpath=str(tmp_path / "mine"), monitor="val/loss", save_last=True)
    key = next(k for k in other["callbacks"] if k.startswith("ModelCheckpoint"))
    other["callbacks"] = {own.state_key: other["callbacks"][key]}
    confine_states(other, [own], str(tmp_path))
    kept = other["callbacks"][own.state_key]
    assert kept["best_model_path"] == "" and kept["best_k_models"] == {}


def test_auto_resume_from_a_planted_newer_run_deletes_nothing(trained, tmp_path, cache_dir):
    victim = victims(tmp_path)
    logs = tmp_path / "logs"
    planted = logs / "runs" / "vae-mnist5k" / "2999-01-01_00-00-00-000" / "checkpoints" / "last.ckpt"
    planted.parent.mkdir(parents=True)
    ckpt = torch.load(trained, weights_only=True)
    for state in _checkpoint_states(ckpt):
        state.pop("dirpath")
        state["last_model_path"] = f"local://{victim}"
    torch.save(ckpt, planted)
    before = snapshot(victim)
    res = run_entry(
        "train.py",
        *TINY,
        *SMALL,
        "trainer.max_epochs=2",
        f"paths.cache_dir={cache_dir}",
        f"paths.log_dir={logs}",
        "auto_resume=true",
        cwd=tmp_path,
    )
    assert res.returncode == 2 and "Lightning never writes there" in res.stderr, res.stderr[-2000:]
    assert snapshot(victim) == before


def test_inside_accepts_only_a_file_directly_in_the_folder(tmp_path):
    folder = tmp_path / "ck"
    folder.mkdir()
    (folder / "sub").mkdir()
    (tmp_path / "ln").symlink_to(folder)
    (folder / "link.ckpt").symlink_to(tmp_path)
    assert inside(str(folder / "a.ckpt"), str(folder)) == str(folder / "a.ckpt")
    for bad in (
        f"local://{folder}/a.ckpt",
        f"file://{folder}/a.ckpt",
        f"{folder}/../ck/a.ckpt",
        f"{folder}/./a.ckpt",
        str(folder / "sub"),  # a folder: a recursive delete
        str(folder / "link.ckpt"),  # a link
        str(tmp_path / "a.ckpt"),
        "",
        None,
        3,
    ):
        assert inside(bad, str(folder)) is None, bad
    # the same folder reached through a link is the same folder, but the path is rebuilt from ours
    assert inside(str(tmp_path / "ln" / "a.ckpt"), str(folder)) == str(folder / "a.ckpt")


# -- 6. last.ckpt is the end of training ------------------------------------------------------------------------
def test_last_ckpt_holds_the_final_step_when_the_interval_does_not_divide_it(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    res = run_entry(
        "train.py",
        *TINY,
        *SMALL,
        "trainer.limit_train_batches=7",
        "callbacks.model_checkpoint.every_n_train_steps=5",  # alone: the epoch interval turns itself off
        "callbacks.model_checkpoint.monitor=null",
        f"paths.cache_dir={cache_dir}",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert metrics["train/global_step"] == 7 == last["global_step"]
    composed = (run_dir / ".hydra" / "config.yaml").read_text()
    assert "gs_epochs_unless_steps" in composed  # the composed config says the epoch interval follows the steps
    assert last["gensuite"]["config"]["callbacks"]["model_checkpoint"]["every_n_epochs"] is None


def test_both_intervals_at_once_is_one_clear_error(tmp_path, cache_dir):
    res = run_entry(
        "train.py",
        *TINY,
        *SMALL,
        "callbacks.model_checkpoint.every_n_train_steps=5",
        "callbacks.model_checkpoint.every_n_epochs=2",
        f"paths.cache_dir={cache_dir}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert "every_n_train_steps=5 and every_n_epochs=2" in res.stderr


# -- 3 and 5. bounded cost, and every malformed checkpoint exits 2 in one screen ----------------------------------
def _deep(depth: int) -> dict:
    node: dict = {"leaf": 1}
    for _ in range(depth):
        node = {"n": node}
    return node


def _rezip(src: Path, dst: Path, compression: int, extra: dict[str, bytes] | None = None) -> Path:
    """``src``'s records written again with ``compression`` (torch reads DEFLATE records as well as stored ones)."""
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(dst, "w", compression) as b:
        for info in a.infolist():
            b.writestr(info.filename, a.read(info.filename) if not extra or info.filename not in extra else b"")
    return dst


def _latent_config(trained: Path, target: Path) -> dict:
    """A resolved latent_diffusion model section whose autoencoder is ``target``."""
    from gensuite.cli.config import to_plain

    from .conftest import compose_cfg

    cfg = compose_cfg(["model=latent_diffusion", f"autoencoder_ckpt={target}", "sampler.steps=2"])
    return to_plain(cfg)["model"]


def crafted_cases(trained: Path, folder: Path) -> dict[str, tuple[Path, str]]:
    """case -> (crafted file, words its error must hold)."""
    ckpt = torch.load(trained, weights_only=True)
    cases: dict[str, tuple[dict | Path, str]] = {}

    def variant(name: str, words: str, change) -> None:
        c = torch.load(trained, weights_only=True)
        change(c)
        cases[name] = (c, words)

    variant("config 5,000 deep", "nested deeper than", lambda c: c["gensuite"]["config"].update(deep=_deep(5000)))
    variant("gensuite a string", "not a mapping", lambda c: c.update(gensuite="vae"))
    variant("state_dict a list", "not a mapping of names to tensors", lambda c: c.update(state_dict=[1, 2]))
    variant("paths a string", "'paths' is a str", lambda c: c["gensuite"]["config"].update(paths="/"))
    variant("family a number", "family is a int", lambda c: c["gensuite"].update(family=3))
    variant("callbacks a list", "'callbacks' is a list", lambda c: c.update(callbacks=[1]))
    variant(
        "a 20,000 x 20,000 layer",
        "cannot be built",
        lambda c: c["gensuite"]["config"]["model"].update(
            encoder={"_target_": "torch.nn.Linear", "in_features": 20000, "out_features": 20000}
        ),
    )
    variant("says vae, builds gan", "builds a 'vae' one", lambda c: c["gensuite"].update(family="gan"))
    paths = {name: folder / f"{i}.ckpt" for i, name in enumerate(cases)}
    for name, (c, _) in cases.items():
        torch.save(c, paths[name])
    out = {name: (paths[name], words) for name, (_, words) in cases.items()}
    # a checkpoint that names itself as its own autoencoder, under the family the setting asks for
    own = folder / "self.ckpt"
    c = dict(ckpt, gensuite={**ckpt["gensuite"], "config": {**ckpt["gensuite"]["config"]}})
    c["gensuite"]["config"]["model"] = _latent_config(trained, own)
    torch.save(c, own)
    out["names itself as its autoencoder"] = (own, "leads back to itself")
    # DEFLATE: a small file that inflates a thousandfold
    bomb = torch.load(trained, weights_only=True)
    bomb["state_dict"]["zeros"] = torch.zeros(50 * 2**20, dtype=torch.uint8)
    torch.save(bomb, folder / "bomb-stored.ckpt")
    out["deflated records (a bomb)"] = (
        _rezip(folder / "bomb-stored.ckpt", folder / "bomb.ckpt", zipfile.ZIP_DEFLATED),
        "compressed records",
    )
    (folder / "bomb-stored.ckpt").unlink()
    (folder / "garbage.ckpt").write_bytes(b"\x80\x02not a zip at all" * 10)
    out["not a zip"] = (folder / "garbage.ckpt", "cannot be read as a checkpoint archive")
    return out


CASES = [
    "config 5,000 deep",
    "gensuite a string",
    "state_dict a list",
    "paths a string",
    "family a number",
    "callbacks a list",
    "a 20,000 x 20,000 layer",
    "says vae, builds gan",
    "names itself as its autoencoder",
    "deflated records (a bomb)",
    "not a zip",
]


@pytest.fixture(scope="module")
def crafted(trained, tmp_path_factory) -> tuple[Path, dict[str, tuple[Path, str]]]:
    import sys

    folder = tmp_path_factory.mktemp("crafted")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20000)  # pickling the 5,000-deep config
    try:
        return folder, crafted_cases(trained, folder)
    finally:
        sys.setrecursionlimit(limit)


@pytest.mark.parametrize("case", CASES)
def test_a_malformed_checkpoint_exits_2_in_one_screen(case, crafted, tmp_path):
    folder, cases = crafted
    path, words = cases[case]
    before = snapshot(folder)
    res = run_entry("sample.py", f"ckpt_path={path}", "n=4", f"out={tmp_path / 's.png'}", cwd=tmp_path)
    assert res.returncode == 2, (case, res.stderr[-3000:])
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) <= 12, res.stderr[-3000:]
    assert res.stderr.strip().startswith("CheckpointError") and words in res.stderr, res.stderr[-3000:]
    assert snapshot(folder) == before and not (tmp_path / "s.png").exists()


def test_resuming_a_malformed_checkpoint_exits_2_before_training(crafted, tmp_path, cache_dir):
    _, cases = crafted
    res = resume(cases["paths a string"][0], tmp_path / "run", cache_dir)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-3000:]
    assert "'paths' is a str" in res.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_the_size_limit_is_settable(trained, tmp_path):
    res = run_entry(
        "sample.py", f"ckpt_path={trained}", "n=4", f"out={tmp_path / 's.png'}", cwd=tmp_path,
        env={"GENSUITE_MAX_CHECKPOINT_BYTES": "1000"},
    )  # fmt: skip
    assert res.returncode == 2 and "over the limit of 1,000" in res.stderr, res.stderr[-2000:]
    assert "GENSUITE_MAX_CHECKPOINT_BYTES" in res.stderr


def test_a_stored_data_path_is_not_followed(trained, tmp_path, cache_dir):
    images = tmp_path / "somebody-elses-images"
    images.mkdir()
    ckpt = torch.load(trained, weights_only=True)
    ckpt["gensuite"]["config"]["data"].update(
        {"_target_": "gensuite.data.image_folder.ImageFolder", "path": str(images), "image_size": 1024}
    )
    crafted = tmp_path / "crafted.ckpt"
    torch.save(ckpt, crafted)
    before = snapshot(cache_dir)
    res = run_entry("eval.py", f"ckpt_path={crafted}", f"out={tmp_path / 'e.json'}", cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert f"data_path={images}" in res.stderr and "not followed" in res.stderr
    assert snapshot(cache_dir) == before


def test_the_suite_itself_cannot_be_declared_trusted(trained, tmp_path):
    res = run_entry(
        "sample.py", f"ckpt_path={trained}", "n=4", f"out={tmp_path / 's.png'}", cwd=tmp_path,
        env={"GENSUITE_TRUSTED_MODULES": "gensuite"},
    )  # fmt: skip
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert "the suite's own package" in res.stderr


def test_an_intact_checkpoint_still_samples(trained, tmp_path):
    res = run_entry("sample.py", f"ckpt_path={trained}", "n=4", f"out={tmp_path / 's.png'}", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "s.png").is_file()
