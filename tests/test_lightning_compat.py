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


def test_a_run_shorter_than_the_ema_start_keeps_its_trained_weights(tmp_path):
    """Lightning's average holds the initial weights until its first update: a run that ends (or checkpoints)
    before update_starting_at_step must not hand back its untrained start."""
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from gensuite.callbacks.ema import EMA
    from gensuite.families.base import GenerativeModule

    class Tiny(GenerativeModule):
        family = "tiny"

        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(2, 1)

        def losses(self, batch):
            return {"loss": (self.net(batch[0]) - 3).pow(2).mean()}

        def sample(self, n, generator=None):
            return torch.zeros(n, 1, 1, 1)

    for module in ("net", None):
        model = Tiny()
        start = model.net.weight.detach().clone()
        trainer = L.Trainer(
            max_steps=3, callbacks=[EMA(decay=0.99, module=module, update_starting_at_step=100)], logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
        )  # fmt: skip
        trainer.fit(model, DataLoader(TensorDataset(torch.randn(32, 2)), batch_size=8))
        assert not torch.equal(model.net.weight, start), module  # trained weights, not the start copied back
        trainer.save_checkpoint(tmp_path / "x.ckpt")
        saved = torch.load(tmp_path / "x.ckpt", weights_only=False)["state_dict"]["net.weight"]
        assert torch.equal(saved, model.net.weight), module  # what sample.py / eval.py will load
