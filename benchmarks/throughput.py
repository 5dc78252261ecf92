"""Side by side at equal size, one process: the suite's networks against the implementations users would pick.

    python -m benchmarks.throughput                                  # CPU: the small sizes, fp32 and bf16
    python -m benchmarks.throughput --device cuda --size cifar --batch 128   # the published CIFAR-10 sizes
    python -m benchmarks.throughput --only unet --variants fp32 bf16 channels_last compile --json out.json

Rows (printed as markdown tables; nothing is asserted):

- **UNet training step**: the suite's `gensuite.nets.unet.UNet` against diffusers' `UNet2DModel` configured to the
  same layout (parameter counts printed; within 5 % at ``--size cifar``, the DDPM CIFAR-10 network: base 128,
  multipliers 1-2-2-2, 2 residual blocks, attention at 16x16, dropout 0.1). Both run the same step: ε-prediction
  MSE at random steps, Adam, the same batch and precision. steps/s, images/s, peak memory (GPU), FLOPs per step
  (`torch.utils.flop_counter`), achieved TFLOP/s and, on a GPU, the share of the card's bf16 peak (MFU).
- **Sampler**: SDE-DPM-Solver++(2M), 20 steps, on the same UNet weights: the suite's `DPMSolverSDE` against
  diffusers' `DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++")` loop. images/s. Speed does not
  depend on the weights, so they are random.
- **GPT training step**: the suite's `Transformer` against a plain PyTorch GPT written below (learned positions,
  fused qkv, SDPA, GELU MLP, tied head: the nanoGPT layout) of the same width/depth/heads, tokens/s; and the suite's
  KV-cached sampling, tokens/s at 1 and 64 sequences.
- **Variants** for the UNet and the GPT: fp32 (TF32 matmuls on a GPU), bf16 autocast, channels_last (UNet),
  ``torch.compile`` (the suite's networks only: compiling the references costs minutes and says nothing of ours).

Ratios are suite / reference measured back to back in this process (alternating, best of ``--repeats``), so a
shared machine slows both alike. Reference libraries are benchmark-only extras: ``pip install .[bench]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import machine, table
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


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_steps(step: Callable[[], None], n: int, device: str, warmup: int = 3) -> float:
    """Seconds per call of ``step`` (mean of ``n`` after ``warmup``)."""
    for _ in range(warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    sync(device)
    return (time.perf_counter() - t0) / n


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


def measure_pair(
    make: dict[str, Callable[[], nn.Module]],
    step_fn,
    batch: int,
    s: dict,
    device: str,
    v: Variant,
    steps: int,
    repeats: int,
    unit: float,
) -> list[dict]:
    """Each implementation's step built once, then timed alternately ``repeats`` times (best kept)."""
    built = {}
    # torch.compile of the reference costs minutes of compilation and says nothing about the suite: suite only
    for name, ctor in list(make.items())[: 1 if v.compile else None]:
        torch.manual_seed(0)
        net = ctor().to(device)
        fn = step_fn(net, batch, s, device, v)
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        fn()  # first call: compilation, allocator warm-up
        sync(device)
        mem = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
        flops = flops_of(fn) if not v.compile else None
        built[name] = (net, fn, mem, flops)
    best = {name: math.inf for name in built}
    for _ in range(repeats):
        for name, (_, fn, _, _) in built.items():
            best[name] = min(best[name], time_steps(fn, steps, device))
    peak = peak_tflops(device)
    rows = []
    for name, (net, _, mem, flops) in built.items():
        sec = best[name]
        row = {"impl": name, "variant": v.name, "params M": params(net) / 1e6, "steps/s": 1 / sec,
               "items/s": unit / sec, "peak GiB": mem}  # fmt: skip
        if flops:
            row["GFLOP/step"] = flops / 1e9
            row["TFLOP/s"] = flops / sec / 1e12
            if peak:
                row["MFU %"] = 100 * flops / sec / 1e12 / peak
        rows.append(row)
    return rows


# -- sections ------------------------------------------------------------------------------------------------
def bench_unet(args, s: dict) -> list[dict]:
    make = {"suite UNet": lambda: suite_unet(s), "diffusers UNet2DModel": lambda: diffusers_unet(s)}
    rows = []
    for key in args.variants:
        rows += measure_pair(make, unet_step_fn, args.batch, s, args.device, VARIANTS[key], args.steps,
                             args.repeats, unit=args.batch)  # fmt: skip
        add_ratio(rows, "suite UNet", "diffusers UNet2DModel")
    return rows


def bench_gpt(args, s: dict) -> list[dict]:
    make = {"suite Transformer": lambda: suite_gpt(s), "plain GPT": lambda: PlainGPT(**s)}
    rows = []
    for key in args.variants:
        if key == "channels_last":
            continue
        rows += measure_pair(make, gpt_step_fn, args.gpt_batch, s, args.device, VARIANTS[key], args.steps,
                             args.repeats, unit=args.gpt_batch * s["context"])  # fmt: skip
        add_ratio(rows, "suite Transformer", "plain GPT")
    return rows


def add_ratio(rows: list[dict], suite: str, ref: str) -> None:
    """``suite / ref`` on the suite's row of the last variant measured (nothing when the reference did not run)."""
    a, b = rows[-2:] if len(rows) > 1 else (None, None)
    if a is not None and a["impl"] == suite and b["impl"] == ref and a["variant"] == b["variant"]:
        a["suite / ref"] = a["steps/s"] / b["steps/s"]


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
    best = {k: math.inf for k in runs}
    for fn in runs.values():
        fn()  # warm-up
    for _ in range(args.repeats):
        for k, fn in runs.items():
            best[k] = min(best[k], time_steps(fn, 1, device, warmup=0))
    rows = [{"impl": k, "NFE": 20, "batch": shape[0], "images/s": shape[0] / v} for k, v in best.items()]
    rows[0]["suite / ref"] = rows[0]["images/s"] / rows[1]["images/s"]
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

        sec = min(time_steps(run, 1, device, warmup=1) for _ in range(args.repeats))
        rows.append({"sequences": batch, "KV cache": cache, "tokens": length, "tokens/s": batch * length / sec})
    return rows


COLUMNS = ["impl", "variant", "params M", "steps/s", "items/s", "suite / ref", "peak GiB", "GFLOP/step", "TFLOP/s",
           "MFU %"]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", choices=list(SIZES), default=None, help="default: cifar on a GPU, small on CPU")
    parser.add_argument("--batch", type=int, default=None, help="UNet batch (default 128 GPU, 8 CPU)")
    parser.add_argument("--gpt-batch", type=int, default=None, help="GPT sequences per step (default 16 GPU, 4 CPU)")
    parser.add_argument("--sample-batch", type=int, default=None, help="sampler batch (default 256 GPU, 16 CPU)")
    parser.add_argument("--kv-tokens", type=int, default=256)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per measurement")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=None, choices=list(VARIANTS))
    parser.add_argument("--only", nargs="+", default=["unet", "sampler", "gpt", "kv"])
    parser.add_argument("--json", default=None, help="also write every row here")
    args, _ = parser.parse_known_args(argv if argv is not None else sys.argv[1:])
    gpu = args.device == "cuda"
    args.size = args.size or ("cifar" if gpu else "small")
    args.batch = args.batch or (128 if gpu else 8)
    args.gpt_batch = args.gpt_batch or (16 if gpu else 4)
    args.sample_batch = args.sample_batch or (256 if gpu else 16)
    args.steps = args.steps or (20 if gpu else 3)
    args.variants = args.variants or (["fp32", "bf16", "channels_last", "compile"] if gpu else ["fp32", "bf16"])
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 rows as people run them (TF32 matmuls)
        torch.backends.cudnn.allow_tf32 = True
    sizes = SIZES[args.size]
    where = torch.cuda.get_device_name(0) if gpu else machine()
    print(
        f"device: {where}; size={args.size}; batch {args.batch} (UNet), {args.gpt_batch} x "  # fmt: skip
        f"{sizes['gpt']['context']} tokens (GPT); best of {args.repeats} x {args.steps} steps",
        flush=True,
    )
    out: dict[str, list[dict]] = {}
    sections = {"unet": ("UNet training step", lambda: bench_unet(args, sizes["unet"]), COLUMNS),
                "sampler": ("SDE-DPM-Solver++(2M), 20 steps", lambda: bench_sampler(args, sizes["unet"]),
                            ["impl", "NFE", "batch", "images/s", "suite / ref"]),
                "gpt": ("GPT training step (items = tokens)", lambda: bench_gpt(args, sizes["gpt"]), COLUMNS),
                "kv": ("Transformer sampling", lambda: bench_kv(args, sizes["gpt"]),
                       ["sequences", "KV cache", "tokens", "tokens/s"])}  # fmt: skip
    for key in args.only:
        title, run, cols = sections[key]
        try:
            rows = run()
        except Exception as err:  # a benchmark row that cannot run (e.g. compile without a compiler) is reported
            print(f"\n### {title}\n\nfailed: {type(err).__name__}: {err}\n", flush=True)
            continue
        out[key] = rows
        print(f"\n### {title}\n\n{table(rows, cols)}\n", flush=True)
        if args.json:  # after every section, so a run stopped by a time limit keeps what it measured
            with open(args.json, "w") as f:
                json.dump({"device": where, "args": vars(args), "rows": out}, f, indent=1, default=str)


if __name__ == "__main__":
    main()
