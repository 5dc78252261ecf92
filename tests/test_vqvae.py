"""The VQ-VAE (grid parts, quantizer, codebook use after a short run) and the ``vq`` tokenizer built on its
checkpoint: round trip through the codebook, stage-2 transformer over its codes."""

from __future__ import annotations

import json

import pytest
import torch

from gensuite.cli.config import instantiate_checked
from gensuite.errors import CheckpointError, ConfigError
from gensuite.nets.grids import GridDecoder, GridEncoder
from gensuite.nets.quantizers import VectorQuantizer
from gensuite.runs.checkpoint import vq_tokenizer
from gensuite.train import train

SMALL = [
    "model=vqvae",
    "data=digits",
    "model.grid_encoder.width=16",
    "model.grid_decoder.width=16",
    "model.grid_encoder.downsample=1",
    "model.grid_decoder.upsample=1",
    "model.num_codes=32",
    "model.code_dim=8",
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny nets run fastest on one thread; restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- parts --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels,size,down", [(1, 28, 2), (3, 32, 3), (1, 8, 1)])
def test_grid_parts_map_images_to_a_grid_and_back(channels, size, down):
    enc = GridEncoder(in_channels=channels, image_size=size, code_dim=6, width=8, downsample=down)
    dec = GridDecoder(code_dim=6, out_channels=channels, image_size=size, width=8, upsample=down)
    z = enc(torch.rand(2, channels, size, size))
    assert z.shape == (2, 6, size // 2**down, size // 2**down) == (2, 6, enc.grid_size, enc.grid_size)
    assert dec(z).shape == (2, channels, size, size)


def test_grid_that_does_not_divide_fails_naming_the_keys():
    with pytest.raises(ConfigError) as info:
        GridEncoder(in_channels=1, image_size=28, code_dim=4, downsample=3)
    assert set(info.value.keys) == {"downsample", "image_size"}
    with pytest.raises(ConfigError) as info:
        GridDecoder(code_dim=4, out_channels=1, image_size=28, upsample=3)
    assert set(info.value.keys) == {"upsample", "image_size"}


def test_parts_that_disagree_fail_at_construction(make_cfg):
    cfg = make_cfg(SMALL + ["model.grid_decoder.upsample=2", "model.grid_encoder.downsample=1"])
    with pytest.raises(ConfigError) as info:
        instantiate_checked(cfg, "model")
    assert "model.grid_encoder.downsample" in info.value.render()


# -- the quantizer --------------------------------------------------------------------------------------------------
def test_quantizer_snaps_to_codes_and_passes_gradients_straight_through():
    vq = VectorQuantizer(num_codes=8, code_dim=4).eval()
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    z_q, codes, stats = vq(z)
    assert codes.shape == (2, 3, 3) and torch.allclose(z_q, vq.lookup(codes))
    assert torch.equal(vq.nearest(vq.codebook.detach()), torch.arange(8))  # every code is its own nearest
    (z_q * torch.arange(4.0).view(1, 4, 1, 1)).sum().backward()
    assert torch.allclose(z.grad, torch.arange(4.0).view(1, 4, 1, 1).expand_as(z))
    assert 1 <= stats["perplexity"] <= 8


@pytest.mark.parametrize("ema", [True, False])
def test_dead_codes_are_restarted_at_encoder_outputs(ema):
    torch.manual_seed(0)
    vq = VectorQuantizer(num_codes=16, code_dim=2, ema=ema, decay=0.5, dead_after=2).train()
    data = torch.randn(1, 2, 8, 8) * 0.1 + 5.0  # far from where any code starts after a bad init
    vq(data)  # first call: data-dependent initialisation
    vq.codebook.data[8:] = -100.0  # half the codebook far away: never chosen
    vq.embed_sum[8:] = -100.0 * vq.cluster_size[8:, None]  # (EMA mode rebuilds codes from these)
    for _ in range(5):
        vq(data)
    assert int(vq.restarts_total) >= 8
    assert (vq.codebook.detach() - 5.0).abs().max() < 2.0  # all codes now sit near the data


def test_ema_codebook_moves_to_the_mean_of_its_vectors():
    vq = VectorQuantizer(num_codes=1, code_dim=3, ema=True, decay=0.5, dead_after=0).train()
    target = torch.tensor([1.0, -2.0, 0.5]).view(1, 3, 1, 1).expand(4, 3, 2, 2)
    vq(torch.zeros(1, 3, 1, 1))  # initialise at 0
    for _ in range(30):
        vq(target)
    assert torch.allclose(vq.codebook.detach()[0], target[0, :, 0, 0], atol=1e-3)


# -- a short run ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch,rows,per_row", [(2, 1, 2), (5, 1, 4), (16, 4, 4)])
def test_reconstruction_panel_pairs_images_for_any_batch_size(make_cfg, batch, rows, per_row):
    model = instantiate_checked(make_cfg(SMALL), "model")
    x = torch.rand(batch, 1, 8, 8)
    panel = model.panels((x, torch.zeros(batch, dtype=torch.long)), n=4)["reconstructions"]
    assert panel.shape == (rows, 2 * per_row, 1, 8, 8)  # (rows, image / reconstruction pairs, C, H, W)
    assert torch.equal(panel[:, 0::2].flatten(0, 1), x[: rows * per_row])


@pytest.fixture(scope="module")
def vq_run(tmp_path_factory, cache_dir):
    from .conftest import TINY, compose_cfg

    out = tmp_path_factory.mktemp("vq_run") / "run"
    cfg = compose_cfg(
        TINY + [f"paths.cache_dir={cache_dir}", "trainer.limit_train_batches=30", "data.batch_size=32", *SMALL], out
    )
    return train(cfg), out


def test_codebook_is_used_after_a_short_run(vq_run):
    result, out = vq_run
    m = json.loads((out / "metrics.json").read_text())
    assert m["val/codebook_perplexity"] > 4 and m["val/codebook_usage"] > 0.25
    assert 0 < m["val/code_bits_unigram"] <= 5.0  # log2(32 codes)
    assert "val/psnr" in m and "val/nll_bpd" not in m  # reconstructions, but no likelihood without a prior
    assert m["val/fid_classifier"] > 0  # samples (independent codes) go through the shared evaluation


def test_vq_tokenizer_round_trips_through_the_codebook(vq_run):
    result, out = vq_run
    vqvae = result["model"].eval()
    tok = vq_tokenizer(path=str(out / "checkpoints" / "last.ckpt"))
    x = result["datamodule"].real_images("val", 6)[0]
    tokens = tok.encode(x)
    assert tokens.shape == (6, 16) and tokens.max() < 32 and tok.vocab_size == 32 and tok.seq_len == 16
    assert torch.equal(tokens, vqvae.encode_codes(x).flatten(1))
    images = tok.decode(tokens)
    assert images.shape == x.shape and images.min() >= 0 and images.max() <= 1
    torch.testing.assert_close(images, vqvae.reconstruct(x))
    # codes -> codebook vectors -> nearest codes: the same codes
    grid = vqvae.quantizer.lookup(tokens.view(6, 4, 4))
    assert torch.equal(vqvae.quantizer.nearest(grid.permute(0, 2, 3, 1).reshape(-1, 8)), tokens.flatten())
    tok.train()
    assert not tok.autoencoder.training and not any(p.requires_grad for p in tok.parameters())


def test_transformer_over_vq_codes_trains_and_samples_images(vq_run, make_cfg, tmp_path):
    _, out = vq_run
    cfg = make_cfg(
        [
            "experiment=transformer_vq",  # the documented stage-2 spelling
            "data=digits",
            f"model.tokenizer.path={out / 'checkpoints' / 'last.ckpt'}",
            "model.net.width=32",
            "model.net.depth=1",
            "model.net.heads=2",
            "trainer.max_steps=3",
            "model.scheduler.warmup_steps=1",
            "trainer.precision=32-true",
        ],
        output_dir=tmp_path / "stage2",
    )
    result = train(cfg)
    m = result["metrics"]
    assert "val/bits_per_token" in m and "val/nll_bpd" not in m and "val/fid_classifier" in m
    model = result["model"]
    assert model.context == 16 and all(not p.requires_grad for p in model.tokenizer.parameters())
    assert model.sample(3, torch.Generator().manual_seed(0)).shape == (3, 1, 8, 8)


def test_vq_tokenizer_needs_a_vqvae_checkpoint(vq_run, tmp_path):
    with pytest.raises(ConfigError, match="model.tokenizer.path"):
        vq_tokenizer(path=None)
    with pytest.raises(CheckpointError, match="no such file"):
        vq_tokenizer(path=str(tmp_path / "missing.ckpt"))
