"""The presets' number format follows the hardware: bf16-mixed where bf16 is native, else 32-true."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from gensuite.cli.precision import bf16_is_native, cpu_flags, fast_precision
from tests.conftest import compose_cfg

ICE_LAKE = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni\n\nprocessor\t: 1\nflags\t\t: fpu\n"
SAPPHIRE = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
NEOVERSE = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


@pytest.fixture
def cpuinfo(tmp_path):
    def write(text: str):
        path = tmp_path / "cpuinfo"
        path.write_text(text)
        return path

    return write


def test_cpu_flags_read_x86_and_arm(cpuinfo, tmp_path):
    assert {"avx512f", "avx512_vnni", "sse2"} <= cpu_flags(cpuinfo(ICE_LAKE))
    assert "bf16" in cpu_flags(cpuinfo(NEOVERSE))
    assert cpu_flags(tmp_path / "absent") == set()  # macOS, Windows: no /proc/cpuinfo


@pytest.mark.skipif(torch.cuda.is_available(), reason="accelerator=auto picks the GPU here")
def test_native_bf16_on_cpus(cpuinfo, tmp_path):
    assert not bf16_is_native("cpu", cpuinfo(ICE_LAKE))  # AVX-512 without BF16: emulated
    assert bf16_is_native("cpu", cpuinfo(SAPPHIRE))
    assert bf16_is_native("auto", cpuinfo(NEOVERSE))
    assert not bf16_is_native("cpu", tmp_path / "absent")
    assert not bf16_is_native("mps", cpuinfo(SAPPHIRE))  # other accelerators keep fp32 unless asked


@pytest.mark.parametrize("overrides", [["model=gan"], ["model=transformer"], ["model=transformer", "data=pydoc"]])
def test_presets_take_the_fast_format_of_this_machine(overrides):
    cfg = compose_cfg([*overrides, "trainer.accelerator=cpu"])
    assert cfg.trainer.precision == fast_precision("cpu") in ("bf16-mixed", "32-true")
    assert OmegaConf.to_container(cfg.trainer, resolve=True)["precision"] == fast_precision("cpu")
    # the command line still decides
    assert compose_cfg([*overrides, "trainer.precision=bf16-mixed"]).trainer.precision == "bf16-mixed"
