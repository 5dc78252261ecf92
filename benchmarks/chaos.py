"""Chaos: a run killed with SIGKILL again and again, each time resumed with ``auto_resume=true``, must end with the
weights of a run never interrupted, and no kill may lose a checkpoint.

``python -m benchmarks.chaos [--kills 20] [--layouts same,tmpfs]``

For each layout of the temporary directory (``TMPDIR`` on the run's own filesystem, or on a tmpfs — the usual
cluster layout of node-local ``/tmp`` and runs on shared storage), one VAE run on the 8x8 digits that checkpoints
every few steps is started, killed with SIGKILL (no handler runs) at a random moment — every other kill aimed at
the moment a checkpoint is being written (a ``*.ckpt-tmp`` file is seen in the run's checkpoint folder) — and
started again with ``auto_resume=true``, until the number of kills is reached; then it runs to its end.

Per layout it reports: kills (random / aimed at a write), resumed (restarts that continued from a checkpoint),
lost (restarts that did not continue from the newest checkpoint that was intact after the kill, or failed),
damaged files seen after a kill, temporary files left at the end, and the largest difference of the final
weights and optimiser states from the uninterrupted run's.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RUN = [
    "model=vae",
    "data=digits",
    "data.batch_size=32",
    "model.encoder.width=64",
    "model.decoder.width=64",
    "trainer.max_epochs=12",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.num_sanity_val_steps=0",
    "trainer.limit_val_batches=2",
    "callbacks.progress_bar=null",
    "callbacks.evaluation=null",  # the weights are what is compared: no sample metrics
    "callbacks.model_checkpoint.every_n_train_steps=5",
    "callbacks.model_checkpoint.every_n_epochs=null",
    "callbacks.model_checkpoint.monitor=null",
    "auto_resume=true",
]
VERBOSE = False
RESUMING = re.compile(r"\(resuming (.+?\.ckpt)\)")


def _start(folder: Path, env: dict, cache: Path) -> subprocess.Popen:
    cmd = [sys.executable, str(ROOT / "train.py"), *RUN, f"hydra.run.dir={folder}", f"paths.cache_dir={cache}"]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _readable(path: Path) -> int | None:
    """The checkpoint's global step, or None when it cannot be read whole."""
    try:
        return int(torch.load(path, weights_only=True, map_location="cpu")["global_step"])
    except Exception:
        return None


def _scan(ckpts: Path) -> tuple[int, int]:
    """(newest intact step, damaged files) among the run's checkpoints."""
    steps, damaged = [], 0
    for p in ckpts.glob("*.ckpt") if ckpts.is_dir() else []:
        step = _readable(p)
        if step is None:
            damaged += 1
        else:
            steps.append(step)
    return max(steps, default=-1), damaged


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    raw = torch.load(path, weights_only=True, map_location="cpu")
    out = {f"w/{k}": v for k, v in raw["state_dict"].items()}
    for i, opt in enumerate(raw["optimizer_states"]):
        for pid, st in opt["state"].items():
            out |= {f"opt{i}/{pid}/{k}": v for k, v in st.items() if isinstance(v, torch.Tensor)}
    return out


def _difference(a: Path, b: Path) -> float:
    ta, tb = _tensors(a), _tensors(b)
    if ta.keys() != tb.keys():
        return float("inf")
    return max((ta[k].double() - tb[k].double()).abs().max().item() for k in ta)


def _wait_training(proc: subprocess.Popen, lines: list[str], timeout: float = 300) -> bool:
    """Read the output until the run says where it trains (the model is built, training starts)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        line = proc.stdout.readline()
        if not line:
            return False
        lines.append(line)
        if "[gensuite] run folder:" in line:
            return True
    return False


def chaos(layout: str, kills: int, work: Path, cache: Path, reference: Path, seed: int) -> dict:
    rng = random.Random(seed)
    folder = work / f"chaos-{layout}"
    tmp = Path("/dev/shm") / f"gensuite-chaos-{os.getpid()}" if layout == "tmpfs" else work / f"tmp-{layout}"
    tmp.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    ckpts = folder / "checkpoints"
    stats = {"kills": 0, "random": 0, "aimed": 0, "resumed": 0, "lost": 0, "damaged": 0, "failed": 0, "fresh": 0}
    newest_before = -1
    while True:
        proc = _start(folder, env, cache)
        lines: list[str] = []
        ready = _wait_training(proc, lines)
        resumed_from = RESUMING.search("".join(lines))
        if stats["kills"] and newest_before < 0 and not resumed_from:
            stats["fresh"] += 1  # killed before its first checkpoint: starting again is right
        elif stats["kills"]:  # a restart after a kill: did it continue from the newest intact checkpoint?
            step = _readable(Path(resumed_from.group(1))) if resumed_from else None
            if VERBOSE:
                print(f"  restart {stats['kills']}: newest intact {newest_before}, resumed from step {step}")
            if ready and step is not None and step >= newest_before:
                stats["resumed"] += 1
            else:
                stats["lost"] += 1
        if not ready:
            stats["failed"] += 1
            print("".join(lines[-20:]), file=sys.stderr)
            break
        if stats["kills"] >= kills:
            rest, _ = proc.communicate(timeout=1800)
            if VERBOSE:
                print("".join(lines) + rest)
            if proc.returncode != 0:
                stats["failed"] += 1
                print(rest[-3000:], file=sys.stderr)
            break
        aimed = stats["kills"] % 2 == 1
        deadline = time.time() + (30 if aimed else rng.uniform(0.3, 4.0))
        while time.time() < deadline and proc.poll() is None:
            if aimed and any(ckpts.glob(".*ckpt-tmp")):
                break
            time.sleep(0.0005 if aimed else 0.01)
        if proc.poll() is not None:  # finished before the kill: the run is complete
            proc.communicate()
            break
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        stats["kills"] += 1
        stats["aimed" if aimed else "random"] += 1
        newest_before, damaged = _scan(ckpts)
        stats["damaged"] += damaged
    stats["temporaries_left"] = len(list(ckpts.glob(".*ckpt-tmp")))
    final = ckpts / "last.ckpt"
    stats["final_step"] = _readable(final)
    stats["max_abs_difference"] = _difference(reference, final) if final.exists() else float("inf")
    shutil.rmtree(tmp, ignore_errors=True)
    return stats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--layouts", default="same,tmpfs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", action="store_true", help="one line per restart")
    args = parser.parse_args(argv)
    global VERBOSE
    VERBOSE = args.verbose
    work = Path(tempfile.mkdtemp(prefix="gensuite-chaos-"))
    cache = work / "cache"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    t0 = time.time()
    whole = _start(work / "whole", env, cache)
    out, _ = whole.communicate(timeout=1800)
    if whole.returncode != 0:
        sys.exit(f"the uninterrupted run failed:\n{out[-3000:]}")
    reference = work / "whole" / "checkpoints" / "last.ckpt"
    print(f"uninterrupted run: step {_readable(reference)}, {time.time() - t0:.0f} s (with start-up)\n")
    print("| TMPDIR | kills (random / aimed at a write) | resumed | lost | damaged files seen | temporaries left "
          "| final step | final weights equal (max abs diff) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for layout in args.layouts.split(","):
        s = chaos(layout, args.kills, work, cache, reference, args.seed)
        where = "same filesystem as the run" if layout == "same" else "tmpfs (/dev/shm)"
        equal = "yes" if s["max_abs_difference"] == 0.0 else "NO"
        print(f"| {where} | {s['kills']} ({s['random']} / {s['aimed']}) | {s['resumed']} | {s['lost']} "
              f"| {s['damaged']} | {s['temporaries_left']} | {s['final_step']} "
              f"| {equal} ({s['max_abs_difference']:.3g}) |", flush=True)  # fmt: skip
        if s["fresh"]:
            print(f"  ({s['fresh']} kill(s) came before the first checkpoint: those restarts began afresh)")
        if s["failed"]:
            print(f"  ({s['failed']} restart(s) failed; their output is above)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
