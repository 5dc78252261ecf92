"""Quality at an equal wall-clock training budget: each family's suite default against the third-party
implementation a user would otherwise pick, on the same data, scored by the suite's own evaluation.

    pip install .[peers]                                   # pythae, denoising-diffusion-pytorch, x-transformers
    python -m benchmarks peers                             # the full run: about 2.5 h on CPU
    python -m benchmarks.peers --minutes-scale 0.02 --samples 200 --only vae,gan   # a smoke run of the wiring
    python -m benchmarks.peers --only gan --no-peer   # one side again (--no-suite: the peer's); other rows are kept

| family    | peer (what trains it)                                                        | budget |
|-----------|------------------------------------------------------------------------------|--------|
| vae       | pythae ``VAE`` with its MNIST convolutional encoder and decoder               | 10 min |
| gan       | DCGAN (Radford et al. 2016): a recipe, written here in plain PyTorch          | 10 min |
| diffusion | denoising-diffusion-pytorch ``Unet`` + ``GaussianDiffusion``, DDIM-50 sampling | 20 min |
| text      | x-transformers ``TransformerWrapper(Decoder)`` + ``AutoregressiveWrapper``    | 10 min |

How the numbers are made, the same for both sides of a row:

- *Data.* Images: the train split of ``data=mnist5k`` (`gensuite.data.images.MNIST5k`, built from the same config
  ``train.py`` composes, so the split is identical). Text: Python's help topics in sorted order (`PydocText`'s own
  bytes) cut once, a held-out-topic split: the first 90 % of the bytes train, the last 10 % (whole topics the
  model never saw, in the alphabet's tail) score. The suite trains on the 90 % file (``data=text``, the pydoc
  window settings; ``data.val_fraction=0.02`` so that it trains on nearly the same bytes as the peer).
- *Budget.* Training time only: the peers' clock runs over their optimisation steps; the suite's is
  ``trainer.max_time`` on its `TrainingClock` (training batches only). Sampling and evaluation are off the clock.
  Everything runs on this machine's CPU threads.
- *Score.* Images: ``--samples`` draws written as uint8 ``(N, H, W, C)`` ``.npz`` (key ``samples``; the suite's
  through ``sample.py format=npz``) and scored by ``eval.py samples=<npz> data=mnist5k metrics.features=all``:
  FID in every feature space, precision / recall / coverage (classifier features; ssl where there is no
  classifier) and ``classes``, the classes of 10 the samples hit with at least half their real share. Text: bits
  per byte of the held-out 10 %, cut into windows of the context length (256); in each window every byte is
  predicted from the bytes before it and the first from a start token — the suite's validation rule, applied to
  both models by `bits_per_byte`.

Peer settings are the libraries' documented defaults where they have them (pythae: Adam 1e-4, batch 64, latent 16;
denoising-diffusion-pytorch's ``Trainer``: Adam 1e-4 betas (0.9, 0.99), gradient norm 1, EMA 0.995 every 10 steps);
batch sizes where a library has none follow the suite's data config (128 images; the text preset's 32 windows); the
text peer has the suite GPT's width, depth, heads and batch, read from the composed config, and uses Adam 3e-4.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import machine, table
from gensuite.runs import sample_files as samples_io

ROOT = Path(__file__).resolve().parents[1]
BUDGET_MINUTES = {"vae": 10.0, "gan": 10.0, "diffusion": 20.0, "text": 10.0}
SUITE_MODEL = {"vae": "vae", "gan": "gan", "diffusion": "diffusion", "text": "transformer"}
PEER_NAME = {
    "vae": "pythae VAE (MNIST convnets)",
    "gan": "DCGAN recipe (plain PyTorch)",
    "diffusion": "denoising-diffusion-pytorch, DDIM-50",
    "text": "x-transformers decoder",
}
HELD_OUT_FRACTION = 0.1
CONTEXT = 256  # bytes per scored window: conf/data/pydoc.yaml's seq_len
COLUMNS = [
    "family",
    "side",
    "implementation",
    "fid_classifier",
    "fid_ssl",
    "fid_inception",
    "precision",
    "recall",
    "coverage",
    "classes",
    "bits_per_byte",
    "train_s",
    "steps",
    "parameters",
]


# -- peer libraries: imported only when their family runs ---------------------------------------------------
def need(module: str, package: str):
    """``import module``, or stop with one line naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise SystemExit(f"benchmarks.peers needs {package}: pip install .[peers]") from None


# -- data ---------------------------------------------------------------------------------------------------
def train_images() -> torch.Tensor:
    """The train split of ``data=mnist5k`` as float ``(N, 1, 28, 28)`` in [0, 1], built from the config ``train.py``
    composes (the same split, whatever the seed)."""
    from benchmarks.common import compose_cfg
    from gensuite.cli.config import instantiate_checked

    datamodule = instantiate_checked(compose_cfg(["data=mnist5k"]), "data")
    images, _ = datamodule.real_images("train")
    return images


def held_out_split(raw: bytes, fraction: float = HELD_OUT_FRACTION) -> tuple[bytes, bytes]:
    """The first ``1 - fraction`` of the bytes (train) and the rest (held out): topics are in sorted order, so the
    held-out part is whole topics never trained on (only the one topic at the cut is shared)."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    cut = len(raw) - int(round(len(raw) * fraction))
    return raw[:cut], raw[cut:]


def pydoc_split() -> tuple[bytes, bytes]:
    from gensuite.data.text import PydocText

    return held_out_split(PydocText().load_bytes())


# -- samples in, scores out ---------------------------------------------------------------------------------
def write_samples(path: Path, images: torch.Tensor) -> Path:
    """Float ``(N, C, H, W)`` in [0, 1] -> uint8 ``(N, H, W, C)`` under the key ``samples`` (what ``eval.py``
    reads), rounded as the suite's own ``sample.py format=npz``."""
    if images.dim() != 4:
        raise ValueError(f"expected images (N, C, H, W), got shape {tuple(images.shape)}")
    return samples_io.write_npz(path, samples_io.to_uint8(images.clamp(0, 1)))


def suite_env() -> dict[str, str]:
    """The environment of the suite's commands: this checkout's ``src`` first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    return env


def run(args: list[str], log: Path) -> None:
    """``python <args>`` from the repository root, its output into ``log``; a failure stops with the log's tail."""
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=suite_env(), stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise SystemExit(f"python {' '.join(args)} failed (exit {proc.returncode}); {log}:\n{tail}")


def score_samples(npz: Path, n: int) -> dict[str, float]:
    """``eval.py samples=<npz> data=mnist5k metrics.features=all`` (at ``n`` samples) -> the row's image metrics."""
    out = npz.with_name(f"eval-{npz.stem}.json")
    args = [f"samples={npz}", "data=mnist5k", "metrics.features=all", f"metrics.n_samples={n}"]
    run(["eval.py", *args, f"metrics.kid_subset_size={min(1000, n)}", f"out={out}"], npz.with_suffix(".eval.log"))
    m = json.loads(out.read_text())
    return {
        "fid_classifier": m.get("val/fid_classifier", math.nan),
        "fid_ssl": m.get("val/fid_ssl", math.nan),
        "fid_inception": m.get("val/fid_inception", math.nan),
        "precision": m.get("val/precision_classifier", m.get("val/precision_ssl", math.nan)),
        "recall": m.get("val/recall_classifier", m.get("val/recall_ssl", math.nan)),
        "coverage": m.get("val/coverage_classifier", m.get("val/coverage_ssl", math.nan)),  # Naeem et al. 2020
        "classes": m.get("val/coverage_classes", math.nan),  # classes hit with at least half their real share
    }


@torch.no_grad()
def bits_per_byte(nats_of: Callable[[torch.Tensor], torch.Tensor], held_out: bytes, context: int = CONTEXT) -> float:
    """Bits per byte of ``held_out`` cut into windows of ``context`` bytes (the last partial one left out).
    ``nats_of(windows (B, T) int64)`` returns each byte's NLL ``(B, T)``, the first predicted from a start token."""
    data = torch.frombuffer(bytearray(held_out), dtype=torch.uint8)
    windows = data[: len(data) // context * context].view(-1, context).long()  # (W, T)
    total = sum(float(nats_of(w).sum()) for w in windows.split(64))
    return total / (windows.numel() * math.log(2))


# -- the clock ----------------------------------------------------------------------------------------------
def update(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One optimiser step on ``loss``."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def train_for(seconds: float, step: Callable[[], None]) -> tuple[int, float]:
    """Call ``step()`` until the summed step time reaches ``seconds`` (the step that crosses it finishes, as the
    suite's clock does). Returns (steps, training seconds)."""
    steps, spent = 0, 0.0
    while spent < seconds:
        t0 = time.perf_counter()
        step()
        spent += time.perf_counter() - t0
        steps += 1
    return steps, spent


def batches(images: torch.Tensor, size: int, seed: int = 0) -> Iterator[torch.Tensor]:
    """Shuffled batches of ``size`` forever, a new order each epoch (the last partial batch dropped)."""
    g = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(images), generator=g)
        for i in range(0, len(order) - size + 1, size):
            yield images[order[i : i + size]]


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# -- peers: each trains for `seconds`, writes `n` samples to `npz` and returns its steps, time and size ------
def peer_vae(images: torch.Tensor, seconds: float, n: int, npz: Path) -> dict:
    """pythae's VAE with its MNIST benchmark convnets (Bernoulli likelihood: ``reconstruction_loss="bce"``)."""
    pythae = need("pythae.models", "pythae")
    nets = need("pythae.models.nn.benchmarks.mnist", "pythae")
    config = pythae.VAEConfig(input_dim=(1, 28, 28), latent_dim=16, reconstruction_loss="bce")
    model = pythae.VAE(config, encoder=nets.Encoder_Conv_VAE_MNIST(config), decoder=nets.Decoder_Conv_AE_MNIST(config))
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)  # pythae's BaseTrainerConfig defaults
    data = batches(images, 64)
    model.train()

    def step():
        loss = model({"data": next(data)}).loss
        update(opt, loss)

    steps, spent = train_for(seconds, step)
    model.eval()
    with torch.no_grad():
        z = torch.randn(n, config.latent_dim, generator=torch.Generator().manual_seed(0))
        x = torch.cat([model.decoder(c).reconstruction for c in z.split(500)])  # Bernoulli means, [0, 1]
    write_samples(npz, x)
    return {"steps": steps, "train_s": spent, "parameters": n_params(model)}


class DCGenerator(nn.Module):
    """DCGAN generator at 28x28: z (B, 100) -> 7x7x256 -> 14x14x128 -> 28x28x1, batchnorm + ReLU, tanh output."""

    def __init__(self, z_dim: int = 100, width: int = 64):
        super().__init__()
        self.z_dim = z_dim
        self.net = nn.Sequential(
            nn.ConvTranspose2d(z_dim, 4 * width, 7, 1, 0, bias=False),  # (B, 4w, 7, 7)
            nn.BatchNorm2d(4 * width),
            nn.ReLU(True),
            nn.ConvTranspose2d(4 * width, 2 * width, 4, 2, 1, bias=False),  # (B, 2w, 14, 14)
            nn.BatchNorm2d(2 * width),
            nn.ReLU(True),
            nn.ConvTranspose2d(2 * width, 1, 4, 2, 1),  # (B, 1, 28, 28)
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])


class DCDiscriminator(nn.Module):
    """DCGAN discriminator at 28x28: strided convolutions, LeakyReLU 0.2, batchnorm except on the input layer."""

    def __init__(self, width: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 4, 2, 1),  # (B, w, 14, 14)
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(width, 2 * width, 4, 2, 1, bias=False),  # (B, 2w, 7, 7)
            nn.BatchNorm2d(2 * width),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(2 * width, 1, 7, 1, 0),  # (B, 1, 1, 1): a logit
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()


def dcgan_init(module: nn.Module) -> None:
    """The paper's initialisation: weights from N(0, 0.02), batchnorm scales from N(1, 0.02)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def peer_gan(images: torch.Tensor, seconds: float, n: int, npz: Path) -> dict:
    """DCGAN (Radford et al., arXiv:1511.06434, section 4): Adam 2e-4, beta1 0.5, batch 128, non-saturating loss."""
    torch.manual_seed(0)
    g, d = DCGenerator(), DCDiscriminator()
    g.apply(dcgan_init), d.apply(dcgan_init)
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    data = batches(images * 2 - 1, 128)  # tanh range
    g.train(), d.train()

    def step():
        real = next(data)
        fake = g(torch.randn(len(real), g.z_dim))
        ones, zeros = torch.ones(len(real)), torch.zeros(len(real))
        loss_d = F.binary_cross_entropy_with_logits(d(real), ones) + F.binary_cross_entropy_with_logits(
            d(fake.detach()), zeros
        )
        update(opt_d, loss_d)
        loss_g = F.binary_cross_entropy_with_logits(d(fake), ones)  # -log D(G(z)): the non-saturating loss
        update(opt_g, loss_g)

    steps, spent = train_for(seconds, step)
    g.eval()
    with torch.no_grad():
        z = torch.randn(n, g.z_dim, generator=torch.Generator().manual_seed(0))
        x = torch.cat([g(c) for c in z.split(500)]).add(1).div(2)
    write_samples(npz, x)
    return {"steps": steps, "train_s": spent, "parameters": n_params(g) + n_params(d)}


def peer_diffusion(images: torch.Tensor, seconds: float, n: int, npz: Path) -> dict:
    """denoising-diffusion-pytorch: ``Unet`` (dim 32, multipliers 1-2-4: 28 -> 14 -> 7) in a ``GaussianDiffusion``
    of 1,000 steps (its default objective and schedule), DDIM with 50 steps to sample, from EMA weights."""
    ddpm = need("denoising_diffusion_pytorch", "denoising-diffusion-pytorch")
    ema_pytorch = need("ema_pytorch", "denoising-diffusion-pytorch")
    torch.manual_seed(0)
    unet = ddpm.Unet(dim=32, dim_mults=(1, 2, 4), channels=1, flash_attn=False)
    diffusion = ddpm.GaussianDiffusion(unet, image_size=28, timesteps=1000, sampling_timesteps=50)
    ema = ema_pytorch.EMA(diffusion, beta=0.995, update_every=10)  # the library Trainer's defaults
    opt = torch.optim.Adam(diffusion.parameters(), lr=1e-4, betas=(0.9, 0.99))
    data = batches(images, 128)  # [0, 1]: GaussianDiffusion maps to [-1, 1] itself
    diffusion.train()

    def step():
        loss = diffusion(next(data))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(diffusion.parameters(), 1.0)
        opt.step()
        ema.update()

    steps, spent = train_for(seconds, step)
    sampler = ema.ema_model.eval()
    torch.manual_seed(0)
    with torch.no_grad():
        x = torch.cat([sampler.sample(batch_size=len(c)) for c in torch.arange(n).split(500)])
    write_samples(npz, x)
    return {"steps": steps, "train_s": spent, "parameters": n_params(unet)}


def suite_text_shape() -> dict:
    """Width, depth, heads and batch of the suite's text transformer (``model=transformer data=text``, composed
    as train.py composes it), so that the peer is built to the same size and never drifts from the preset."""
    from benchmarks.common import compose_cfg

    cfg = compose_cfg(["model=transformer", "data=text"])
    net = cfg.model.net
    return {"width": net.width, "depth": net.depth, "heads": net.heads, "batch": cfg.data.batch_size}


def peer_text(train: bytes, held_out: bytes, seconds: float) -> dict:
    """x-transformers' byte-level decoder at the suite GPT's width, depth, heads and batch (`suite_text_shape`),
    context 256, trained on windows of the train bytes with a start token (256) in front, as the suite's
    transformer sees them."""
    xt = need("x_transformers", "x-transformers")
    shape = suite_text_shape()
    torch.manual_seed(0)
    bos = 256
    # 256 byte values + the start token; AutoregressiveWrapper runs the whole (start + window) sequence and drops
    # the last position's logits, hence the one extra position
    layers = xt.Decoder(dim=shape["width"], depth=shape["depth"], heads=shape["heads"])
    net = xt.TransformerWrapper(num_tokens=257, max_seq_len=CONTEXT + 1, attn_layers=layers)
    model = xt.AutoregressiveWrapper(net)
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    data = torch.frombuffer(bytearray(train), dtype=torch.uint8).long()
    g = torch.Generator().manual_seed(0)
    model.train()

    def step():
        starts = torch.randint(0, len(data) - CONTEXT, (shape["batch"],), generator=g)
        windows = torch.stack([data[s : s + CONTEXT] for s in starts.tolist()])  # (B, T)
        loss = model(torch.cat([torch.full_like(windows[:, :1], bos), windows], 1))  # predicts every window byte
        update(opt, loss)

    steps, spent = train_for(seconds, step)
    net.eval()

    def nats_of(windows: torch.Tensor) -> torch.Tensor:
        inputs = torch.cat([torch.full_like(windows[:, :1], bos), windows[:, :-1]], 1)  # (B, T)
        logits = net(inputs)  # (B, T, 257)
        return F.cross_entropy(logits.flatten(0, 1), windows.flatten(), reduction="none").view_as(windows)

    bpb = bits_per_byte(nats_of, held_out)
    return {"steps": steps, "train_s": spent, "parameters": n_params(net), "bits_per_byte": bpb}


# -- the suite's side: train.py, sample.py and eval.py as a user runs them ----------------------------------
def hms(seconds: float) -> str:
    """Seconds as ``DD:HH:MM:SS`` (``trainer.max_time``), at least 1 s."""
    s = max(1, int(round(seconds)))
    return f"{s // 86400:02d}:{s % 86400 // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def suite_train(model: str, seconds: float, n: int | None, folder: Path, extra: list[str]) -> tuple[Path, dict]:
    """``train.py model=<model>`` for ``seconds`` of training into ``folder``: (last.ckpt, metrics.json). ``n``:
    the sample count of the run's own final image evaluation (None: text, which has none)."""
    args = [
        "train.py",
        f"model={model}",
        f"trainer.max_time={hms(seconds)}",
        "trainer.max_epochs=-1",  # the budget is time: no epoch or step limit may stop it first
        "trainer.max_steps=-1",
        # the run's own final evaluation stays (presets read its settings: the GAN checkpoints on its FID), at the
        # benchmark's sample count to keep it short; the row is scored below from sample files, as the peers are
        *([f"metrics.n_samples={n}", f"metrics.kid_subset_size={min(1000, n)}"] if n else []),
        "callbacks.progress_bar=null",
        f"hydra.run.dir={folder}",
        *extra,
    ]
    folder.mkdir(parents=True, exist_ok=True)
    run(args, folder.parent / f"{folder.name}.train.log")
    return folder / "checkpoints" / "last.ckpt", json.loads((folder / "metrics.json").read_text())


def run_facts(metrics: dict) -> dict:
    """Steps, training seconds (the `TrainingClock`'s) and parameters of a run's ``metrics.json``."""
    keys = {"steps": "train/global_step", "train_s": "time/train_s", "parameters": "model/parameters"}
    return {k: metrics.get(v) for k, v in keys.items()}


def suite_images(family: str, seconds: float, n: int, out: Path) -> dict:
    ckpt, m = suite_train(SUITE_MODEL[family], seconds, n, out / f"suite-{family}", ["data=mnist5k"])
    npz = out / f"suite-{family}.npz"
    run(["sample.py", f"ckpt_path={ckpt}", f"n={n}", "format=npz", f"out={npz}"], out / f"suite-{family}.sample.log")
    return {"npz": npz} | run_facts(m)


def suite_text(train: bytes, held_out: bytes, seconds: float, out: Path) -> dict:
    from gensuite.runs.checkpoint import load_model

    path = out / "pydoc-train90.txt"
    path.write_bytes(train)
    extra = ["data=text", f"data.path={path}", "data.val_fraction=0.02", f"data.seq_len={CONTEXT}"]
    ckpt, m = suite_train("transformer", seconds, None, out / "suite-text", extra)
    model, _ = load_model(ckpt)

    def nats_of(windows: torch.Tensor) -> torch.Tensor:
        return model.token_nats(model.tokenizer.encode(windows))[0]  # the start token is the family's own

    bpb = bits_per_byte(nats_of, held_out)
    return run_facts(m) | {"bits_per_byte": bpb}


# -- the table ----------------------------------------------------------------------------------------------
def render(rows: list[dict]) -> str:
    """The markdown table of ``rows`` (missing values blank, NaN as ``-``)."""

    def clean(row: dict) -> dict:
        out = {}
        for k, v in row.items():
            if v is None:
                continue
            if isinstance(v, float) and math.isnan(v):
                v = "-"
            elif k == "train_s" and isinstance(v, float):
                v = f"{v:.1f}"
            out[k] = v
        return out

    return table([clean(r) for r in rows], COLUMNS)


def write_tables(rows: list[dict], out: Path) -> tuple[Path, Path]:
    """``peers.md`` and ``peers.csv`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    md, path_csv = out / "peers.md", out / "peers.csv"
    md.write_text(render(rows) + "\n")
    with open(path_csv, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return md, path_csv


def read_rows(path: Path) -> list[dict]:
    """The rows of an earlier ``peers.csv`` (numbers as numbers, empty cells left out); none if there is none."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: _number(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def _number(text: str):
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def merged(old: list[dict], new: list[dict]) -> list[dict]:
    """``old`` with each (family, side) row that ``new`` has replaced in place, and ``new``'s others appended: a
    run of one family or one side updates the table without losing the rest of it."""

    def key(row: dict) -> tuple[str, str]:
        return row["family"], row["side"]

    fresh = {key(r): r for r in new}
    out = [fresh.pop(key(r), r) for r in old]
    return out + [r for r in new if key(r) in fresh]


def family_rows(family: str, minutes: float, n: int, out: Path, sides: tuple[str, ...], images, text) -> list[dict]:
    """The rows of ``family`` for ``sides`` (``peer``, ``suite`` or both), each trained for ``minutes``."""
    seconds = minutes * 60
    if family == "text":
        train, held_out = text
        run_side = {
            "peer": lambda: peer_text(train, held_out, seconds),
            "suite": lambda: suite_text(train, held_out, seconds, out),
        }
    else:
        peer = {"vae": peer_vae, "gan": peer_gan, "diffusion": peer_diffusion}[family]

        def peer_side() -> dict:
            npz = out / f"peer-{family}.npz"
            return peer(images, seconds, n, npz) | score_samples(npz, n)

        def suite_side() -> dict:
            result = suite_images(family, seconds, n, out)
            return result | score_samples(result.pop("npz"), n)

        run_side = {"peer": peer_side, "suite": suite_side}
    names = {"peer": PEER_NAME[family], "suite": f"model={SUITE_MODEL[family]}"}
    return [{"family": family, "side": side, "implementation": names[side]} | run_side[side]() for side in sides]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes-scale", type=float, default=1.0, help="multiplies every budget (0.02: a smoke run)")
    parser.add_argument("--only", default=",".join(BUDGET_MINUTES), help="families, comma-separated")
    parser.add_argument("--samples", type=int, default=2000, help="samples per image row (eval.py's N)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "peers")
    parser.add_argument("--suite", action=argparse.BooleanOptionalAction, default=True, help="the suite's rows")
    parser.add_argument("--peer", action=argparse.BooleanOptionalAction, default=True, help="the peers' rows")
    args, _ = parser.parse_known_args(argv)
    families = [f.strip() for f in args.only.split(",") if f.strip()]
    unknown = sorted(set(families) - set(BUDGET_MINUTES))
    if unknown:
        raise SystemExit(f"--only: unknown {', '.join(unknown)}; choose from {', '.join(BUDGET_MINUTES)}")
    sides = tuple(side for side in ("peer", "suite") if getattr(args, side))
    if not sides:
        raise SystemExit("--no-peer and --no-suite together leave nothing to run")
    if args.samples < 2:
        raise SystemExit(f"--samples must be >= 2, got {args.samples}")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    print(f"machine {machine()}; budgets x{args.minutes_scale}; {args.samples} samples; out {out}\n", flush=True)
    images = train_images() if set(families) - {"text"} else None
    text = pydoc_split() if "text" in families else None
    earlier = read_rows(out / "peers.csv")  # rows of families and sides not run now are kept
    rows = []
    for family in families:
        minutes = BUDGET_MINUTES[family] * args.minutes_scale
        print(f"{family}: {minutes:.3g} min of training per side", flush=True)
        new = family_rows(family, minutes, args.samples, out, sides, images, text)
        rows += new
        write_tables(merged(earlier, rows), out)  # after every family: a stopped run keeps what finished
        print("\n".join(render(new).splitlines()[2:]), flush=True)
    md, path_csv = write_tables(merged(earlier, rows), out)
    print("\n" + render(merged(earlier, rows)) + f"\n\n{md}\n{path_csv}")


if __name__ == "__main__":
    main()
