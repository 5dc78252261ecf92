"""The contracts between the parts (gensuite.contracts, gensuite.families.base.check_protocol): every family keeps
the protocol (new families are picked up from conf/model/ by themselves), data modules declare a `DataInfo`,
training noise differs between DDP ranks while the RNG streams stay in step, one data-range mapping, frozen
models loaded in one place."""

from __future__ import annotations

import ast
import copy
import dataclasses
import inspect
import os
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from gensuite import registry
from gensuite.contracts import DataInfo, rank_slice, to_signed, to_unit
from gensuite.errors import CheckpointError, ConfigError
from gensuite.families.base import FamilyProtocolError, GenerativeModule, check_protocol
from gensuite.runs.checkpoint import _renamed_targets, build_model, load_frozen

from .conftest import CONF, compose_cfg

#: families whose model is built on another trained model (a checkpoint): their own tests build them
NEEDS_A_CHECKPOINT = {f.name for f in registry.families() if not f.from_nothing}
#: small parts, so that building every family takes a second (the defaults are MNIST-sized already)
SMALL = ["data=digits", "trainer.precision=32-true"]


def families() -> list[str]:
    return registry.names()


def _build(family: str, tmp_path: Path) -> GenerativeModule:
    return build_model(compose_cfg([f"model={family}", *SMALL], tmp_path / family))


@pytest.mark.parametrize("family", families())
def test_every_family_keeps_the_protocol(family, tmp_path):
    if family in NEEDS_A_CHECKPOINT:
        with pytest.raises(ConfigError, match="autoencoder_ckpt"):  # refused by name, before any work
            _build(family, tmp_path)
        return
    model = _build(family, tmp_path)  # build_model checks the protocol
    check_protocol(model)
    assert model.family == family or family in ("vqvae",) and model.family == "vqvae"
    images = model.eval().sample(3, generator=torch.Generator().manual_seed(0))
    assert images.shape == (3, 1, 8, 8) and images.min() >= 0 and images.max() <= 1
    assert isinstance(model.default_options, model.Options) and dataclasses.is_dataclass(model.Options)


def test_every_family_samples_with_one_signature():
    """``sample(n, generator=None, labels=None, options=None)`` in every family of the suite (no keyword of its own,
    no ``y=``): the draw loop, sample.py and the evaluation call them all alike."""
    from gensuite.families.catalog import builtin_families

    for cls in builtin_families():
        params = inspect.signature(cls.sample).parameters
        assert list(params) == ["self", "n", "generator", "labels", "options"], cls.__name__
        assert [params[k].default for k in ("generator", "labels", "options")] == [None, None, None], cls.__name__


class _NoSample(GenerativeModule):
    family = "nosample"

    def losses(self, batch):
        return {"loss": torch.zeros(())}


class _Complete(_NoSample):
    family = "complete"

    def sample(self, n, generator=None):
        return torch.zeros(n, 1, 2, 2)


def test_a_broken_family_is_refused_with_what_it_lacks():
    with pytest.raises(FamilyProtocolError, match="does not implement sample"):
        check_protocol(_NoSample())
    with pytest.raises(FamilyProtocolError, match="not a gensuite.families.base.GenerativeModule"):
        check_protocol(nn.Linear(1, 1))
    check_protocol(_Complete())  # losses and sample are enough (no likelihood, no encoder)

    class Unnamed(_Complete):
        family = "base"

    with pytest.raises(FamilyProtocolError, match="family"):
        check_protocol(Unnamed())

    class OptionsNotDeclared(_Complete):
        Options = dict

    with pytest.raises(FamilyProtocolError, match="`Options` is not a gensuite.families.options.SamplingOptions"):
        check_protocol(OptionsNotDeclared())

    class NllNotCallable(_Complete):
        nll = 3.0

    with pytest.raises(FamilyProtocolError, match="nll is float"):
        check_protocol(NllNotCallable())


def test_data_modules_declare_what_they_are(make_cfg, tmp_path):
    from gensuite.cli.config import instantiate_checked

    digits = instantiate_checked(make_cfg(["data=digits"]), "data").info()
    assert digits == DataInfo(
        name="digits", modality="image", channels=1, image_size=8, num_classes=10, labelled=True,
        fingerprint=digits.fingerprint, held_out="test",
    )  # fmt: skip
    assert len(digits.fingerprint) == 16 and digits.is_image
    text = instantiate_checked(make_cfg(["data=pydoc", "data.seq_len=32"]), "data").info()
    assert text.modality == "text" and text.seq_len == 32 and not text.is_image and not text.labelled
    with pytest.raises(ValueError, match="modality"):
        DataInfo(name="x", modality="audio")


def test_an_unlabelled_folder_declares_no_classes(tmp_path, make_cfg):
    from PIL import Image

    from gensuite.cli.config import instantiate_checked

    folder = tmp_path / "flat"
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(40):
        pixels = (torch.rand(8, 8, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    cfg = make_cfg(["data=image_folder", f"data.path={folder}", "data.image_size=8", "data.channels=3"])
    info = instantiate_checked(cfg, "data").info()
    assert info.channels == 3 and info.image_size == 8 and not info.labelled and info.num_classes == 0


def _module(world: int, rank: int) -> nn.Module:
    """A LightningModule attached to a trainer that says it is rank ``rank`` of ``world`` (what DDP tells it)."""
    model = _Complete()
    model.trainer = SimpleNamespace(world_size=world, global_rank=rank, datamodule=None)
    return model


def test_rank_slices_partition_one_global_draw():
    torch.manual_seed(0)
    whole = torch.randn(8, 3)
    rows = []
    for rank in range(4):
        torch.manual_seed(0)
        rows.append(rank_slice(_module(4, rank), torch.randn, 2, 3))
    assert torch.equal(torch.cat(rows), whole)
    torch.manual_seed(0)
    alone = rank_slice(_Complete(), torch.randn, 8, 3)  # no trainer: one process, the plain draw
    assert torch.equal(alone, whole)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_worker(rank: int, world: int, port: int, fams: list[str], folder: str) -> None:
    """One DDP rank: the same seed and batch as the other rank; saves each family's training loss and RNG state."""
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    out = {}
    try:
        for family in fams:
            model = _build(family, Path(folder) / f"rank{rank}")
            model.trainer = SimpleNamespace(world_size=world, global_rank=rank, datamodule=None)
            twin = copy.deepcopy(model)  # the same weights and state, for the same step under another seed
            torch.manual_seed(0)  # seed_everything: every rank holds the same global RNG
            batch = (torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.arange(4) % 10)
            loss = model.train().losses(batch)["loss"].detach()
            rng = torch.get_rng_state()
            torch.manual_seed(1)  # another global seed: a family whose loss does not change draws no noise
            other_seed = twin.train().losses(batch)["loss"].detach()
            gathered: list = [None] * world
            dist.all_gather_object(gathered, (loss, rng, other_seed))
            out[family] = gathered
    finally:
        dist.destroy_process_group()
    if rank == 0:
        torch.save(out, Path(folder) / "ranks.pt")


def test_training_noise_differs_between_ddp_ranks_for_every_family(tmp_path):
    fams = [f for f in families() if f not in NEEDS_A_CHECKPOINT]
    mp.spawn(_rank_worker, args=(2, _free_port(), fams, str(tmp_path)), nprocs=2, join=True)
    result = torch.load(tmp_path / "ranks.pt", weights_only=False)
    for family in fams:
        (loss0, rng0, reseeded), (loss1, rng1, _) = result[family]
        assert torch.equal(rng0, rng1), f"{family}: the ranks' RNG streams drifted apart"
        if torch.equal(loss0, reseeded):  # no training noise (the transformer without dropout, the VQ-VAE)
            assert torch.equal(loss0, loss1), f"{family}: same batch, same weights, no noise: same loss"
        else:
            assert not torch.equal(loss0, loss1), f"{family}: both ranks drew the same training noise"


def test_one_data_range_mapping():
    x = torch.tensor([0.0, 0.25, 1.0])
    assert torch.equal(to_signed(x), torch.tensor([-1.0, -0.5, 1.0]))
    assert torch.equal(to_unit(to_signed(x)), x)
    assert torch.equal(to_unit(torch.tensor([-3.0, 3.0])), torch.tensor([0.0, 1.0]))
    assert torch.equal(to_unit(torch.tensor([-3.0]), clamp=False), torch.tensor([-1.0]))


def test_frozen_models_load_in_one_place_with_the_setting_named(tmp_path):
    with pytest.raises(ConfigError, match="model.tokenizer.path is not set"):
        load_frozen(None, "vqvae", "model.tokenizer.path", "python train.py model=vqvae")
    with pytest.raises(CheckpointError, match="autoencoder_ckpt: .*no such file"):
        load_frozen(tmp_path / "missing.ckpt", "vae", "autoencoder_ckpt", "python train.py model=vae")
    # no part imports a family: the tokenizers module reaches no checkpoint loading
    source = ast.parse((Path(CONF).parent / "src" / "gensuite" / "nets" / "tokenizers.py").read_text())
    imported = {n.module for n in ast.walk(source) if isinstance(n, ast.ImportFrom)}
    assert not {m for m in imported if m and m.startswith(("gensuite.runs.checkpoint", "gensuite.families"))}


def test_checkpoints_of_older_versions_name_the_current_builder():
    old = {"model": {"tokenizer": {"_target_": "gensuite.nets.tokenizers.VQTokenizer", "path": "x.ckpt"}}}
    assert _renamed_targets(old)["model"]["tokenizer"] == {"_target_": "gensuite.runs.checkpoint.vq_tokenizer",
                                                           "path": "x.ckpt"}  # fmt: skip
