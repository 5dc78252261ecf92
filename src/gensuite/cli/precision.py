"""The fastest number format a device computes natively: the ``gs_fast_precision`` resolver of the presets.

bf16 autocast pays only where the hardware does bf16 arithmetic: CUDA GPUs of compute capability 8.0 and later
(Ampere, Hopper, ...), x86 CPUs with AVX512-BF16 or AMX, Arm CPUs with the BF16 extension. Elsewhere oneDNN and
cuBLAS emulate it through fp32 conversions: on a 2-core Ice Lake Xeon (AVX-512 without BF16) the GAN and the text
transformer presets took 2.4x as long per training step in ``bf16-mixed`` as in ``32-true`` (README, Performance).
So the presets ask for ``${gs_fast_precision:${trainer.accelerator}}``: ``bf16-mixed`` where it is native, else
``32-true``. The choice is made when the config is composed and is saved with the run, so a resume on the same
machine sees the same format; ``trainer.precision=...`` on the command line still overrides it.
"""

from __future__ import annotations

from pathlib import Path

import torch

NATIVE, FALLBACK = "bf16-mixed", "32-true"
# /proc/cpuinfo feature names of native bf16 arithmetic: x86 (AVX512-BF16, AMX) and Arm (FEAT_BF16)
CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags (x86 ``flags``, Arm ``Features``); empty where /proc/cpuinfo does not exist."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return set()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return flags


def bf16_is_native(accelerator: str = "auto", cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether the device Lightning picks for ``accelerator`` does bf16 arithmetic in hardware."""
    acc = str(accelerator).lower()
    if acc in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if acc in ("cpu", "auto"):
        return bool(cpu_flags(cpuinfo) & CPU_BF16_FLAGS)
    return False  # mps, tpu, ...: keep fp32 unless asked


def fast_precision(accelerator: str = "auto") -> str:
    """``bf16-mixed`` where bf16 is native on that device, else ``32-true``."""
    return NATIVE if bf16_is_native(accelerator) else FALLBACK
