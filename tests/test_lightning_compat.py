"""What gensuite.lightning_compat and gensuite.hydra_compat rely on in Lightning, torch, TensorBoard and Hydra beyond
their documented API: these tests fail loudly when an upgrade moves it, naming the adapter to mend."""

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


def test_average_only_builds_what_lightnings_setup_builds_of_a_sub_module():
    """`average_only` replaces the `AveragedModel` that `WeightAveraging.setup` makes of the whole module with one of
    a sub-module, built the same way: same averaging function, buffers setting and device; `averaged_model` reads
    it back."""
    import lightning as L
    from torch.optim.swa_utils import AveragedModel

    class Two(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.g, self.d = torch.nn.Linear(2, 2), torch.nn.Linear(2, 1)

    mend = (
        f"mend gensuite.lightning_compat.average_only / averaged_model (checked with {lightning_compat.CHECKED_WITH})"
    )
    ema, module = EMAWeightAveraging(decay=0.9, use_buffers=False), Two()
    assert lightning_compat.averaged_model(ema) is None, mend  # before setup: none
    ema.setup(None, module, "fit")
    lightnings = lightning_compat.averaged_model(ema)
    assert isinstance(lightnings, AveragedModel) and lightnings.module is not module, mend
    lightning_compat.average_only(ema, module.g, torch.device("cpu"))
    ours = lightning_compat.averaged_model(ema)
    assert ours is not lightnings and type(ours) is type(lightnings), mend
    assert isinstance(ours.module, torch.nn.Linear) and torch.equal(ours.module.weight, module.g.weight), mend
    for name in ("avg_fn", "multi_avg_fn", "use_buffers"):
        assert getattr(ours, name) is getattr(lightnings, name), (name, mend)
    assert ours.use_buffers is False and ours.n_averaged.device == torch.device("cpu")


def test_is_dummy_experiment_tells_the_stand_in_of_other_ranks(tmp_path, monkeypatch):
    from lightning.fabric.utilities.rank_zero import rank_zero_only
    from lightning.pytorch.loggers import TensorBoardLogger

    assert not lightning_compat.is_dummy_experiment(TensorBoardLogger(tmp_path / "r0").experiment)
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    assert lightning_compat.is_dummy_experiment(TensorBoardLogger(tmp_path / "r1").experiment), (
        "rank 1's TensorBoard experiment is no longer Lightning's _DummyExperiment: mend "
        "gensuite.lightning_compat.is_dummy_experiment"
    )


def test_the_appending_csv_writer_keeps_what_lightnings_deletes(tmp_path):
    """Lightning's `ExperimentWriter` deletes an existing metrics.csv at its start (through `_check_log_dir_exists`,
    the method `AppendingCSVWriter` overrides); the appending one keeps its rows and reads its header."""
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.loggers.csv_logs import ExperimentWriter

    metrics = tmp_path / "metrics.csv"
    metrics.write_text("step,train/loss\n0,2.0\n")
    writer = lightning_compat.AppendingCSVWriter(log_dir=str(tmp_path))
    assert metrics.read_text() == "step,train/loss\n0,2.0\n" and writer.metrics_keys == ["step", "train/loss"]
    ExperimentWriter(log_dir=str(tmp_path))
    assert not metrics.exists(), (
        "Lightning's ExperimentWriter no longer deletes metrics.csv in _check_log_dir_exists: mend "
        "gensuite.lightning_compat.AppendingCSVWriter"
    )
    logger = CSVLogger(save_dir=tmp_path, name="csv", version="")
    first = lightning_compat.appending_csv_experiment(logger)
    assert isinstance(first, lightning_compat.AppendingCSVWriter)
    assert lightning_compat.appending_csv_experiment(logger) is first  # made once, kept by the logger


def test_set_last_lr_is_what_the_scheduler_reports():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    lightning_compat.set_last_lr(scheduler, [0.3])
    assert scheduler.get_last_lr() == [0.3], "mend gensuite.lightning_compat.set_last_lr (torch's _last_lr)"
    assert set(scheduler.state_dict()) >= lightning_compat.SCHEDULER_BOOKKEEPING, (
        f"torch {torch.__version__}'s scheduler state changed: mend gensuite.lightning_compat.SCHEDULER_BOOKKEEPING"
    )


def test_is_batch_norm_tells_batch_statistics_from_the_other_norms():
    from torch import nn

    norms = [nn.BatchNorm1d(2), nn.BatchNorm2d(2), nn.SyncBatchNorm(2), nn.LazyBatchNorm2d()]
    others = [nn.InstanceNorm2d(2), nn.GroupNorm(1, 2), nn.LayerNorm(2), nn.Conv2d(1, 1, 1)]
    mend = "mend gensuite.lightning_compat.is_batch_norm (torch's batchnorm._BatchNorm)"
    assert all(lightning_compat.is_batch_norm(m) for m in norms), mend
    assert not any(lightning_compat.is_batch_norm(m) for m in others), mend


def test_hydras_args_parser_reads_what_the_command_line_check_reads():
    from gensuite import hydra_compat

    args, _ = hydra_compat.args_parser().parse_known_args(["-m", "model=vae,gan", "--cfg", "job", "-cn", "train"])
    assert args.multirun and args.overrides == ["model=vae,gan"] and args.cfg == "job" and args.config_name == "train"
    for flag in ("help", "hydra_help", "shell_completion", "info", "experimental_rerun", "config_path", "config_dir"):
        assert hasattr(args, flag), f"Hydra's parser has no {flag}: mend gensuite.hydra_compat.args_parser"


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
