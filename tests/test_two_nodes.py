"""One run, one folder, however many nodes: nodes started by hand (``NODE_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``, ``trainer.num_nodes``) agree on node 0's run folder (`gensuite.runs.nodes`). Two real local nodes
(gloo, one process each) through the entry point, and the exchange itself in threads."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from gensuite.cli.hydra_hooks import run_stamp
from gensuite.errors import ConfigError
from gensuite.runs import nodes

from .conftest import TINY, compose_cfg, run_entry

# what is tested is where the nodes write, not what they learn: the smallest data and net, no sample metrics
SMALL = ["data=digits", "model.encoder.width=8", "model.decoder.width=8", "callbacks.evaluation=null"]
TWO_NODES = ["trainer=ddp", "trainer.num_nodes=2", "trainer.devices=1", "trainer.accelerator=cpu"]
ENV_VARS = ("NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "GENSUITE_RUN_ID", "GENSUITE_NODE_WAIT_S")
ENV_VARS += nodes._LAUNCHER_VARS + ("SLURM_JOB_ID", "TORCHELASTIC_RUN_ID")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(nodes, "_agreed", {})


def _node(rank: int, port: int, log_dir: Path, cache_dir: Path, delay: float):
    time.sleep(delay)
    env = {"NODE_RANK": str(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    args = [*TINY, *SMALL, *TWO_NODES, f"paths.cache_dir={cache_dir}", f"paths.log_dir={log_dir}"]
    return run_entry("train.py", *args, real=True, env=env, timeout=300)


# node 1 first, the harder order (node 0 first is covered by the exchange's thread tests below)
@pytest.mark.parametrize("first", [1], ids=["node1-first"])
def test_two_local_nodes_train_into_one_folder(first, tmp_path, cache_dir):
    """Two nodes, one process each, the second started 3 s after the first: one run folder, node 0's."""
    log_dir, port = tmp_path / "logs", free_port()
    with ThreadPoolExecutor(2) as pool:
        procs = {r: pool.submit(_node, r, port, log_dir, cache_dir, 0.0 if r == first else 3.0) for r in (0, 1)}
        procs = {r: f.result() for r, f in procs.items()}
    for rank, proc in procs.items():
        assert proc.returncode == 0, (rank, proc.stdout[-2000:], proc.stderr[-3000:])
    runs = [p for p in (log_dir / "runs").glob("*/*") if p.is_dir()]
    assert len(runs) == 1, runs  # node 1 used to leave a folder of its own with .hydra/ and train.log
    run = runs[0]
    assert (run / "metrics.json").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / ".hydra" / "config.yaml").is_file() and (run / "train.log").is_file()
    # node 1 logs beside node 0, into its own file, and writes no config of its own
    assert "GLOBAL_RANK: 1" in (run / "train_node_1.log").read_text()
    assert "GLOBAL_RANK: 1" not in (run / "train.log").read_text()
    assert not (run / ".gensuite.lock").exists()


# -- the exchange, in threads --------------------------------------------------------------------------------
def _both(port: int, first: int, timeout: float = 20.0) -> dict[int, str]:
    out: dict[int, str] = {}

    def node(rank: int) -> None:
        out[rank] = nodes.agree_on_stamp(f"stamp-of-{rank}", "127.0.0.1", port, rank, 3, timeout)

    threads = {r: threading.Thread(target=node, args=(r,)) for r in (0, 1, 2)}
    order = [first] + [r for r in (0, 1, 2) if r != first]
    for rank in order:
        threads[rank].start()
        time.sleep(0.5)
    for t in threads.values():
        t.join(30)
    return out


@pytest.mark.parametrize("first", [0, 1])
def test_every_node_gets_node_0s_stamp_whichever_starts_first(first):
    port = free_port()
    assert _both(port, first) == {0: "stamp-of-0", 1: "stamp-of-0", 2: "stamp-of-0"}
    with socket.create_server(("127.0.0.1", port)):  # and node 0 let go of the port, for torch.distributed
        pass


def test_a_finished_run_on_the_same_port_is_not_picked_up():
    port = free_port()
    assert _both(port, 0)[1] == "stamp-of-0"
    nodes._agreed.clear()
    with pytest.raises(ConfigError) as info:  # a node of a later run, whose node 0 never comes
        nodes.agree_on_stamp("late", "127.0.0.1", port, 1, 2, timeout=1.0)
    text = info.value.render()
    assert "node 1 of 2 waited 1 s for node 0 at MASTER_ADDR=127.0.0.1 MASTER_PORT=" in text
    assert "GENSUITE_RUN_ID=" in text and "hydra.run.dir=" in text and "GENSUITE_NODE_WAIT_S" in text


def test_node_0_waits_a_bounded_time_and_names_the_missing_nodes():
    with pytest.raises(ConfigError) as info:
        nodes.agree_on_stamp("s", "127.0.0.1", free_port(), 0, 3, timeout=1.0)
    assert "node 0 of 3 waited 1 s" in info.value.render() and "node(s) 1, 2 to start" in info.value.render()


def test_a_port_in_use_or_answered_by_something_else_is_reported():
    with socket.create_server(("127.0.0.1", 0)) as other:
        port = other.getsockname()[1]
        with pytest.raises(ConfigError, match="another program uses that port"):
            nodes.agree_on_stamp("s", "127.0.0.1", port, 0, 2, timeout=1.0)

        def greet_wrongly() -> None:
            conn, _ = other.accept()
            with conn:
                conn.sendall(b"hello\n")

        threading.Thread(target=greet_wrongly, daemon=True).start()
        with pytest.raises(ConfigError, match="answers, but not as node 0"):  # node 1 says so, does not wait
            nodes.agree_on_stamp("s", "127.0.0.1", port, 1, 2, timeout=5.0)


def test_different_num_nodes_are_reported_by_the_node_that_sees_it():
    port = free_port()
    node_0 = threading.Thread(
        target=lambda: pytest.raises(ConfigError, nodes.agree_on_stamp, "s", "127.0.0.1", port, 0, 3, 2.0)
    )
    node_0.start()
    with pytest.raises(ConfigError, match="trainer.num_nodes=2, node 0 with trainer.num_nodes=3"):
        nodes.agree_on_stamp("x", "127.0.0.1", port, 1, 2, timeout=3.0)
    node_0.join()  # and node 0, never acknowledged, stops after its wait


def test_who_takes_part(monkeypatch):
    monkeypatch.setenv("MASTER_PORT", "29511")
    assert nodes.manual_nodes(1) is None  # one node: the local time, as before
    assert nodes.manual_nodes(2) == ("127.0.0.1", 29511, 0, 2)  # NODE_RANK unset is node 0, as for Lightning
    monkeypatch.setenv("NODE_RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.1")
    assert nodes.manual_nodes("2") == ("10.0.0.1", 29511, 1, 2)
    assert (nodes.hydra_subdir(2), nodes.log_suffix(2)) == (None, "_node_1")
    monkeypatch.setenv("LOCAL_RANK", "1")  # Lightning's relaunch gets hydra.run.dir: it asks nobody
    assert nodes.manual_nodes(2) is None and nodes.log_suffix(2) == "_node_1"
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.setenv("RANK", "3")  # a launcher (Kubeflow, torchrun...) numbers the processes
    assert nodes.manual_nodes(2) is None and nodes.hydra_subdir(2) == ".hydra" and nodes.log_suffix(2) == ""


def test_a_named_run_needs_no_exchange(monkeypatch):
    monkeypatch.setenv("GENSUITE_RUN_ID", "my-run")
    monkeypatch.setenv("NODE_RANK", "1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    assert run_stamp(2) == "my-run"  # returned at once: nobody listens at the port


def test_one_node_configs_resolve_as_before(tmp_path):
    cfg = compose_cfg([], tmp_path / "run")
    assert cfg.hydra.output_subdir == ".hydra"
    assert Path(cfg.hydra.run.dir).parent.name == "vae-mnist5k"
    filename = OmegaConf.to_container(cfg.hydra.job_logging.handlers.file)["filename"]
    assert filename.endswith("${hydra.job.name}${gs_node_log_suffix:${oc.select:trainer.num_nodes,1}}.log")
