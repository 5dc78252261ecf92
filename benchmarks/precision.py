"""bf16-mixed against 32-true through the suite's whole training step (Trainer, callbacks, the family's loss), for
the presets that pick their format by hardware (``gs_fast_precision``), alternating in one process.

    python -m benchmarks precision [model=gan] [more overrides]

Where the device has no native bf16 (an x86 CPU without AVX512-BF16 or AMX), the ratio shows what emulation costs
and why the presets fall back to 32-true there; on an Ampere+ GPU (``trainer.accelerator=gpu``) it shows the gain.
"""

from __future__ import annotations

import sys

from benchmarks.common import compose_cfg, machine, table
from benchmarks.overhead import suite_steps_per_s
from gensuite.cli.precision import bf16_is_native, fast_precision

FAMILIES = (("model=gan",), ("model=transformer", "data=pydoc"))
STEPS, WARMUP, ROUNDS = 12, 4, 2


def steps_per_s(family: tuple[str, ...], precision: str, rest: list[str]) -> float:
    accelerator = [] if any(o.startswith("trainer.accelerator=") for o in rest) else ["trainer.accelerator=cpu"]
    cfg = compose_cfg(
        [
            *family,
            *accelerator,
            f"trainer.max_steps={WARMUP + STEPS}",
            "trainer.limit_val_batches=0",
            "trainer.num_sanity_val_steps=0",
            "trainer.enable_progress_bar=false",
            "callbacks.progress_bar=null",
            *rest,
            f"trainer.precision={precision}",
        ]
    )
    return suite_steps_per_s(cfg, STEPS, WARMUP)


def main(argv: list[str] | None = None) -> None:
    overrides = argv if argv is not None else [a for a in sys.argv[1:] if "=" in a]
    models = [o for o in overrides if o.startswith("model=")]
    rest = [o for o in overrides if not o.startswith("model=")]
    families = [(m,) for m in models] or FAMILIES
    accelerator = next((o.split("=", 1)[1] for o in rest if o.startswith("trainer.accelerator=")), "cpu")
    rows = []
    for family in families:
        seen: dict[str, list[float]] = {"32-true": [], "bf16-mixed": []}
        for _ in range(ROUNDS):  # alternating, so that drift of the machine's speed falls on both
            for precision in seen:
                seen[precision].append(steps_per_s(family, precision, rest))
        fp32, bf16 = max(seen["32-true"]), max(seen["bf16-mixed"])
        rows.append(
            {
                "run": " ".join(family),
                "32-true steps/s": fp32,
                "bf16-mixed steps/s": bf16,
                "bf16 / fp32": bf16 / fp32,
                "preset picks": fast_precision(accelerator),
            }
        )
    native = "native" if bf16_is_native(accelerator) else "emulated"
    print(f"machine: {machine()}; bf16 {native} on {accelerator}; {STEPS} timed steps, best of {ROUNDS} alternating")
    print(table(rows, ["run", "32-true steps/s", "bf16-mixed steps/s", "bf16 / fp32", "preset picks"]))


if __name__ == "__main__":
    main()
