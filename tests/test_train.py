"""End to end through `train(cfg)` and the real entry points: files written, TensorBoard contents, checkpoints
that rebuild their model alone, resume, train -> eval agreement, the VAE learning on mnist5k."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gensuite.callbacks.evaluation import Evaluation
from gensuite.cli.config import instantiate_checked
from gensuite.errors import ConfigError
from gensuite.train import train

from .conftest import SSL_STEPS, compose_cfg, run_entry

SMALL_VAE = ["model.encoder.width=8", "model.decoder.width=8"]


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory, cache_dir):
    """One tiny VAE run shared by the tests that inspect its outputs."""
    from .conftest import TINY

    out = tmp_path_factory.mktemp("vae_run") / "run"
    cfg = compose_cfg(TINY + SMALL_VAE + [f"paths.cache_dir={cache_dir}"], out)
    result = train(cfg)
    return result, out


def test_run_writes_metrics_checkpoints_samples(vae_run):
    result, out = vae_run
    metrics = json.loads((out / "metrics.json").read_text())
    for key in [
        "val/fid_classifier",
        "val/fid_classifier_floor",
        "val/kid_classifier",
        "val/kid_classifier_floor",
        "val/fid_classifier_train",
        "val/fid_classifier_train_floor",
        "val/fid_classifier_val",  # against the val split: what checkpoints and sweeps choose by
        "val/copy_rate_classifier",
        "val/copy_rate_pixels",
        "val/fid_classifier_lo",
        "val/fid_classifier_hi",
        "val/precision_classifier",
        "val/recall_classifier",
        "val/coverage_classes",
        "val/is_classifier",
        # the label-free space beside the classifier's, every metric named after it
        "val/fid_ssl",
        "val/fid_ssl_floor",
        "val/kid_ssl",
        "val/fid_ssl_train",
        "val/copy_rate_ssl",
        "val/fid_ssl_lo",
        "val/precision_ssl",
        "val/recall_ssl",
        "val/density_ssl",
        "val/coverage_ssl",
        "features/ssl_knn_acc",
        "val/nelbo_nats",
        "val/nelbo_bpd",
        "val/psnr",
        "val/ssim",
        "features/val_acc",
        "time/train_s",
        "time/sample_images_per_s",
    ]:
        assert key in metrics, key
    assert "val/nll_bpd" not in metrics  # Bernoulli VAE: no 8-bit likelihood, so the key is absent (not 0)
    assert metrics["features/val_acc"] >= 0.97
    assert metrics["time/train_steps_per_s"] == pytest.approx(metrics["train/global_step"] / metrics["time/train_s"])
    assert 0 <= metrics["val/copy_rate_classifier"] <= 1 and 0 <= metrics["val/copy_rate_pixels"] <= 1
    assert metrics["val/fid_classifier_lo"] <= metrics["val/fid_classifier"] <= metrics["val/fid_classifier_hi"]
    assert 0 <= metrics["val/coverage_classes"] <= 10
    assert metrics["run/family"] == "vae" and metrics["eval/n_samples"] == 200
    assert metrics["eval/features"] == "classifier" and metrics["eval/feature_spaces"] == "classifier,ssl"
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert (out / "nearest_training_images.png").is_file()  # samples above their nearest training images
    for name in ("samples", "reconstructions", "interpolation"):
        assert Image.open(out / f"{name}.png").size[0] > 28


def test_checkpoint_is_plain_data_with_the_config(vae_run):
    _, out = vae_run
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["gensuite"]["family"] == "vae"
    assert ckpt["gensuite"]["config"]["model"]["_target_"] == "gensuite.families.vae.VAE"
    assert "optimizer_factory" not in ckpt.get("hyper_parameters", {})


def test_tensorboard_holds_scalars_images_and_hparams(vae_run):
    _, out = vae_run
    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"train/loss", "val/fid_classifier", "val/nelbo_nats"} <= set(tags["scalars"])
    assert {"samples/samples", "samples/reconstructions", "samples/interpolation"} <= set(tags["images"])
    assert "samples/nearest_training_images" in tags["images"]
    plugins = acc.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in plugins


def test_sample_entry_point_needs_only_the_checkpoint(vae_run, tmp_path):
    _, out = vae_run
    png = tmp_path / "grid.png"
    proc = run_entry("sample.py", f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}", "n=16", f"out={png}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    w, h = Image.open(png).size
    assert w == h == 4 * 29 + 1  # 4x4 grid of 28px images with 1px padding


def test_eval_reproduces_the_final_metrics(vae_run, cache_dir):
    from gensuite.eval import evaluate

    _, out = vae_run
    cfg = compose_cfg(
        [
            f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}",
            "use_run_metrics=false",  # in-process there are no command-line overrides to merge: give them all
            "metrics.n_samples=200",
            "metrics.batch_size=100",
            "metrics.kid_subset_size=50",
            "metrics.reference_size=400",
            f"metrics.ssl_steps={SSL_STEPS}",
            f"metrics.cache_dir={cache_dir}",
            f"out={out / 'eval.json'}",
        ],
        config_name="eval",
    )
    trained = json.loads((out / "metrics.json").read_text())
    evaluated = evaluate(cfg)
    assert evaluated["val/fid_classifier"] == pytest.approx(trained["val/fid_classifier"], rel=1e-5)
    assert evaluated["val/nelbo_nats"] == pytest.approx(trained["val/nelbo_nats"], rel=0.05)
    assert json.loads((out / "eval.json").read_text())["val/fid_classifier"] == evaluated["val/fid_classifier"]


def test_resume_continues_the_step_count(make_cfg, tmp_path):
    first = train(make_cfg(SMALL_VAE, output_dir=tmp_path / "a"))
    assert first["trainer"].global_step == 3
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    second = train(make_cfg(SMALL_VAE + ["trainer.max_epochs=2", f"ckpt_path={last}"], output_dir=tmp_path / "b"))
    assert second["trainer"].global_step == 6
    assert second["trainer"].current_epoch == 2


def test_max_time_stops_an_open_ended_run(make_cfg, tmp_path):
    """trainer.max_time is the equal budget of compare.py: it must stop a run with no epoch or step limit, and a
    schedule left open (total_steps=-1) decays over the clock's budget instead of holding the base rate."""
    cfg = make_cfg(
        SMALL_VAE + ["trainer.max_epochs=-1", "trainer.max_steps=-1", "trainer.max_time=00:00:00:03",
                     "+model/scheduler=warmup_cosine", "model.scheduler.warmup_steps=0", "model.optimizer.lr=0.01"],
        output_dir=tmp_path,
    )  # fmt: skip
    result = train(cfg)  # with no epoch or step limit, only the clock can end it
    assert result["trainer"].global_step >= 1
    assert result["metrics"]["time/train_s"] < 60
    lr = result["trainer"].optimizers[0].param_groups[0]["lr"]
    assert 0.001 <= lr < 0.003  # 0.1 x the base rate at the end of the budget, up to the last batch's share


def test_evaluation_during_fit_is_kept_off_the_training_clock(make_cfg, tmp_path):
    """compare.py's settings: time-based validation, FID every N seconds; evaluating must not eat the budget."""
    cfg = make_cfg(
        SMALL_VAE
        + [
            "trainer.max_epochs=2",
            "trainer.limit_train_batches=1.0",
            "trainer.val_check_interval=00:00:00:01",  # what compare.py passes, as a time
            "callbacks.evaluation.every_n_seconds=0.5",
            "callbacks.evaluation.n_samples_during_fit=200",
            "metrics.features=classifier",  # one space is enough to time; each evaluation costs half
        ],
        output_dir=tmp_path,
    )
    result = train(cfg)
    metrics = result["metrics"]
    assert metrics["time/fit_eval_s"] > 0  # at least one evaluation ran during fit
    evaluation = next(cb for cb in result["trainer"].callbacks if isinstance(cb, Evaluation))
    assert evaluation.fit_eval_s == pytest.approx(metrics["time/fit_eval_s"])


def test_the_training_clock_counts_training_batches_only(monkeypatch):
    """Fetching and training a batch count; a validation pass and a checkpoint write between batches do not; the
    run stops at the batch that reaches the budget, and the reading survives a resume (state_dict)."""
    import gensuite.callbacks.clock as clock_module

    now = [0.0]
    monkeypatch.setattr(clock_module.time, "perf_counter", lambda: now[0])
    trainer = SimpleNamespace(should_stop=False, strategy=SimpleNamespace(broadcast=lambda v, src=0: v))
    clock = clock_module.TrainingClock("00:00:00:10")
    assert clock.duration == 10.0
    clock.on_train_epoch_start(trainer, None)
    now[0] += 1  # fetching the first batch
    clock.on_train_batch_start(trainer, None, None, 0)
    now[0] += 3  # its step
    clock.on_train_batch_end(trainer, None, None, None, 0)
    clock.on_save_checkpoint(trainer, None, {})
    now[0] += 50  # a checkpoint write
    clock.on_train_batch_start(trainer, None, None, 1)
    now[0] += 2
    clock.on_train_batch_end(trainer, None, None, None, 1)
    clock.on_validation_start(trainer, None)
    now[0] += 100  # validation and a sample evaluation
    clock.on_train_batch_start(trainer, None, None, 2)
    assert clock.time_elapsed() == 6.0 and not trainer.should_stop
    now[0] += 4
    clock.on_train_batch_end(trainer, None, None, None, 2)
    assert clock.elapsed == 10.0 and trainer.should_stop
    resumed = clock_module.TrainingClock("00:00:00:10")
    resumed.load_state_dict(clock.state_dict())
    assert resumed.time_elapsed() == 10.0
    with pytest.raises(ConfigError, match="max_time"):
        clock_module.TrainingClock("ten minutes")


def test_vae_loss_falls_on_mnist5k(make_cfg):
    cfg = make_cfg(SMALL_VAE + ["data.batch_size=64"])
    torch.manual_seed(0)
    dm, model = instantiate_checked(cfg, "data"), instantiate_checked(cfg, "model")
    opt = model.configure_optimizers()
    losses = []
    loader = iter(dm.train_dataloader())
    for _ in range(60):
        loss = model.losses(next(loader))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.6 * first, (first, last)
