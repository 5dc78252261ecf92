"""DiffAugment (gensuite.nets.augment): each transformation does what it says, gradients reach the images, the
discriminator augments only while training, and a GAN trains with it through the composed config."""

from __future__ import annotations

import pytest
import torch

from gensuite.cli.config import instantiate_checked
from gensuite.errors import ConfigError
from gensuite.nets.augment import DiffAugment
from gensuite.nets.discriminators import Discriminator
from gensuite.nets.encoders import ConvEncoder
from tests.test_gan import TINY_GAN, fit


def test_translation_moves_every_example_by_at_most_its_shift():
    torch.manual_seed(0)
    x = torch.zeros(64, 1, 16, 16)
    x[:, 0, 8, 8] = 1.0  # one bright pixel in the middle
    y = DiffAugment(["translation"], translation=0.125)(x)
    where = (y[:, 0] == 1).nonzero()[:, 1:]  # (64, 2): each example's pixel, still exactly one
    assert len(where) == 64
    shifts = where - 8
    assert shifts.abs().max() <= 2  # 1/8 of 16
    assert len({tuple(s.tolist()) for s in shifts}) > 5  # examples are shifted independently
    assert (y.sum((1, 2, 3)) == 1).all()


def test_cutout_zeroes_one_square_of_the_given_side():
    torch.manual_seed(0)
    x = torch.ones(200, 2, 12, 12)
    y = DiffAugment(["cutout"], cutout=0.5)(x)
    zeros = (y == 0).all(1)  # (B, H, W): the same square in every channel
    assert ((y == 0) | (y == 1)).all()
    counts = zeros.sum((1, 2))
    assert counts.max() == 36  # a 6 x 6 square when fully inside
    assert counts.min() >= 9  # at least a quarter of it stays inside (its centre is inside the image)
    rows, cols = zeros.any(2), zeros.any(1)  # the zeros of each example form one rectangle
    assert (zeros.sum((1, 2)) == rows.sum(1) * cols.sum(1)).all()


def test_color_changes_brightness_and_contrast_and_keeps_grey_images_grey():
    torch.manual_seed(0)
    x = torch.rand(32, 3, 8, 8) * 2 - 1
    x[:, 1:] = x[:, :1]  # grey: equal channels
    y = DiffAugment(["color"])(x)
    assert not torch.allclose(x.mean((1, 2, 3)), y.mean((1, 2, 3)))
    assert torch.allclose(y[:, 0], y[:, 1]) and torch.allclose(y[:, 0], y[:, 2])


def test_gradients_reach_the_images_through_every_policy():
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    DiffAugment(["color", "translation", "cutout"])(x).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_p_leaves_the_other_examples_unchanged():
    torch.manual_seed(0)
    x = torch.randn(400, 1, 8, 8)
    y = DiffAugment(["cutout"], p=0.25)(x)
    changed = (y != x).flatten(1).any(1).float().mean()
    assert 0.15 < changed < 0.35


@pytest.mark.parametrize(
    "kwargs, key", [({"policy": ["zoom"]}, "policy"), ({"policy": []}, "policy"), ({"cutout": 0}, "cutout")]
)
def test_bad_settings_name_the_setting(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        DiffAugment(**kwargs)


def test_the_discriminator_augments_while_training_only():
    body = ConvEncoder(in_channels=1, image_size=16, out_dim=8, width=4, norm="none")
    d = Discriminator(body, augment=DiffAugment(["translation", "cutout"]))
    x = torch.randn(8, 1, 16, 16)
    d.eval()
    assert torch.equal(d(x), d(x))  # no augmentation: the same logits twice
    d.train()
    torch.manual_seed(0)
    assert not torch.equal(d(x), d(x))


def test_a_gan_trains_with_diffaugment_from_the_config(make_cfg):
    cfg = make_cfg(TINY_GAN + ["+model/augment@model.discriminator.augment=diffaugment"])
    model = instantiate_checked(cfg, "model")
    assert isinstance(model.discriminator.augment, DiffAugment)
    torch.manual_seed(0)
    model, trainer = fit(cfg)
    assert trainer.global_step == 3
    assert torch.isfinite(model.sample(4, generator=torch.Generator().manual_seed(0))).all()
