"""What gensuite.lightning_compat (and the EMA callback) rely on in Lightning and TensorBoard beyond their
documented API: these tests fail loudly when an upgrade moves it, naming the adapter to mend."""

from __future__ import annotations

import lightning
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch.utils.tensorboard import SummaryWriter

from gensuite import lightning_compat


def test_step_uncounted_steps_without_the_counting_hooks():
    opt = LightningOptimizer(torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.5))
    assert hasattr(opt, "_on_before_step") and hasattr(opt, "_on_after_step"), (
        f"Lightning {lightning.__version__} no longer counts manual steps through these hooks: mend "
        "lightning_compat.step_uncounted (checked with " + lightning_compat.CHECKED_WITH + ")"
    )

    class Recording:  # the adapter's logic; test_gan's step-rule test covers it inside a real fit
        def __init__(self):
            self._on_before_step = self._on_after_step = lambda: calls.append("counted")

        def step(self):
            self._on_before_step(), self._on_after_step()
            calls.append("stepped")

    calls: list[str] = []
    rec = Recording()
    lightning_compat.step_uncounted(rec)
    assert calls == ["stepped"]  # the step happened, uncounted
    rec.step()
    assert calls == ["stepped", "counted", "counted", "stepped"]  # the counting hooks are back


def test_ema_reads_these_members_of_lightnings_weight_averaging():
    ema = EMAWeightAveraging()
    for name in ("_average_model", "_device", "_use_buffers", "_kwargs"):
        assert hasattr(ema, name), f"EMAWeightAveraging has no {name}: mend gensuite.callbacks.ema.EMA"


def test_file_writer_reaches_the_runs_event_file(tmp_path):
    writer = SummaryWriter(str(tmp_path))
    from torch.utils.tensorboard.summary import hparams

    for summary in hparams({"lr": 0.1}, {"val/loss": 1.0}):
        lightning_compat.file_writer(writer).add_summary(summary)
    writer.close()
    files = list(tmp_path.glob("events.out.tfevents.*"))
    assert len(files) == 1 and b"hparams" in files[0].read_bytes()  # no sub-run folder of its own
