"""The UNet's attention and upsampling compute the plain formulation's function from the plain formulation's
parameters: same state_dict keys, same outputs and gradients to float rounding (issue 27: faster, not different)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gensuite.nets.unet import SelfAttention, Upsample


def test_upsample_is_nearest_neighbour_then_the_3x3_convolution():
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(5, 5, 3, padding=1))
    fast = Upsample(5)
    fast.load_state_dict(plain.state_dict())  # strict: the same parameter names and shapes
    for shape in [(2, 5, 1, 1), (3, 5, 4, 7), (1, 5, 9, 8)]:
        x = torch.randn(shape, requires_grad=True)
        want, got = plain(x), fast(x)
        assert got.shape == (shape[0], 5, 2 * shape[2], 2 * shape[3])
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        g = torch.randn_like(want)
        grads = torch.autograd.grad(want, [x, *plain.parameters()], g)
        torch.testing.assert_close(torch.autograd.grad(got, [x, *fast.parameters()], g), grads, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("heads", [1, 4])
def test_attention_is_softmax_attention_over_the_pixels_with_its_1x1_convolutions(heads):
    torch.manual_seed(0)
    attn = SelfAttention(16, heads)
    nn.init.normal_(attn.proj.weight)  # zero-initialised: give the output a path through the attention
    x = torch.randn(2, 16, 3, 5)
    b, c, h, w = x.shape
    qkv = attn.qkv(attn.norm(x)).view(b, 3, heads, c // heads, h * w)  # the conv as written in DDPM's code
    q, k, v = qkv.unbind(1)  # (B, heads, c/heads, HW)
    weights = torch.softmax(torch.einsum("bndi,bndj->bnij", q, k) / (c // heads) ** 0.5, dim=-1)
    want = x + attn.proj(torch.einsum("bnij,bndj->bndi", weights, v).reshape(b, c, h, w))
    torch.testing.assert_close(attn(x), want, rtol=1e-5, atol=1e-5)
    assert sorted(attn.state_dict()) == ["norm.bias", "norm.weight", "proj.bias", "proj.weight", "qkv.bias",
                                         "qkv.weight"]  # fmt: skip
