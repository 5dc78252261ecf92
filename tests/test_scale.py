"""Scale through the real entry point: 2-process DDP on CPU (gloo) for every family, multirun + DDP, torchrun,
the Optuna sweep, and the cluster configs composing. New families are picked up from conf/model/ automatically."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gensuite import registry

from .conftest import ROOT, SMALL_NETS, TINY, compose_cfg, run_entry

DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
# a small evaluation: what is tested is that both ranks' samples were gathered, not their quality
SMALL_EVAL = ["metrics.n_samples=60", "metrics.batch_size=30", "metrics.kid_subset_size=20"]


def _single_folder(log_dir: Path) -> Path:
    runs = [p for p in (log_dir / "runs").glob("*/*") if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


@pytest.mark.parametrize("family", registry.names())
def test_ddp_two_processes_one_folder_synced_metrics(family, tmp_path, cache_dir, prerequisites):
    extra = prerequisites(family) + SMALL_NETS.get(family, []) + SMALL_EVAL
    log_dir = tmp_path / "logs"
    proc = run_entry(
        "train.py", f"model={family}", *TINY, *DDP, *extra, f"paths.cache_dir={cache_dir}", f"paths.log_dir={log_dir}"
    )
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    run = _single_folder(log_dir)
    # rank 1 logged into rank 0's folder; only rank 0 wrote events, checkpoints and metrics
    assert (run / "train_ddp_process_1.log").is_file()
    # event files are named events.out.tfevents.<time>.<host>.<pid>.<n>: all from one process (rank 0)
    events = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert events and len({p.name.split(".")[-2] for p in events}) == 1, events
    assert (run / "checkpoints" / "last.ckpt").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    if metrics.get("eval/features"):
        # 60 samples = 30 drawn on each rank, gathered: the FID saw both ranks' samples
        assert metrics["eval/n_samples"] == 60
        assert metrics["val/fid_classifier"] > 0


def test_multirun_with_ddp_runs_each_job_once_in_its_own_folder(tmp_path, cache_dir):
    log_dir = tmp_path / "logs"
    proc = run_entry(
        "train.py",
        "-m",
        "seed=1,2",
        *TINY,
        *DDP,
        "model.encoder.width=8",
        "model.decoder.width=8",
        f"paths.cache_dir={cache_dir}",
        f"paths.log_dir={log_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweeps = list((log_dir / "multiruns").iterdir())
    assert len(sweeps) == 1, sweeps  # upstream, each DDP child would start a sweep of its own
    jobs = sorted(p for p in sweeps[0].iterdir() if p.is_dir())
    assert [j.name for j in jobs] == ["0-vae", "1-vae"]
    for job in jobs:
        assert (job / "metrics.json").is_file() and (job / "train_ddp_process_1.log").is_file()
    assert not (log_dir / "runs").exists()
    seeds = [json.loads((j / "metrics.json").read_text())["run/seed"] for j in jobs]
    assert seeds == [1, 2]


def test_torchrun_ranks_agree_on_one_run_folder(tmp_path, cache_dir):
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun is not installed beside this python")
    log_dir = tmp_path / "logs"
    proc = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node=2",
            str(ROOT / "train.py"),
            *TINY,
            *DDP,
            "model.encoder.width=8",
            "model.decoder.width=8",
            f"paths.cache_dir={cache_dir}",
            f"paths.log_dir={log_dir}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = _single_folder(log_dir)
    assert run.name.startswith("torchrun-")
    assert (run / "metrics.json").is_file()


def test_optuna_sweep_optimises_a_validation_metric(tmp_path, cache_dir):
    log_dir = tmp_path / "logs"
    proc = run_entry(
        "train.py",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        *TINY,
        "model.encoder.width=8",
        "model.decoder.width=8",
        f"paths.cache_dir={cache_dir}",
        f"paths.log_dir={log_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = next((log_dir / "multiruns").iterdir())
    result = (sweep / "optimization_results.yaml").read_text()
    assert "best_value" in result and "model.optimizer.lr" in result
    values = [json.loads((j / "metrics.json").read_text())["val/fid_classifier"] for j in sweep.glob("*-vae")]
    assert len(values) == 2


@pytest.mark.parametrize("launcher", ["slurm", "submitit_local"])
def test_cluster_launcher_configs_compose(launcher, tmp_path):
    cfg = compose_cfg([f"hydra/launcher={launcher}", "trainer=ddp", "trainer.num_nodes=2"], tmp_path / "x")
    assert cfg.hydra.launcher._target_.startswith("hydra_plugins.hydra_submitit_launcher")
    assert cfg.trainer.num_nodes == 2
    if launcher == "slurm":  # one task per GPU on every node, as Lightning's SLURM environment requires
        assert cfg.hydra.launcher.nodes == 2 and cfg.hydra.launcher.tasks_per_node == cfg.trainer.devices


@pytest.fixture
def prerequisites(tmp_path, cache_dir):
    """``family -> overrides`` for what a family needs that a test must make first (`registry.Family.needs`): a
    family built on ``autoencoder_ckpt`` (latent models) gets a tiny trained VAE checkpoint."""
    needs = {f.name: f.needs for f in registry.families()}

    def make(family: str) -> list[str]:
        if not needs[family]:
            return []
        assert needs[family] == ("autoencoder_ckpt",), f"{family} needs {needs[family]}: teach this fixture to make it"
        from gensuite.train import train

        vae = train(
            compose_cfg(
                [*TINY, "model.encoder.width=8", "model.decoder.width=8", f"paths.cache_dir={cache_dir}"],
                tmp_path / "vae",
            )
        )
        return [f"autoencoder_ckpt={vae['output_dir'] / 'checkpoints' / 'last.ckpt'}"]

    return make
