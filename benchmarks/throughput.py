"""Side by side at equal size, one process: the suite's networks against the implementations users would pick.

    python -m benchmarks.throughput                                  # CPU: the small sizes, fp32 and bf16
    nice python -m benchmarks.throughput --only unet gpt --variants fp32 --steps 10 --repeats 7   # CPU ratios
    python -m benchmarks.throughput --device cuda --size cifar --batch 128   # the published CIFAR-10 sizes
    python -m benchmarks.throughput --only unet --variants fp32 bf16 channels_last compile --json out.json

Rows (printed as markdown tables; nothing is asserted):

- **UNet training step**: the suite's `gensuite.nets.unet.UNet` against diffusers' `UNet2DModel` configured to the
  same layout (the same parameter count at ``--size small``, 2.41 M; within 5 % at ``--size cifar``, the DDPM
  CIFAR-10 network: base 128, multipliers 1-2-2-2, 2 residual blocks, attention at 16x16, dropout 0.1). Both run
  the same step: ε-prediction MSE at random steps, Adam, the same batch and precision. steps/s, images/s, peak
  memory, FLOPs per step (`torch.utils.flop_counter`), achieved TFLOP/s and, on a GPU, the share of the card's bf16
  peak (MFU).
- **Sampler**: SDE-DPM-Solver++(2M), 20 steps, on the same UNet weights: the suite's `DPMSolverSDE` against
  diffusers' `DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++")` loop. images/s. Speed does not
  depend on the weights, so they are random.
- **GPT training step**: the suite's `Transformer` against a plain PyTorch GPT written below (learned positions,
  fused qkv, SDPA, GELU MLP, tied head: the nanoGPT layout) of the same width/depth/heads, tokens/s; and the suite's
  KV-cached sampling, tokens/s at 1 and 64 sequences.
- **Variants** for the UNet and the GPT: fp32 (TF32 matmuls on a GPU), bf16 autocast, channels_last (UNet),
  ``torch.compile`` (the suite's networks only: compiling the references costs minutes and says nothing of ours).
  On a CPU without bf16 in hardware (no AVX512-BF16 or AMX) the bf16 rows measure an emulation: read fp32 there.

**Timing.** Both sides of a pair are built in this process and timed in turns: ``--repeats`` rounds (default 5),
each side ``--steps`` steps per round (default 10 on a CPU, about 3 s of the UNet, 20 on a GPU) after one untimed
step, so that a change of the machine's load falls on both. Each row prints the median rate over the rounds, its
min and max and their spread (max / min - 1); ``suite / ref`` is the ratio of the medians and ``ratio range`` the
lowest and highest ratio of one round's back-to-back pair. The load average is printed before and after each
section. On a machine shared with other jobs the spread says whether the figures can be trusted: torch's threads
wait for each other at every operator, so a thread that the scheduler parks stalls the step (``--threads 1`` is
steadier there, and is not the default).

**Peak memory** (``peak GiB``) is each implementation's alone, never with the other's network and optimiser
resident: on a CPU in a fresh process (the imports, then the peak RSS over building the network and its first
``1 + --mem-steps`` steps, less the RSS after the imports; the reference library is imported on both sides); on
CUDA in this process before the pair is built, ``torch.cuda.max_memory_allocated`` over the same steps (a
compiled suite network, built alone, is measured in its timing build).

Reference libraries are benchmark-only extras: ``pip install .[bench]``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import machine, spread, table
from gensuite.diffusion.samplers import DPMSolverSDE
from gensuite.diffusion.schedules import LinearSchedule
from gensuite.nets.transformer import Transformer
from gensuite.nets.unet import UNet

# bf16 dense peak of the card, TFLOP/s (vendor datasheets), for the MFU column
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "4090": 165.0}

SIZES = {
    # the DDPM CIFAR-10 UNet (Ho et al. 2020, appendix B) and a GPT of ImageGPT-small width over 8-bit pixels
    "cifar": {"unet": dict(base=128, mults=(1, 2, 2, 2), blocks=2, attn=(1,), image=32, channels=3),
              "gpt": dict(width=512, depth=12, heads=8, context=1024, vocab=256)},
    # CPU-sized: the same layouts, narrower and shorter
    "small": {"unet": dict(base=32, mults=(1, 2, 2, 2), blocks=2, attn=(1,), image=32, channels=3),
              "gpt": dict(width=256, depth=4, heads=4, context=256, vocab=256)},
}  # fmt: skip


# -- the networks --------------------------------------------------------------------------------------------
def suite_unet(s: dict) -> nn.Module:
    return UNet(
        in_channels=s["channels"],
        image_size=s["image"],
        base_width=s["base"],
        channel_mults=list(s["mults"]),
        num_res_blocks=s["blocks"],
        attention_levels=list(s["attn"]),
        dropout=0.1,
        num_heads=1,
    )


def diffusers_unet(s: dict) -> nn.Module:
    """diffusers' UNet2DModel in the same layout, returning a plain tensor like the suite's."""
    from diffusers import UNet2DModel

    attn = {a % len(s["mults"]) for a in s["attn"]}
    down = tuple("AttnDownBlock2D" if i in attn else "DownBlock2D" for i in range(len(s["mults"])))
    up = tuple("AttnUpBlock2D" if i in attn else "UpBlock2D" for i in reversed(range(len(s["mults"]))))
    widths = tuple(s["base"] * m for m in s["mults"])
    net = UNet2DModel(
        sample_size=s["image"],
        in_channels=s["channels"],
        out_channels=s["channels"],
        layers_per_block=s["blocks"],
        block_out_channels=widths,
        down_block_types=down,
        up_block_types=up,
        dropout=0.1,
        attention_head_dim=max(widths),  # one head, as the suite's
        norm_num_groups=min(32, s["base"] // 4),
        resnet_time_scale_shift="scale_shift",  # the suite's (ADM) modulation
    )

    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x, t, y=None):
            return self.net(x, t).sample

    return Plain()


class PlainGPT(nn.Module):
    """A GPT as people write it by hand (nanoGPT's layout): learned positions, pre-norm blocks, fused qkv,
    causal SDPA, GELU MLP, tied output layer. The reference of the suite's `Transformer`."""

    def __init__(self, vocab: int, context: int, width: int, depth: int, heads: int):
        super().__init__()
        self.heads = heads
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(context, width)
        self.blocks = nn.ModuleList(
            nn.ModuleDict(
                {
                    "ln1": nn.LayerNorm(width),
                    "qkv": nn.Linear(width, 3 * width),
                    "proj": nn.Linear(width, width),
                    "ln2": nn.LayerNorm(width),
                    "fc": nn.Linear(width, 4 * width),
                    "out": nn.Linear(4 * width, width),
                }
            )
            for _ in range(depth)
        )
        self.ln_f = nn.LayerNorm(width)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        b, t = idx.shape
        x = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
        for blk in self.blocks:
            q, k, v = blk["qkv"](blk["ln1"](x)).view(b, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # 3x(B,h,T,d)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, -1)
            x = x + blk["proj"](y)
            x = x + blk["out"](F.gelu(blk["fc"](blk["ln2"](x))))
        return F.linear(self.ln_f(x), self.tok.weight)  # (B, T, V)


def suite_gpt(s: dict) -> nn.Module:
    # vocab - 1 real tokens + bos: the embedding table has the same `vocab` rows as the plain GPT's
    return Transformer(vocab_size=s["vocab"] - 1, context=s["context"], width=s["width"], depth=s["depth"],
                       heads=s["heads"], dropout=0.0, positions="rope", tie_weights=True, bias=False)  # fmt: skip


def params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def plain_gpt(s: dict) -> nn.Module:
    return PlainGPT(**s)


# each pair by name, the suite first: what a fresh process needs to build one side alone
PAIRS = {
    "unet": {"suite UNet": suite_unet, "diffusers UNet2DModel": diffusers_unet},
    "gpt": {"suite Transformer": suite_gpt, "plain GPT": plain_gpt},
}


# -- steps ---------------------------------------------------------------------------------------------------
@dataclass
class Variant:
    name: str
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False


VARIANTS = {
    "fp32": Variant("fp32"),
    "bf16": Variant("bf16", bf16=True),
    "channels_last": Variant("bf16+channels_last", bf16=True, channels_last=True),
    "compile": Variant("bf16+compile", bf16=True, compile=True),
}


def autocast(device: str, on: bool):
    return torch.autocast(device, dtype=torch.bfloat16) if on else contextlib.nullcontext()


def unet_step_fn(net: nn.Module, batch: int, s: dict, device: str, v: Variant) -> Callable[[], None]:
    """One ε-prediction training step (DDPM eq. 14) with Adam; the data are fixed random images."""
    gen = torch.Generator(device=device).manual_seed(0)
    x0 = torch.randn(batch, s["channels"], s["image"], s["image"], device=device, generator=gen)
    noise = torch.randn(x0.shape, device=device, generator=gen)
    t = torch.randint(0, 1000, (batch,), device=device, generator=gen)
    sched = LinearSchedule(1000)
    x_t = sched.q_sample(x0, t, noise)
    if v.channels_last:
        net = net.to(memory_format=torch.channels_last)
        x_t = x_t.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    fwd = torch.compile(net) if v.compile else net

    def step():
        with autocast(device, v.bf16):
            loss = F.mse_loss(fwd(x_t, t).float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def gpt_step_fn(net: nn.Module, batch: int, s: dict, device: str, v: Variant) -> Callable[[], None]:
    gen = torch.Generator(device=device).manual_seed(0)
    tokens = torch.randint(0, s["vocab"] - 1, (batch, s["context"] + 1), device=device, generator=gen)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-4)
    fwd = torch.compile(net) if v.compile else net

    def step():
        with autocast(device, v.bf16):
            logits = fwd(tokens[:, :-1])
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


STEP_FNS = {"unet": unet_step_fn, "gpt": gpt_step_fn}


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_steps(step: Callable[[], None], n: int, device: str, warmup: int = 1) -> float:
    """Seconds per call of ``step`` (mean of ``n`` after ``warmup``)."""
    for _ in range(warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    sync(device)
    return (time.perf_counter() - t0) / n


def alternate(
    fns: dict[str, Callable[[], None]], n: int, device: str, repeats: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Seconds per call of each function, ``repeats`` rounds of ``n`` calls each (after ``warmup`` calls), the
    functions taking turns within a round, so that a change of the machine's load falls on both sides of a pair."""
    secs: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            secs[k].append(time_steps(fn, n, device, warmup))
    return secs


def rate_names(name: str) -> list[str]:
    return [name, f"{name} min", f"{name} max", "spread %"]


def rate_columns(secs: list[float], unit: float, name: str) -> dict:
    """The row's rate columns from the seconds per call of each repeat: median, min and max rate, spread."""
    st = spread([unit / x for x in secs])
    return dict(zip(rate_names(name), (st["median"], st["min"], st["max"], 100 * st["spread"]), strict=True))


def add_ratio(rows: list[dict], suite: list[float], ref: list[float]) -> None:
    """On the suite's row (``rows[0]``): the ratio of the median rates, and the range of the per-round ratios (the
    two sides of one round ran back to back, under the same load)."""
    paired = spread([r / s for s, r in zip(suite, ref, strict=True)])  # suite rate / ref rate = ref s / suite s
    rows[0]["suite / ref"] = spread(ref)["median"] / spread(suite)["median"]
    rows[0]["ratio range"] = f"{paired['min']:.3f}-{paired['max']:.3f}"


def _status_bytes(key: str) -> int:
    """A size from ``/proc/self/status`` (Linux), e.g. ``VmRSS`` (resident now) or ``VmHWM`` (its peak)."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(key + ":"))
    return int(line.split()[1]) * 1024  # kB


def reset_peak_rss() -> int:
    """Resets this process's peak RSS to its current RSS (Linux: ``/proc/self/clear_refs``); returns that RSS in
    bytes. ``getrusage``'s ``ru_maxrss`` cannot serve here: in a process started by another it begins at the
    starter's peak (the kernel carries the high-water mark across ``exec``), and it never falls."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_bytes("VmRSS")


def _peak_alone(section: str, impl: str, s: dict, batch: int, device: str, v: Variant, steps: int, threads: int):
    """Peak memory (GiB) of one implementation's first training step and ``steps`` more, with nothing else of the
    benchmark built: on CUDA ``max_memory_allocated`` over the steps (less what was allocated before), on a CPU the
    peak RSS over the build and the steps (``VmHWM``), less the RSS after the imports."""
    torch.set_num_threads(threads)
    if device == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        with contextlib.suppress(ImportError):  # the reference library's import belongs to the baseline
            from diffusers import UNet2DModel  # noqa: F401
        base = reset_peak_rss()
    torch.manual_seed(0)
    fn = STEP_FNS[section](PAIRS[section][impl](s).to(device), batch, s, device, v)
    for _ in range(1 + steps):
        fn()
    sync(device)
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else _status_bytes("VmHWM")
    return (peak - base) / 2**30


def peak_alone(section: str, impl: str, s: dict, batch: int, device: str, v: Variant, steps: int) -> float:
    """`_peak_alone` in this process on CUDA (the caller has built nothing else, so the allocator's counters are
    this implementation's alone), in a fresh process on a CPU (a process's RSS holds all it ran before)."""
    args = (section, impl, s, batch, device, v, steps, torch.get_num_threads())
    if device == "cuda":
        return _peak_alone(*args)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_peak_alone, *args).result()


def flops_of(step: Callable[[], None]) -> int:
    """FLOPs of one call (forward, backward and optimiser matmuls/convs), counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return counter.get_total_flops()


def peak_tflops(device: str) -> float | None:
    if device != "cuda":
        return None
    name = torch.cuda.get_device_name(0)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def measure_pair(section: str, args, s: dict, batch: int, v: Variant, unit: float) -> list[dict]:
    """One row per implementation of ``PAIRS[section]``: its peak memory measured alone (`peak_alone`), then both
    built and timed alternately, ``args.repeats`` rounds of ``args.steps`` steps."""
    device = args.device
    # torch.compile of the reference costs minutes of compilation and says nothing about the suite: suite only
    names = list(PAIRS[section])[: 1 if v.compile else None]
    mem = {}
    if device != "cuda" or len(names) > 1:  # a compiled suite alone on CUDA: measured below, without compiling twice
        mem = {n: peak_alone(section, n, s, batch, device, v, args.mem_steps) for n in names}
    built = {}
    for name in names:
        measure_here = name not in mem  # the compiled suite network on CUDA, the only one built
        if measure_here:
            gc.collect()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        torch.manual_seed(0)
        net = PAIRS[section][name](s).to(device)
        fn = STEP_FNS[section](net, batch, s, device, v)
        for _ in range(1 + (args.mem_steps if measure_here else 0)):
            fn()  # the first call: compilation, allocator warm-up
        sync(device)
        if measure_here:
            mem[name] = (torch.cuda.max_memory_allocated() - base) / 2**30
        flops = flops_of(fn) if not v.compile else None
        built[name] = (net, fn, flops)
    secs = alternate({name: fn for name, (_, fn, _) in built.items()}, args.steps, device, args.repeats)
    peak = peak_tflops(device)
    rows = []
    for name, (net, _, flops) in built.items():
        sec = spread(secs[name])["median"]
        row = {"impl": name, "variant": v.name, "params M": params(net) / 1e6, **rate_columns(secs[name], 1, "steps/s"),
               "items/s": unit / sec, "peak GiB": mem[name]}  # fmt: skip
        if flops:
            row["GFLOP/step"] = flops / 1e9
            row["TFLOP/s"] = flops / sec / 1e12
            if peak:
                row["MFU %"] = 100 * flops / sec / 1e12 / peak
        rows.append(row)
    if len(names) == 2:
        add_ratio(rows, *secs.values())
    return rows


# -- sections ------------------------------------------------------------------------------------------------
def bench_unet(args, s: dict) -> list[dict]:
    keys = args.variants
    return [row for key in keys for row in measure_pair("unet", args, s, args.batch, VARIANTS[key], args.batch)]


def bench_gpt(args, s: dict) -> list[dict]:
    unit = args.gpt_batch * s["context"]
    keys = [k for k in args.variants if k != "channels_last"]
    return [row for key in keys for row in measure_pair("gpt", args, s, args.gpt_batch, VARIANTS[key], unit)]


def bench_sampler(args, s: dict) -> list[dict]:
    """SDE-DPM-Solver++(2M), 20 steps, batch ``args.sample_batch``, on the same network, bf16 autocast on a GPU."""
    from diffusers import DPMSolverMultistepScheduler

    device = args.device
    torch.manual_seed(0)
    net = suite_unet(s).to(device).eval()
    sched = LinearSchedule(1000)
    shape = (args.sample_batch, s["channels"], s["image"], s["image"])
    bf16 = device == "cuda"

    def eps(x, t):
        with torch.no_grad(), autocast(device, bf16):
            return net(x, t).float()

    def suite_run():
        gen = torch.Generator(device=device).manual_seed(0)
        x = torch.randn(shape, device=device, generator=gen)

        def denoise(x_t, t):
            return sched.predict_x0(eps(x_t, t), x_t, t, "eps").clamp(-1, 1)

        return DPMSolverSDE(steps=20)(denoise, sched, x, generator=gen)

    ref = DPMSolverMultistepScheduler(
        num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
        algorithm_type="sde-dpmsolver++", solver_order=2, thresholding=False,
    )  # fmt: skip

    @torch.no_grad()
    def diffusers_run():
        gen = torch.Generator(device=device).manual_seed(0)
        x = torch.randn(shape, device=device, generator=gen)
        ref.set_timesteps(20, device=device)
        for t in ref.timesteps:
            out = eps(x, t.expand(shape[0]))
            x = ref.step(out, t, x, generator=gen).prev_sample
        return x

    runs = {"suite DPMSolverSDE": suite_run, "diffusers DPMSolverMultistepScheduler": diffusers_run}
    for fn in runs.values():
        fn()  # warm-up
    secs = alternate(runs, 1, device, args.repeats, warmup=0)
    rows = [{"impl": k, "NFE": 20, "batch": shape[0], **rate_columns(v, shape[0], "images/s")} for k, v in secs.items()]
    add_ratio(rows, *secs.values())
    return rows


def bench_kv(args, s: dict) -> list[dict]:
    """The suite's KV-cached sampling: tokens/s at 1 and 64 sequences (and without the cache at 1)."""
    device = args.device
    torch.manual_seed(0)
    net = suite_gpt(s).to(device).eval()
    length = min(s["context"] - 1, args.kv_tokens)
    rows = []
    for batch, cache in ((1, True), (64, True), (1, False)):

        def run(batch=batch, cache=cache):
            with autocast(device, device == "cuda"):
                net.generate(batch, length, generator=torch.Generator(device=device).manual_seed(0),
                             use_cache=cache)  # fmt: skip

        secs = alternate({"run": run}, 1, device, args.repeats)["run"]
        rows.append({"sequences": batch, "KV cache": cache, "tokens": length,
                     **rate_columns(secs, batch * length, "tokens/s")})  # fmt: skip
    return rows


COLUMNS = ["impl", "variant", "params M", *rate_names("steps/s"), "items/s", "suite / ref", "ratio range", "peak GiB",
           "GFLOP/step", "TFLOP/s", "MFU %"]  # fmt: skip


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", choices=list(SIZES), default=None, help="default: cifar on a GPU, small on CPU")
    parser.add_argument("--batch", type=int, default=None, help="UNet batch (default 128 GPU, 8 CPU)")
    parser.add_argument("--gpt-batch", type=int, default=None, help="GPT sequences per step (default 16 GPU, 4 CPU)")
    parser.add_argument("--sample-batch", type=int, default=None, help="sampler batch (default 256 GPU, 16 CPU)")
    parser.add_argument("--kv-tokens", type=int, default=256)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per repeat (default 20 GPU, 10 CPU)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds of alternating measurements (median, spread)")
    parser.add_argument("--mem-steps", type=int, default=2, help="steps after the first one in the memory process")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's, one per core)")
    parser.add_argument("--variants", nargs="+", default=None, choices=list(VARIANTS))
    parser.add_argument("--only", nargs="+", default=["unet", "sampler", "gpt", "kv"])
    parser.add_argument("--json", default=None, help="also write every row here")
    args, _ = parser.parse_known_args(argv if argv is not None else sys.argv[1:])
    gpu = args.device == "cuda"
    args.size = args.size or ("cifar" if gpu else "small")
    args.batch = args.batch or (128 if gpu else 8)
    args.gpt_batch = args.gpt_batch or (16 if gpu else 4)
    args.sample_batch = args.sample_batch or (256 if gpu else 16)
    args.steps = args.steps or (20 if gpu else 10)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.variants = args.variants or (["fp32", "bf16", "channels_last", "compile"] if gpu else ["fp32", "bf16"])
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 rows as people run them (TF32 matmuls)
        torch.backends.cudnn.allow_tf32 = True
    sizes = SIZES[args.size]
    where = torch.cuda.get_device_name(0) if gpu else machine()
    print(
        f"device: {where}; size={args.size}; batch {args.batch} (UNet), {args.gpt_batch} x "  # fmt: skip
        f"{sizes['gpt']['context']} tokens (GPT); {args.repeats} alternating repeats of {args.steps} steps (median "
        f"and range); load average {load()} (1, 5, 15 min)",
        flush=True,
    )
    out: dict[str, list[dict]] = {}
    sections = {"unet": ("UNet training step", lambda: bench_unet(args, sizes["unet"]), COLUMNS),
                "sampler": ("SDE-DPM-Solver++(2M), 20 steps", lambda: bench_sampler(args, sizes["unet"]),
                            ["impl", "NFE", "batch", *rate_names("images/s"), "suite / ref", "ratio range"]),
                "gpt": ("GPT training step (items = tokens)", lambda: bench_gpt(args, sizes["gpt"]), COLUMNS),
                "kv": ("Transformer sampling", lambda: bench_kv(args, sizes["gpt"]),
                       ["sequences", "KV cache", "tokens", *rate_names("tokens/s")])}  # fmt: skip
    loads = {}
    for key in args.only:
        title, run, cols = sections[key]
        before = load()
        try:
            rows = run()
        except Exception as err:  # a benchmark row that cannot run (e.g. compile without a compiler) is reported
            print(f"\n### {title}\n\nfailed: {type(err).__name__}: {err}\n", flush=True)
            continue
        out[key] = rows
        loads[key] = {"before": before, "after": load()}
        print(f"\n### {title}\n\n{table(rows, cols)}\n\nload average before / after: {before} / {load()}\n",
              flush=True)  # fmt: skip
        if args.json:  # after every section, so a run stopped by a time limit keeps what it measured
            with open(args.json, "w") as f:
                json.dump({"device": where, "args": vars(args), "load": loads, "rows": out}, f, indent=1, default=str)


if __name__ == "__main__":
    main()
