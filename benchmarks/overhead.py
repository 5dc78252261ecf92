"""Framework overhead: the suite's training step (Lightning Trainer, the family's LightningModule, its default
callbacks and logging) against a plain PyTorch loop with the same network, optimiser and in-memory data, in one
process. Target: the suite reaches >= 0.95 of plain PyTorch's steps/s.

    python -m benchmarks overhead [model=vae] [more overrides]
    python -m benchmarks.overhead model=diffusion trainer.accelerator=gpu trainer.precision=bf16-mixed   # a GPU

On a GPU both sides run on it, with the same autocast precision, and the clocks wait for the GPU.
"""

from __future__ import annotations

import sys
import time

import lightning as L
import torch

from benchmarks.common import compose_cfg, machine, table
from gensuite.cli.config import instantiate_checked
from gensuite.cli.loggers import build_loggers
from gensuite.train import build_callbacks

STEPS, WARMUP = 60, 10


class StepClock(L.Callback):
    """Wall time from the start of training batch ``warmup`` to the end of batch ``warmup + steps`` (counted across
    epochs)."""

    def __init__(self, steps: int = STEPS, warmup: int = WARMUP):
        self.timed, self.warmup = steps, warmup
        self.t0 = self.t1 = None
        self.seen = self.steps = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.seen == self.warmup:
            sync()
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen += 1
        if self.seen == self.warmup + self.timed:
            sync()
            self.t1 = time.perf_counter()
            self.steps = self.timed


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def suite_steps_per_s(cfg, steps: int = STEPS, warmup: int = WARMUP) -> float:
    """Training steps per second of the suite's Trainer on ``cfg`` (which must run at least ``warmup + steps``)."""
    torch.manual_seed(0)
    dm, model = instantiate_checked(cfg, "data"), instantiate_checked(cfg, "model")
    clock = StepClock(steps, warmup)
    callbacks = [cb for cb in build_callbacks(cfg) if type(cb).__name__ != "Evaluation"] + [clock]
    trainer = instantiate_checked(cfg, "trainer", callbacks=callbacks, logger=build_loggers(cfg))
    trainer.fit(model, datamodule=dm)
    return clock.steps / (clock.t1 - clock.t0)


def plain_steps_per_s(cfg) -> float:
    """The same step written by hand: the family's loss, backward, the same optimiser, the same batches."""
    torch.manual_seed(0)
    dm, model = instantiate_checked(cfg, "data"), instantiate_checked(cfg, "model")
    dm.setup()
    device = "cuda" if cfg.trainer.accelerator == "gpu" else "cpu"
    model.to(device)
    opt = model.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    model.train()
    bf16 = str(cfg.trainer.precision).startswith("bf16")

    def forever():  # epochs back to back, as the Trainer runs them
        while True:
            yield from dm.train_dataloader()

    batches = forever()
    t0 = None
    for i in range(WARMUP + STEPS):
        if i == WARMUP:
            sync()
            t0 = time.perf_counter()
        batch = [b.to(device, non_blocking=True) for b in next(batches)]
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = model.losses(batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync()
    return STEPS / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    overrides = argv if argv is not None else [a for a in sys.argv[1:] if "=" in a]
    families = [o for o in overrides if o.startswith("model=")] or ["model=vae"]
    rows = []
    for fam in families:
        rest = [o for o in overrides if not o.startswith("model=")]
        cfg = compose_cfg(
            [
                fam,
                *([] if any(o.startswith("trainer.accelerator=") for o in overrides) else ["trainer.accelerator=cpu"]),
                f"trainer.max_steps={WARMUP + STEPS}",
                "trainer.limit_val_batches=0",
                "trainer.num_sanity_val_steps=0",
                "trainer.enable_progress_bar=false",
                "callbacks.progress_bar=null",
                *rest,
            ]
        )
        # alternate to share any drift of the machine's speed between the two
        plain, suite = [], []
        for _ in range(2):
            plain.append(plain_steps_per_s(cfg))
            suite.append(suite_steps_per_s(cfg))
        p, s = max(plain), max(suite)
        rows.append(
            {
                "family": fam.split("=")[1],
                "plain steps/s": p,
                "suite steps/s": s,
                "suite / plain": s / p,
                "overhead ms/step": 1000 * (1 / s - 1 / p),
            }
        )
    print(f"machine: {machine()}; {STEPS} timed steps after {WARMUP} warm-up, best of 2 alternating runs")
    print(table(rows, ["family", "plain steps/s", "suite steps/s", "suite / plain", "overhead ms/step"]))


if __name__ == "__main__":
    main()
