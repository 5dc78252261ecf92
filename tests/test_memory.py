"""Out of memory: the probe finds the largest batch whose training step fits, and a run that runs out of memory ends
with exit status 2 and a short message naming ``data.batch_size`` and that size, its earlier checkpoints kept.

No test needs a real out-of-memory: a model's ``losses`` raises the allocator's error (the CUDA one or the CPU
one) for batches above a size."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from gensuite.cli.memory import examples_per_update, is_out_of_memory, largest_fitting, probe_batch_size, repeat_batch
from gensuite.errors import ConfigError

from .conftest import ROOT, SMALL_NETS, TINY

CUDA_OOM = (
    "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.10 GiB of which 1 GiB is free"
)
CPU_OOM = (
    "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to allocate "
    "1073741824 bytes. Error code 12 (Cannot allocate memory)"
)


def cuda_oom() -> BaseException:
    return torch.OutOfMemoryError(CUDA_OOM)


def cpu_oom() -> BaseException:
    return RuntimeError(CPU_OOM)  # what the CPU allocator raises (Lightning's is_oom_error knows it)


@pytest.mark.parametrize("failed", [1, 2, 5, 64, 128, 1000])
def test_the_search_finds_the_exact_largest_size_below_the_failing_one(failed):
    for limit in sorted({0, 1, 2, 3, failed // 3, failed // 2, failed - 1, failed}):
        tried = []

        def fits(n, limit=limit, tried=tried):
            tried.append(n)
            return n <= limit

        expected = min(limit, failed - 1)
        assert largest_fitting(fits, failed) == expected, (limit, tried)
        assert all(1 <= n < failed for n in tried)  # never the failing size again, never 0
        assert len(tried) <= 2 * max(1, math.ceil(math.log2(failed)))  # halving, then bisection


def test_out_of_memory_is_recognised_in_both_allocators_words_and_through_wrapping():
    assert is_out_of_memory(cuda_oom()) and is_out_of_memory(cpu_oom())
    try:
        try:
            raise cpu_oom()
        except RuntimeError as inner:
            raise ValueError("wrapped") from inner
    except ValueError as outer:
        assert is_out_of_memory(outer)
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("out of memory"))


class Hungry(nn.Module):
    """A tiny model whose training step "runs out of memory" for batches above ``limit`` rows."""

    def __init__(self, limit: int, error=cuda_oom):
        super().__init__()
        self.net = nn.Linear(4, 1)
        self.limit, self.error = limit, error
        self.seen: list[torch.Tensor] = []

    def losses(self, batch):
        x, _ = batch
        self.seen.append(x.detach().clone())
        if len(x) > self.limit:
            raise self.error()
        return {"loss": self.net(x).pow(2).mean()}


@pytest.mark.parametrize("error", [cuda_oom, cpu_oom])
def test_the_probe_returns_the_largest_batch_that_fits_and_steps_the_optimiser(error):
    model = Hungry(limit=23, error=error)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    before = model.net.weight.detach().clone()
    examples = (torch.arange(40.0).reshape(10, 4), torch.arange(10))  # a real batch of 10 examples
    assert probe_batch_size(model, examples, failed=64, optimizers=[opt]) == 23
    # every candidate batch is the real examples repeated in order
    for x in model.seen:
        assert torch.equal(x, examples[0][torch.arange(len(x)) % 10])
    assert sorted({len(x) for x in model.seen}) == [16, 20, 22, 23, 24, 32]
    assert opt.state and not torch.equal(model.net.weight, before)  # the optimiser's state was made (Adam)
    assert all(p.grad is None for p in model.parameters())  # nothing left over from the last try


def test_the_probe_reports_0_when_nothing_fits_and_lets_other_errors_through():
    examples = (torch.ones(3, 4), torch.zeros(3))
    assert probe_batch_size(Hungry(limit=0), examples, failed=8) == 0

    class Broken(Hungry):
        def losses(self, batch):
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes"):
        probe_batch_size(Broken(limit=10), examples, failed=8)


def test_repeat_batch_and_the_same_examples_per_update():
    batch = {"x": torch.arange(3), "pair": (torch.arange(3) * 10, torch.arange(3) * 100)}
    out = repeat_batch(batch, 7)
    assert out["x"].tolist() == [0, 1, 2, 0, 1, 2, 0] and out["pair"][1].tolist()[-1] == 0
    assert examples_per_update(128, 37) == (32, 4)
    assert examples_per_update(128, 64) == (64, 2)
    assert examples_per_update(97, 50) is None  # a prime: no smaller batch gives the same examples per update


LIMIT, BATCH = 16, 64


def hungry_vae(limit: int, after: int, error=cuda_oom):
    """VAE.losses, "out of memory" above ``limit`` rows in training once ``after`` training steps have run."""
    from gensuite.families.vae import VAE

    original = VAE.losses
    calls = [0]

    def losses(self, batch):
        if self.training and torch.is_grad_enabled():
            calls[0] += 1
            if calls[0] > after and len(batch[0]) > limit:
                raise error()
        return original(self, batch)

    return losses


def test_train_ends_with_the_batch_size_that_fits_and_keeps_the_checkpoints(make_cfg, monkeypatch, tmp_path):
    from gensuite.families.vae import VAE
    from gensuite.train import train

    # the first epoch (3 steps, TINY) ends and writes its checkpoints; the second runs out of memory at once
    monkeypatch.setattr(VAE, "losses", hungry_vae(LIMIT, after=3))
    cfg = make_cfg(["model=vae", *SMALL_NETS["vae"], f"data.batch_size={BATCH}", "trainer.max_epochs=2",
                    "callbacks.evaluation=null"])  # fmt: skip
    with pytest.raises(ConfigError) as info:
        train(cfg)
    text = info.value.render()
    assert f"data.batch_size={BATCH}" in text and f"data.batch_size={LIMIT}" in text, text
    assert "trainer.accumulate_grad_batches=4" in text  # 4 x 16 = the same 64 examples per update
    assert "at step 3" in text and "ckpt_path=last" in text and "last.ckpt" in text
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, map_location="cpu", weights_only=True)  # written before the failure, intact
    assert ckpt["global_step"] == 3


def test_the_entry_point_prints_one_screen_and_exits_2(tmp_path, cache_dir):
    # the real train.py entry point, in a fresh process, with the CPU allocator's error above LIMIT rows
    args = [*TINY, "model=vae", *SMALL_NETS["vae"], f"data.batch_size={BATCH}", f"paths.log_dir={tmp_path}",
            f"paths.cache_dir={cache_dir}", "callbacks.evaluation=null"]  # fmt: skip
    code = (
        "import sys\n"
        "from gensuite.families.vae import VAE\n"
        "from tests.test_memory import cpu_oom, hungry_vae\n"
        f"VAE.losses = hungry_vae({LIMIT}, after=0, error=cpu_oom)\n"
        f"sys.argv = ['train.py', *{args!r}]\n"
        "from gensuite.entry import train\n"
        "train()\n"
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 2, run.stderr[-3000:]
    assert "Traceback" not in run.stderr + run.stdout
    assert len(run.stderr.strip().splitlines()) <= 30  # one screen, a library's warning or two included
    message = run.stderr[run.stderr.index("ConfigError: ") :].strip()
    assert message.startswith("ConfigError: ran out of memory in training"), run.stderr
    assert f"data.batch_size={BATCH}" in message and f"fix: data.batch_size={LIMIT}" in message, message
    assert "DefaultCPUAllocator" in message  # the allocator's own words, one line of them
    assert len(message.splitlines()) <= 4 and max(len(line) for line in message.splitlines()) <= 400, message
    assert not list(tmp_path.rglob("*.ckpt"))  # it failed at the first step: nothing written, nothing claimed
