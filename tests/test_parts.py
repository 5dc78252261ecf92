"""The shape contract of every encoder and decoder of the parts zoo, and construction-time shape errors."""

from __future__ import annotations

import pytest
import torch

from gensuite.errors import ConfigError
from gensuite.nets.decoders import ConvDecoder, MLPDecoder, ResNetDecoder
from gensuite.nets.encoders import ConvEncoder, MLPEncoder, ResNetEncoder
from gensuite.nets.likelihoods import Bernoulli, DiscretizedGaussian

ENCODERS = [MLPEncoder, ConvEncoder, ResNetEncoder]
DECODERS = [MLPDecoder, ConvDecoder, ResNetDecoder]
SHAPES = [(1, 8), (3, 8), (1, 28), (3, 28), (1, 32), (3, 32), (1, 64), (3, 64)]
SMALL = {"width": 8}


@pytest.mark.parametrize("cls", ENCODERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("channels,size", SHAPES)
def test_encoder_maps_images_to_vectors(cls, channels, size):
    enc = cls(in_channels=channels, image_size=size, out_dim=12, **SMALL)
    out = enc(torch.rand(3, channels, size, size))
    assert out.shape == (3, 12)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in enc.parameters())


@pytest.mark.parametrize("cls", DECODERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("channels,size", SHAPES)
def test_decoder_maps_vectors_to_images(cls, channels, size):
    dec = cls(latent_dim=6, out_channels=channels, image_size=size, **SMALL)
    out = dec(torch.randn(3, 6))
    assert out.shape == (3, channels, size, size)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("cls", DECODERS, ids=lambda c: c.__name__)
def test_class_conditional_decoder_uses_labels(cls):
    torch.manual_seed(0)
    dec = cls(latent_dim=6, out_channels=1, image_size=8, num_classes=3, **SMALL).eval()
    z = torch.randn(2, 6)
    a, b = dec(z, torch.tensor([0, 0])), dec(z, torch.tensor([1, 2]))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="needs labels"):
        dec(z)


@pytest.mark.parametrize("cls", [ConvEncoder, ResNetEncoder, ConvDecoder, ResNetDecoder], ids=lambda c: c.__name__)
def test_depth_that_does_not_divide_the_image_size_fails_at_construction(cls):
    kwargs = (
        {"in_channels": 1, "image_size": 28, "out_dim": 4}
        if "Encoder" in cls.__name__
        else {"latent_dim": 4, "out_channels": 1, "image_size": 28}
    )
    with pytest.raises(ConfigError) as info:
        cls(depth=3, **kwargs)
    assert set(info.value.keys) == {"depth", "image_size"}
    assert "depth <= 2" in info.value.fix


@pytest.mark.parametrize("bad", [{"latent_dim": 0}, {"latent_dim": -3}, {"width": 0}, {"image_size": 0}])
def test_non_positive_sizes_fail_naming_the_argument(bad):
    kwargs = {"latent_dim": 4, "out_channels": 1, "image_size": 8, "width": 8} | bad
    with pytest.raises(ConfigError) as info:
        ConvDecoder(**kwargs)
    assert info.value.keys == (next(iter(bad)),)


def test_discretized_gaussian_is_a_distribution_over_256_levels():
    """Summed over all 256 values of one pixel, the probabilities add up to 1."""
    lik = DiscretizedGaussian(channels=1, image_size=1, init_scale=0.05)
    levels = torch.arange(256, dtype=torch.float32).div(255).view(256, 1, 1, 1)
    for raw in (-3.0, 0.0, 0.4, 2.5):
        out = torch.full((256, 1, 1, 1), raw)
        total = torch.exp(-lik.nll(out, levels)).sum().item()
        assert total == pytest.approx(1.0, abs=1e-4)


def test_bernoulli_nll_is_binary_cross_entropy():
    lik = Bernoulli()
    logits = torch.tensor([[[[0.0, 2.0]]]])
    x = torch.tensor([[[[1.0, 0.0]]]])
    expected = torch.log(torch.tensor(2.0)) + torch.log1p(torch.exp(torch.tensor(2.0)))
    assert lik.nll(logits, x).item() == pytest.approx(expected.item(), rel=1e-6)
