"""Sampling speed of the transformer with and without the key/value cache (prints a table; asserts nothing).

    python -m benchmarks.transformer_kv_cache                      # the data=pydoc model, random weights
    python -m benchmarks.transformer_kv_cache --ckpt logs/runs/transformer-pydoc/<time>/checkpoints/last.ckpt
    python -m benchmarks.transformer_kv_cache --tokens 512 --batch 1 8 --threads 1

Speed does not depend on the weights, so without ``--ckpt`` the network of ``model=transformer data=pydoc`` is
built with random weights. Rows: the model as configured (its context; 512 tokens then slide in windows, see
`gensuite.nets.transformer.window_start`) and the same network with a context of ``--tokens`` (no windows). Both
paths draw identical tokens for one seed (tests/test_transformer.py), so the ratio is pure speed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from gensuite.nets.transformer import Transformer


def pydoc_net(context: int | None = None) -> Transformer:
    """The sequence model of ``model=transformer data=pydoc`` (preset included), random weights."""
    from hydra import compose, initialize_config_dir

    conf = str(Path(__file__).resolve().parents[1] / "conf")
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        cfg = compose("train", overrides=["model=transformer", "data=pydoc"], return_hydra_config=True)
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    HydraConfig.instance().set_config(cfg)
    net = instantiate(cfg.model.net)
    return net(vocab_size=256, context=context or int(cfg.model.context))


def timed(net: Transformer, batch: int, tokens: int, use_cache: bool, repeats: int) -> tuple[float, float]:
    """Best-of-``repeats`` tokens per second (all rows of the batch count), by wall clock and by this process's
    CPU time per thread (on a machine shared with other jobs the wall clock mostly measures the others)."""
    wall = cpu = float("inf")
    for r in range(repeats):
        g = torch.Generator().manual_seed(r)
        t0, c0 = time.perf_counter(), time.process_time()
        net.generate(batch, tokens, generator=g, use_cache=use_cache)
        wall = min(wall, time.perf_counter() - t0)
        cpu = min(cpu, (time.process_time() - c0) / torch.get_num_threads())
    return batch * tokens / wall, batch * tokens / cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default=None, help="a transformer checkpoint (default: the pydoc net, random)")
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.ckpt:
        from gensuite.runs.checkpoint import load_model

        model, _ = load_model(args.ckpt, expect_family="transformer")
        configured = model.net
    else:
        configured = pydoc_net()
    long = Transformer(
        vocab_size=configured.vocab_size,
        context=max(args.tokens, configured.context),
        width=configured.width,
        depth=configured.depth,
        heads=configured.heads,
        positions=configured.positions,
    )
    params = sum(p.numel() for p in configured.parameters())
    print(
        f"transformer width={configured.width} depth={configured.depth} heads={configured.heads} "
        f"({params / 1e6:.2f}M parameters), {args.tokens} tokens, torch threads={torch.get_num_threads()}"
    )
    print("tokens/s by wall clock, and by CPU time per thread in brackets")
    print(f"{'context':>8} {'batch':>6} {'cached tok/s':>20} {'uncached tok/s':>20} {'speed-up':>16}")
    for net in (configured, long):
        net.eval()
        for b in args.batch:
            fast, fast_cpu = timed(net, b, args.tokens, True, args.repeats)
            slow, slow_cpu = timed(net, b, args.tokens, False, 1)
            print(
                f"{net.context:>8} {b:>6} {f'{fast:.0f} ({fast_cpu:.0f})':>20} {f'{slow:.0f} ({slow_cpu:.0f})':>20} "
                f"{f'{fast / slow:.1f}x ({fast_cpu / slow_cpu:.1f}x)':>16}",
                flush=True,
            )


if __name__ == "__main__":
    main()
