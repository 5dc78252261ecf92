"""The peers: one recipe per family, each the library's documented example sized for a CPU budget.

A recipe is a dict: ``name``; ``settings`` (the authors' values, sized as `SOURCES` says); ``lr`` (the settings
keys a learning-rate trial scales) and ``lr_factors`` (the two trials' factors); ``knob`` (the family-specific
trial: settings it changes); ``variants`` (ways to sample the same trained weights; the first is the recipe's own);
``train`` (``train(settings, data, seconds, seed) -> (facts, sampler)``). For images ``sampler(variant, n, seed)``
returns float ``(n, 1, 28, 28)`` in [0, 1]; for text it is ``nats_of(windows (B, T)) -> (B, T)``.
"""

from __future__ import annotations

import functools
import importlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.peers.measure import CONTEXT, batches, n_params, train_for

# Each setting, where it comes from: a file of the library (as installed, or its repository) or a paper section.
SOURCES = {
    "vae": {
        "VAE + Encoder_Conv_VAE_MNIST + Decoder_Conv_AE_MNIST": "pythae examples/scripts/training.py (--dataset mnist,"
        " --nn convnet, the default) and README 'Define you own Autoencoder architecture'",
        "latent_dim 16, reconstruction_loss mse": "pythae examples/scripts/configs/mnist/vae_config.json",
        "Adam (BaseTrainerConfig optimizer_cls), lr 1e-3, batch 100": "pythae examples/scripts/configs/mnist/"
        "base_training_config.json (learning_rate, per_device_train_batch_size); README 'Launching a model training'",
        "sampler normal (N(0, I))": "pythae.samplers.NormalSampler, README 'Using the Samplers'",
        "sampler gmm (10 components, fit on the train images)": "pythae.samplers.GaussianMixtureSampler, "
        "GaussianMixtureSamplerConfig(n_components=10), README 'Using the Samplers'",
    },
    "gan": {
        "nets: strided (transposed) convs, batchnorm (none on D's input), ReLU in G, LeakyReLU 0.2 in D, tanh out": (
            "Radford et al. 2016 (arXiv:1511.06434) section 3 'architecture guidelines'; pytorch/examples "
            "dcgan/main.py (_netG, _netD), two stride-2 layers instead of four at 28x28"
        ),
        "z 100, width (ngf = ndf) 64, init N(0, 0.02), batchnorm scale N(1, 0.02)": "pytorch/examples dcgan/main.py "
        "(--nz, --ngf, --ndf, weights_init); paper section 4",
        "Adam lr 2e-4, betas (0.5, 0.999), batch 128, non-saturating G loss": "paper section 4 (batch 128; the "
        "example's default is 64); dcgan/main.py (--lr, --beta1, label real for G)",
        "EMA of G (variant ema)": "not in the recipe: the suite's technique (its GAN preset: decay 0.995 from "
        "step 100), added in a line (torch.optim.swa_utils)",
    },
    "diffusion": {
        "Unet(dim, dim_mults=(1, 2, 4)), GaussianDiffusion(timesteps=1000)": "README 'Usage' (Unet(dim=64, "
        "dim_mults=(1, 2, 4, 8))): 28 px allows two halvings, so (1, 2, 4); dim 16 gives the suite's UNet size "
        "(0.72 M); the width trial tries dim 32",
        "objective pred_v, sigmoid beta schedule": "GaussianDiffusion's defaults (denoising_diffusion_pytorch.py)",
        "Adam lr 8e-5, batch 32 x gradient_accumulate_every 2, EMA 0.995": "README 'Usage' Trainer example "
        "(train_lr, train_batch_size, gradient_accumulate_every, ema_decay)",
        "betas (0.9, 0.99), max_grad_norm 1, EMA every 10 steps (ema-pytorch warm-up)": "Trainer's defaults "
        "(adam_betas, max_grad_norm, ema_update_every); ema_pytorch.EMA",
        "sampler DDIM-50, eta 0 (variant eta0)": "README Trainer example: sampling_timesteps < timesteps 'using "
        "ddim for faster inference', ddim_sampling_eta default 0; the default DDPM-1000 is out of reach here "
        "(see DIFFUSION_STEPS)",
        "sampler DDIM-50, eta 1 (variant eta1)": "GaussianDiffusion(ddim_sampling_eta=1): fresh noise every step, "
        "the stochastic kind that wins on a briefly trained model in the suite's sampler table",
        "no horizontal flips": "the Trainer's augment_horizontal_flip=True is for photos; digits are not symmetric",
    },
    "text": {
        "TransformerWrapper(Decoder) + AutoregressiveWrapper, bytes": "README 'Decoder-only (GPT-like)'; "
        "train_enwik8.py",
        "rotary_pos_emb=True": "README 'Rotary Positional Embeddings' ('highly recommend ... whenever you are "
        "working on an ordered sequence'); train_enwik8.py",
        "Adam lr 1e-4, clip_grad_norm 0.5": "train_enwik8.py (LEARNING_RATE, clip_grad_norm_)",
        "width 256, depth 4, heads 4 (dim_head 64, the library default)": "train_enwik8.py's 512 x 6 x 8 shrunk "
        "for a CPU budget, as the independently run 4 x 256 of issue 27; the width trial tries 128",
        "batch 32 windows of 256 bytes (8 k tokens a step)": "train_enwik8.py steps 16 k tokens (4 x 1024, "
        "accumulated 4 times); halved to the suite's batch so that the budget buys twice the steps",
        "suite recipe (protocol b)": "the suite's composed model=transformer data=text config: width, depth, heads, "
        "dropout, AdamW, warm-up + cosine over the clock, gradient clipping, batch (read at run time)",
    },
}

DIFFUSION_STEPS = 50  # DDIM steps: the library's DDPM-1000 costs ~20x this (measured: see the module docstring)


def need(module: str, package: str):
    """``import module``, or stop with one line naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise SystemExit(f"benchmarks.peers needs {package}: pip install .[peers]") from None


def update(opt: torch.optim.Optimizer, loss: torch.Tensor, params=None, clip: float | None = None) -> None:
    """One optimiser step on ``loss``, the gradient norm of ``params`` clipped to ``clip`` first if given."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip:
        nn.utils.clip_grad_norm_(params, clip)
    opt.step()


# -- vae: pythae ----------------------------------------------------------------------------------------------
def train_pythae(settings: dict, images: torch.Tensor, seconds: float, seed: int):
    pythae = need("pythae.models", "pythae")
    nets = need("pythae.models.nn.benchmarks.mnist", "pythae")
    samplers = need("pythae.samplers", "pythae")
    torch.manual_seed(seed)
    config = pythae.VAEConfig(
        input_dim=(1, 28, 28), latent_dim=settings["latent_dim"], reconstruction_loss=settings["loss"]
    )
    model = pythae.VAE(config, encoder=nets.Encoder_Conv_VAE_MNIST(config), decoder=nets.Decoder_Conv_AE_MNIST(config))
    opt = torch.optim.Adam(model.parameters(), lr=settings["lr"])
    data = batches(images, settings["batch"], seed)
    model.train()
    steps, spent = train_for(seconds, lambda _: update(opt, model({"data": next(data)}).loss))
    model.eval()

    def sample(variant: str, n: int, seed: int) -> torch.Tensor:
        torch.manual_seed(seed), np.random.seed(seed)  # NormalSampler draws from torch, the mixture from numpy
        if variant == "gmm":
            sampler = samplers.GaussianMixtureSampler(model, samplers.GaussianMixtureSamplerConfig(n_components=10))
            sampler.fit(images)  # the mixture is fitted with the sampling: off the clock, in the seconds per image
        else:
            sampler = samplers.NormalSampler(model)
        with torch.no_grad():
            return sampler.sample(num_samples=n, batch_size=500, return_gen=True)  # Bernoulli means in [0, 1]

    return {"steps": steps, "train_s": spent, "parameters": n_params(model)}, sample


PYTHAE = {
    "name": "pythae VAE (MNIST convnets)",
    "settings": {"lr": 1e-3, "batch": 100, "latent_dim": 16, "loss": "mse"},
    "lr": ("lr",),
    "lr_factors": (1 / 3, 3),
    "knob": {"loss": "bce"},  # the Bernoulli likelihood that the suite's VAE uses
    "variants": ("normal", "gmm"),
    "train": train_pythae,
}


# -- gan: the DCGAN recipe ------------------------------------------------------------------------------------
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


def train_dcgan(settings: dict, images: torch.Tensor, seconds: float, seed: int):
    torch.manual_seed(seed)
    g, d = DCGenerator(width=settings["width"]), DCDiscriminator(width=settings["width"])
    g.apply(dcgan_init), d.apply(dcgan_init)
    ema = torch.optim.swa_utils.AveragedModel(
        g, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(settings["ema_decay"]), use_buffers=True
    )
    opt_g = torch.optim.Adam(g.parameters(), lr=settings["lr"], betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=settings["lr"], betas=(0.5, 0.999))
    data = batches(images * 2 - 1, settings["batch"], seed)  # tanh range
    g.train(), d.train()
    done = 0

    def step(_):
        nonlocal done
        real = next(data)
        fake = g(torch.randn(len(real), g.z_dim))
        ones, zeros = torch.ones(len(real)), torch.zeros(len(real))
        loss_d = F.binary_cross_entropy_with_logits(d(real), ones)
        update(opt_d, loss_d + F.binary_cross_entropy_with_logits(d(fake.detach()), zeros))
        update(opt_g, F.binary_cross_entropy_with_logits(d(fake), ones))  # -log D(G(z)): the non-saturating loss
        done += 1
        if done >= settings["ema_start"]:  # before it, the average follows the weights (as the suite's EMA)
            ema.update_parameters(g)
        else:
            ema.module.load_state_dict(g.state_dict())

    steps, spent = train_for(seconds, step)
    nets = {"raw": g.eval(), "ema": ema.module.eval()}

    def sample(variant: str, n: int, seed: int) -> torch.Tensor:
        z = torch.randn(n, g.z_dim, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            return torch.cat([nets[variant](c) for c in z.split(500)]).add(1).div(2)

    return {"steps": steps, "train_s": spent, "parameters": n_params(g) + n_params(d)}, sample


DCGAN = {
    "name": "DCGAN recipe (plain PyTorch)",
    "settings": {"lr": 2e-4, "batch": 128, "width": 64, "ema_decay": 0.995, "ema_start": 100},
    "lr": ("lr",),
    "lr_factors": (1 / 3, 3),
    "knob": {"width": 32},  # half the width: twice the steps in the budget
    "variants": ("raw", "ema"),
    "train": train_dcgan,
}


# -- diffusion: denoising-diffusion-pytorch -------------------------------------------------------------------
def train_ddpm(settings: dict, images: torch.Tensor, seconds: float, seed: int):
    ddpm = need("denoising_diffusion_pytorch", "denoising-diffusion-pytorch")
    lib = importlib.import_module("denoising_diffusion_pytorch.denoising_diffusion_pytorch")
    if not isinstance(lib.tqdm, functools.partial):  # its sampling loop's progress bar: a line a step in the log
        lib.tqdm = functools.partial(lib.tqdm, disable=True)
    ema_pytorch = need("ema_pytorch", "denoising-diffusion-pytorch")
    torch.manual_seed(seed)
    unet = ddpm.Unet(dim=settings["dim"], dim_mults=(1, 2, 4), channels=1, flash_attn=False)
    diffusion = ddpm.GaussianDiffusion(unet, image_size=28, timesteps=1000)
    ema = ema_pytorch.EMA(diffusion, beta=settings["ema_decay"], update_every=10)
    opt = torch.optim.Adam(diffusion.parameters(), lr=settings["lr"], betas=(0.9, 0.99))
    data = batches(images, settings["batch"], seed)  # [0, 1]: GaussianDiffusion maps to [-1, 1] itself
    accumulate = settings["accumulate"]
    diffusion.train()

    def step(_):  # the Trainer's step: accumulated gradients, clipped norm, Adam, EMA
        for _ in range(accumulate):
            (diffusion(next(data)) / accumulate).backward()
        nn.utils.clip_grad_norm_(diffusion.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.update()

    steps, spent = train_for(seconds, step)
    trained = ema.ema_model.model if settings["ema"] else unet

    def sample(variant: str, n: int, seed: int) -> torch.Tensor:
        eta = {"eta0": 0.0, "eta1": 1.0}[variant]
        sampler = ddpm.GaussianDiffusion(
            trained, image_size=28, timesteps=1000, sampling_timesteps=DIFFUSION_STEPS, ddim_sampling_eta=eta
        ).eval()  # the same schedule (its defaults) around the trained network, with this sampler
        torch.manual_seed(seed)
        with torch.no_grad():
            return torch.cat([sampler.sample(batch_size=len(c)) for c in torch.arange(n).split(100)])

    return {"steps": steps, "train_s": spent, "parameters": n_params(unet)}, sample


DDPM = {
    "name": f"denoising-diffusion-pytorch (DDIM-{DIFFUSION_STEPS})",
    "settings": {"lr": 8e-5, "batch": 32, "accumulate": 2, "dim": 16, "ema": True, "ema_decay": 0.995},
    "lr": ("lr",),
    "lr_factors": (3, 10),  # the README's rate is for 700k steps; a budget of minutes wants more
    "knob": {"ema": False},  # sample the raw weights: the Trainer's EMA averages most of so short a run
    "variants": ("eta0", "eta1"),
    "train": train_ddpm,
}


# -- text: x-transformers -------------------------------------------------------------------------------------
BOS = 256  # the start token: 256 byte values + 1


def train_xtransformers(settings: dict, splits: dict[str, bytes], seconds: float, seed: int):
    """A byte-level decoder trained on windows of the ``fit`` bytes with a start token in front, as the suite's
    transformer sees them. ``settings["recipe"]``: ``authors`` (Adam, constant rate) or ``suite`` (AdamW with decay
    on the linear layers' matrices, the suite's warm-up + cosine over the clock)."""
    xt = need("x_transformers", "x-transformers")
    torch.manual_seed(seed)
    width, heads, p = settings["width"], settings["heads"], settings.get("dropout", 0.0)
    layers = xt.Decoder(
        dim=width, depth=settings["depth"], heads=heads, rotary_pos_emb=True, ff_dropout=p,
        **({"attn_dim_head": settings["dim_head"]} if "dim_head" in settings else {}),
    )  # fmt: skip
    # AutoregressiveWrapper runs the whole (start + window) sequence and drops the last position: one more position
    net = xt.TransformerWrapper(
        num_tokens=BOS + 1, max_seq_len=CONTEXT + 1, attn_layers=layers, emb_dropout=p,
        tie_embedding=settings.get("tie_embedding", False),
    )  # fmt: skip
    model = xt.AutoregressiveWrapper(net)
    schedule = None
    if settings["recipe"] == "suite":
        from gensuite.families.lr_schedules import warmup_cosine

        decay = [m.weight for m in net.modules() if isinstance(m, nn.Linear)]
        rest = [q for q in net.parameters() if all(q is not w for w in decay)]
        groups = [{"params": decay, "weight_decay": settings["weight_decay"]}, {"params": rest, "weight_decay": 0.0}]
        opt = torch.optim.AdamW(groups, lr=settings["lr"], betas=tuple(settings["betas"]))
        spent = [0.0]
        schedule = warmup_cosine(opt, settings["warmup_steps"], None, settings["min_lr_ratio"], lambda: spent[0])
    else:
        opt = torch.optim.Adam(model.parameters(), lr=settings["lr"])
    data = torch.frombuffer(bytearray(splits["fit"]), dtype=torch.uint8).long()
    g = torch.Generator().manual_seed(seed)
    model.train()

    def step(fraction: float):
        starts = torch.randint(0, len(data) - CONTEXT, (settings["batch"],), generator=g)
        windows = torch.stack([data[s : s + CONTEXT] for s in starts.tolist()])  # (B, T)
        loss = model(torch.cat([torch.full_like(windows[:, :1], BOS), windows], 1))  # predicts every window byte
        update(opt, loss, model.parameters(), settings["clip"])
        if schedule is not None:
            spent[0] = fraction
            schedule.step()

    steps, spent_s = train_for(seconds, step)
    net.eval()

    def nats_of(windows: torch.Tensor) -> torch.Tensor:
        inputs = torch.cat([torch.full_like(windows[:, :1], BOS), windows[:, :-1]], 1)  # (B, T)
        logits = net(inputs)  # (B, T, 257)
        return F.cross_entropy(logits.flatten(0, 1), windows.flatten(), reduction="none").view_as(windows)

    return {"steps": steps, "train_s": spent_s, "parameters": n_params(net)}, nats_of


XTRANSFORMERS = {
    "name": "x-transformers decoder (rotary)",
    "settings": {"recipe": "authors", "width": 256, "depth": 4, "heads": 4, "lr": 1e-4, "batch": 32, "clip": 0.5},
    "lr": ("lr",),
    "lr_factors": (3, 10),  # train_enwik8.py's rate is for 100k steps; a budget of minutes wants more
    "knob": {"width": 128},
    "variants": ("-",),
    "train": train_xtransformers,
}


def xtransformers_suite_recipe(cfg) -> dict:
    """Protocol (b): x-transformers built and trained with the suite's recipe, read from its composed config
    ``cfg`` (``model=transformer data=text``): width, depth, heads (head size width / heads), dropout, tied
    embeddings, AdamW, warm-up + cosine over the clock, gradient clipping and batch."""
    net, opt, sched = cfg.model.net, cfg.model.optimizer, cfg.model.scheduler
    settings = {
        "recipe": "suite", "width": net.width, "depth": net.depth, "heads": net.heads,
        "dim_head": net.width // net.heads, "dropout": net.dropout, "tie_embedding": bool(net.tie_weights),
        "lr": opt.lr, "betas": list(opt.betas), "weight_decay": opt.weight_decay,
        "warmup_steps": sched.warmup_steps, "min_lr_ratio": sched.min_lr_ratio,
        "clip": cfg.trainer.gradient_clip_val, "batch": cfg.data.batch_size,
    }  # fmt: skip
    return XTRANSFORMERS | {"name": "x-transformers decoder, the suite's recipe", "settings": settings}


PEERS = {"vae": PYTHAE, "gan": DCGAN, "diffusion": DDPM, "text": XTRANSFORMERS}
