"""GAN variants under one equal budget: loss (NS / hinge / WGAN-GP) x spectral norm (off / on) x EMA (off / on).

Every variant trains the default GAN (``model=gan``: DCGAN-like conv generator and discriminator on mnist5k) for
the same number of generator updates, with the same batches (``n_critic=1``), seed and optimiser settings; only
the loss and the spectral-norm switch change. EMA needs no run of its own: each run is evaluated twice, with the
raw generator weights and with their EMA (the preset's `EMA` callback), on the same 2,000 samples' seed.

    python -m benchmarks.gan_variants                       # the preset's budget (40 epochs, 1,240 steps)
    python -m benchmarks.gan_variants --steps 600 --losses ns hinge
    python -m benchmarks.gan_variants --nets-only            # only the per-network timing (a few seconds)

First prints where a step's time goes: each network's forward + backward at the batch size, alone, for the
suite's default generator and discriminator and for the DCGAN recipe's (`benchmarks.peers`), interleaved in one
process. A training step runs the generator once and the discriminator three times (real, fake, and the fake again
for the generator's loss). Then prints one table: FID / KID (classifier features), precision, recall, class
coverage, wall-clock training time and seconds per step (inflated on a shared machine: compare the ratio between
rows), and sampling images/s.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import lightning as L
import torch

from benchmarks.common import compose_cfg, table
from benchmarks.peers.recipes import DCDiscriminator, DCGenerator, n_params
from gensuite.cli.config import instantiate_checked

COLUMNS = ["fid", "kid", "precision", "recall", "coverage", "train_s", "s_per_step", "images_per_s"]


class KeepRaw(L.Callback):
    """Copies the raw generator weights at the end of training, before EMA writes its average over them."""

    def __init__(self):
        self.state: dict[str, torch.Tensor] | None = None

    def on_train_end(self, trainer, pl_module) -> None:
        self.state = {k: v.detach().clone() for k, v in pl_module.decoder.state_dict().items()}


def compose_run(overrides: list[str], out: Path):
    return compose_cfg(["model=gan", *overrides], out)


def evaluate(evaluator, model) -> dict[str, float]:
    m = evaluator.evaluate(model)
    return {
        "fid": m["val/fid_classifier"],
        "kid": m["val/kid_classifier"],
        "precision": m["val/precision_classifier"],
        "recall": m["val/recall_classifier"],
        "coverage": m["val/coverage_classes"],
        "images_per_s": m["time/sample_images_per_s"],
    }


def run_variant(loss: str, spectral_norm: bool, steps: int, extra: list[str], out: Path) -> list[dict]:
    cfg = compose_run([f"model/loss={loss}", f"model.discriminator.spectral_norm={spectral_norm}", *extra], out)
    L.seed_everything(cfg.seed, verbose=False)
    dm, model = instantiate_checked(cfg, "data"), instantiate_checked(cfg, "model")
    evaluator = instantiate_checked(cfg, "metrics")
    ema, raw = instantiate_checked(cfg, "callbacks.ema"), KeepRaw()
    trainer = L.Trainer(
        accelerator="cpu",
        precision=cfg.trainer.precision,  # the preset's (gs_fast_precision: bf16-mixed only where native)
        max_steps=steps,
        max_epochs=-1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[raw, ema],  # KeepRaw's on_train_end runs before EMA copies its average into the generator
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    train_s = time.perf_counter() - start
    evaluator.prepare(dm, "cpu")
    timing = {"train_s": train_s, "s_per_step": train_s / max(trainer.global_step, 1)}
    name = f"{loss}{' +SN' if spectral_norm else ''}"
    rows = [{"variant": name, "ema": "on", **evaluate(evaluator, model), **timing}]
    model.decoder.load_state_dict(raw.state)
    rows.append({"variant": name, "ema": "off", **evaluate(evaluator, model), **timing})
    return rows


def network_times(overrides: list[str], batch: int = 128, rounds: int = 3, repeat: int = 5) -> list[dict]:
    """Milliseconds of one forward + backward of each network alone at ``batch`` (best of ``rounds``, each the
    mean of ``repeat`` calls after 2 warm-up calls; the four networks take turns so that load hits them alike)."""
    cfg = compose_run(overrides, Path("/tmp/gensuite-bench"))
    torch.manual_seed(0)
    model = instantiate_checked(cfg, "model")
    model.train()
    z_dim = model.latent_dim
    real = torch.randn(batch, cfg.data.channels, cfg.data.image_size, cfg.data.image_size)
    nets = {
        ("suite", "generator"): (model.decoder, torch.randn(batch, z_dim)),
        ("suite", "discriminator"): (model.discriminator, real),
        ("DCGAN", "generator"): (DCGenerator(), torch.randn(batch, 100)),
        ("DCGAN", "discriminator"): (DCDiscriminator(), real),
    }
    best = dict.fromkeys(nets, float("inf"))
    for _ in range(rounds):
        for key, (net, x) in nets.items():
            for i in range(2 + repeat):
                if i == 2:
                    start = time.perf_counter()
                net(x).float().sum().backward()
            best[key] = min(best[key], (time.perf_counter() - start) / repeat)
    return [
        {
            "side": side,
            "network": name,
            "ms_fwd_bwd": 1e3 * best[(side, name)],
            "parameters": n_params(net),
        }
        for (side, name), (net, _) in nets.items()
    ]


def print_network_times(rows: list[dict], batch: int = 128) -> None:
    per_step = {
        side: sum(r["ms_fwd_bwd"] * (1 if r["network"] == "generator" else 3) for r in rows if r["side"] == side)
        for side in ("suite", "DCGAN")
    }
    threads = torch.get_num_threads()
    print(f"\nOne network's forward + backward at batch {batch} (this process, CPU threads: {threads})\n")
    print(table(rows, ["side", "network", "ms_fwd_bwd", "parameters"]))
    print(
        f"\ngenerator + 3 x discriminator per step: suite {per_step['suite']:.0f} ms, DCGAN {per_step['DCGAN']:.0f} ms "
        f"(suite / DCGAN {per_step['suite'] / per_step['DCGAN']:.2f})"
    )


def print_table(rows: list[dict], steps: int) -> None:
    head = f"| variant | EMA | {' | '.join(COLUMNS)} |"
    print(f"\nGAN variants on mnist5k, {steps} generator updates each (n_critic=1), 2,000 samples per evaluation\n")
    print(head)
    print("|" + "---|" * (len(COLUMNS) + 2))
    for r in rows:
        cells = [
            f"{r[c]:.4f}" if c == "kid" else f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c]) for c in COLUMNS
        ]
        print(f"| {r['variant']} | {r['ema']} | {' | '.join(cells)} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1240, help="generator updates per variant")
    parser.add_argument("--losses", nargs="+", default=["ns", "hinge", "wgan_gp"])
    parser.add_argument("--spectral-norm", nargs="+", default=["off", "on"], choices=["off", "on"])
    parser.add_argument("--nets-only", action="store_true", help="only time each network's forward + backward")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every variant")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    print_network_times(network_times(args.overrides))
    if args.nets_only:
        return
    rows: list[dict] = []
    with TemporaryDirectory() as tmp:
        for loss in args.losses:
            for sn in args.spectral_norm:
                rows += run_variant(loss, sn == "on", args.steps, args.overrides, Path(tmp) / f"{loss}-{sn}")
                print_table(rows, args.steps)  # partial results as they come
    print_table(rows, args.steps)


if __name__ == "__main__":
    main()
