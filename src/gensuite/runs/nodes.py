"""One run folder for every node of a run started by hand on several machines (``NODE_RANK=<n> MASTER_ADDR=...
MASTER_PORT=... python train.py trainer=ddp trainer.num_nodes=<N>``).

Each node resolves ``hydra.run.dir`` itself, and without a launcher's job id (SLURM, torchrun: see
`gensuite.cli.hydra_hooks.run_stamp`) the folder is named after the local time, which differs from node to node: every
node > 0 used to leave a folder of its own holding only its ``.hydra/`` and ``train.log``. Here the nodes agree
on node 0's name before Hydra makes any folder, over the address they are already given, ``MASTER_ADDR:MASTER_PORT``:

- node 0 listens there (before torch.distributed does), greets each node that connects with its stamp, and stops
  listening once every node 1..N-1 has acknowledged it (then, seconds later, Lightning's rendezvous binds the port);
- a node > 0 connects (retrying until node 0 is up, so either may start first), reads the stamp, acknowledges it.

The announcement lives only in node 0's live process: nothing is left behind for a later run on the same port to
pick up, and no shared filesystem is needed (without one each node still writes its own folder of that name).
Both sides wait at most `wait_s` (``GENSUITE_NODE_WAIT_S``, default 120 s), then stop with a one-screen message
(exit status 2) naming the way out: ``GENSUITE_RUN_ID`` or ``hydra.run.dir`` set alike on every node.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
import time

from gensuite.errors import ConfigError

HELLO = "gensuite-run-stamp/1"
DEFAULT_WAIT_S = 120.0
WAIT_ENV = "GENSUITE_NODE_WAIT_S"
# a launcher that numbers the processes itself (torchrun, Kubeflow, MPI, LSF): not a by-hand multi-node start
_LAUNCHER_VARS = ("RANK", "GROUP_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "JSM_NAMESPACE_RANK")
_agreed: dict[tuple, str] = {}  # (addr, port, node rank, nodes) -> the stamp: agreed once per process


def wait_s() -> float:
    try:
        return float(os.environ.get(WAIT_ENV, DEFAULT_WAIT_S))
    except ValueError:
        return DEFAULT_WAIT_S


def manual_nodes(num_nodes) -> tuple[str, int, int, int] | None:
    """``(MASTER_ADDR, MASTER_PORT, node rank, number of nodes)`` when this process is the local rank 0 of one
    node of a several-node run that no launcher numbered, else None."""
    node = node_rank(num_nodes)
    if node is None or os.environ.get("LOCAL_RANK", "0") not in ("", "0"):
        return None  # one node; or a rank Lightning relaunched (it passes hydra.run.dir itself)
    try:
        port = int(os.environ.get("MASTER_PORT", ""))
    except ValueError:
        return None  # Lightning would pick a port of its own on each node: they could not meet anyway
    return os.environ.get("MASTER_ADDR") or "127.0.0.1", port, node, int(num_nodes)


def node_rank(num_nodes) -> int | None:
    """This node's ``NODE_RANK`` (Lightning's default 0 when unset) in a several-node run that no launcher
    numbered; None for one node, or under a launcher (torchrun, MPI, Kubeflow, LSF) that numbers the processes."""
    try:
        nodes = int(num_nodes)
        node = int(os.environ.get("NODE_RANK") or 0)
    except (TypeError, ValueError):
        return None
    if nodes <= 1 or any(os.environ.get(var) for var in _LAUNCHER_VARS):
        return None
    return node


def hydra_subdir(num_nodes) -> str | None:
    """``hydra.output_subdir``: ``.hydra`` but on a node > 0, whose config is node 0's (as Lightning's relaunched
    local ranks, which it starts with ``hydra.output_subdir=null``)."""
    return ".hydra" if not node_rank(num_nodes) else None


def log_suffix(num_nodes) -> str:
    """Of the log file name, after ``hydra.job.name``: ``_node_<n>`` on a node n > 0 (``train_node_1.log``,
    ``train_ddp_process_1_node_1.log``), so that no two processes of the run append to one file."""
    node = node_rank(num_nodes)
    return f"_node_{node}" if node else ""


def agree_on_stamp(own_stamp: str, addr: str, port: int, node: int, nodes: int, timeout: float | None = None) -> str:
    """Node 0's stamp, on every node: node 0 hands ``own_stamp`` out, a node > 0 returns what node 0 handed out.
    Once per process (a second call returns the first answer). `ConfigError` when the nodes do not meet."""
    key = (addr, port, node, nodes)
    if key not in _agreed:
        timeout = wait_s() if timeout is None else timeout
        if node == 0:
            _serve(own_stamp, addr, port, nodes, timeout)
            _agreed[key] = own_stamp
        else:
            _agreed[key] = _fetch(addr, port, node, nodes, timeout)
    return _agreed[key]


def _way_out(addr: str, port: int) -> str:
    return (
        f"start every node with the same MASTER_ADDR={addr} MASTER_PORT={port} and trainer.num_nodes, and "
        "NODE_RANK=0..N-1 (each once); allow longer with "
        f"{WAIT_ENV}=<seconds>; or name the folder yourself, alike on every node: GENSUITE_RUN_ID=<name> "
        "(or hydra.run.dir=<dir>)"
    )


def _listener(addr: str, port: int) -> socket.socket:
    try:
        host = addr if _is_local(addr) else ""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return socket.create_server((host, port), family=family)  # SO_REUSEADDR: the port is torch's next
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"node 0 cannot listen at MASTER_PORT={port}: another program uses that port on this machine "
                "(another training's rendezvous?)",
                fix="choose a free port, MASTER_PORT=<port>, alike on every node",
            ) from None
        raise ConfigError(
            f"node 0 cannot listen at MASTER_ADDR={addr} MASTER_PORT={port} ({err.strerror or err})",
            fix="MASTER_ADDR must name node 0 (the machine with NODE_RANK=0) and MASTER_PORT a free port",
        ) from None


def _is_local(addr: str) -> bool:
    try:
        with socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET) as probe:
            probe.bind((addr, 0))
        return True
    except OSError:
        return False


def _serve(stamp: str, addr: str, port: int, nodes: int, timeout: float) -> None:
    """Node 0: greet every node that connects with ``stamp`` until nodes 1..nodes-1 have all acknowledged it."""
    missing = set(range(1, nodes))
    deadline = time.monotonic() + timeout
    with _listener(addr, port) as server:
        while missing:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ConfigError(
                    f"node 0 of {nodes} waited {timeout:g} s at MASTER_ADDR={addr} MASTER_PORT={port} for node(s) "
                    f"{', '.join(map(str, sorted(missing)))} to start, to agree with them on the run folder",
                    fix=_way_out(addr, port),
                )
            server.settimeout(min(left, 1.0))
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5.0)
                try:
                    conn.sendall(f"{HELLO} {stamp} {nodes}\n".encode())
                    words = _read_line(conn).split()
                    if len(words) == 2 and words[0] == "ack" and words[1].isdigit():
                        missing.discard(int(words[1]))
                        _read_line(conn)  # until the node hangs up: it closes first, the port stays clean
                except OSError:
                    continue  # a node that gave up, or something that is not a node: wait for the next


def _fetch(addr: str, port: int, node: int, nodes: int, timeout: float) -> str:
    """Node > 0: node 0's stamp, waiting for node 0 to listen."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = socket.create_connection((addr, port), timeout=min(5.0, max(timeout, 0.1)))
        except OSError:
            if time.monotonic() > deadline:
                raise ConfigError(
                    f"node {node} of {nodes} waited {timeout:g} s for node 0 at MASTER_ADDR={addr} "
                    f"MASTER_PORT={port}, to agree with it on the run folder",
                    fix=_way_out(addr, port),
                ) from None
            time.sleep(0.2)
            continue
        with conn:
            conn.settimeout(10.0)
            try:
                words = _read_line(conn).split()
            except OSError:
                words = []
            if len(words) != 3 or words[0] != HELLO:
                raise ConfigError(
                    f"node {node}: MASTER_ADDR={addr} MASTER_PORT={port} answers, but not as node 0 of a "
                    "gensuite run that is starting (another program, or a training already running, uses it)",
                    fix="give every node of this run a port no other run uses: MASTER_PORT=<free port>",
                )
            _, stamp, their_nodes = words
            if their_nodes != str(nodes) or node >= nodes:
                raise ConfigError(
                    f"node {node} runs with trainer.num_nodes={nodes}, node 0 with trainer.num_nodes={their_nodes}",
                    fix="start every node with the same trainer.num_nodes, and NODE_RANK below it",
                )
            conn.sendall(f"ack {node}\n".encode())
            return stamp


def _read_line(conn: socket.socket, limit: int = 1024) -> str:
    data = b""
    while not data.endswith(b"\n") and len(data) < limit:
        chunk = conn.recv(limit)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").strip()


def stop_with(error: ConfigError) -> None:
    """Print ``error`` on one screen and exit with its status: raised while Hydra resolves ``hydra.run.dir``,
    an exception would come out wrapped in OmegaConf's and Hydra's tracebacks."""
    print("\n" + error.render() + "\n", file=sys.stderr, flush=True)
    sys.exit(error.exit_code)
