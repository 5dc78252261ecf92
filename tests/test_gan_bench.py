"""benchmarks/gan_variants.py's per-network timing: the suite's default GAN networks beside the DCGAN recipe's."""

from benchmarks import gan_variants
from benchmarks.peers.recipes import DCDiscriminator, DCGenerator, n_params
from gensuite.cli.config import instantiate_checked


def test_network_times_names_each_network_of_both_sides_with_its_size():
    overrides = ["model.decoder.width=8", "model.discriminator.body.width=8"]
    rows = gan_variants.network_times(overrides, batch=4, rounds=1, repeat=1)
    assert [(r["side"], r["network"]) for r in rows] == [
        ("suite", "generator"),
        ("suite", "discriminator"),
        ("DCGAN", "generator"),
        ("DCGAN", "discriminator"),
    ]
    assert all(r["ms_fwd_bwd"] > 0 for r in rows)
    model = instantiate_checked(gan_variants.compose_run(overrides, "/tmp/gensuite-bench"), "model")
    sizes = {r["side"] + " " + r["network"]: r["parameters"] for r in rows}
    assert sizes["suite generator"] == n_params(model.decoder)
    assert sizes["suite discriminator"] == n_params(model.discriminator)
    assert sizes["DCGAN generator"] == n_params(DCGenerator())
    assert sizes["DCGAN discriminator"] == n_params(DCDiscriminator())


def test_the_default_discriminator_stays_under_a_million_parameters():
    # the default GAN's step time is dominated by the discriminator (run three times a step); its width-16 body
    # keeps it under the DCGAN's generator in size (0.84 M against 1.78 M), where the width-32 one had 1.77 M
    cfg = gan_variants.compose_run([], "/tmp/gensuite-bench")
    d = instantiate_checked(cfg, "model").discriminator
    assert n_params(d) < 1_000_000
