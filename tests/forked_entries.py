"""Entry-point runs at the cost of one interpreter start: `run_entry_forked` runs ``python <script> <args>`` in a
child forked from a server process that has imported the suite once (multiprocessing's ``forkserver``; the server
is a fresh interpreter, not this pytest process, so no test's state leaks in). A child is what ``python train.py
...`` is after its imports: the script runs as ``__main__`` with that ``sys.argv``, the caller's environment (read
at the call, as a subprocess would inherit it), the script's folder first on ``sys.path``, its stdout and stderr in
files, the ``atexit`` handlers run at its end, and its exit status the ``SystemExit`` code. It saves the ~5 s of
importing torch and Lightning per run, which for a one-second error case is nearly all of its time.
`tests/test_bad_inputs.py` checks a case against a real subprocess."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRELOAD = ["gensuite.entry", "gensuite.train", "gensuite.sample", "gensuite.eval", "gensuite.compare"]
ENV = {"PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}

_context = None


def _forkserver():
    global _context
    if _context is None:
        _context = mp.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def _child(script: str, args: list[str], cwd: str, env: dict[str, str], out: str, err: str) -> None:
    """The body of one run, in the forked child (its exit status is set by multiprocessing from SystemExit)."""
    import atexit
    import runpy

    for fd, path in ((1, out), (2, err)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(target, fd)
        os.close(target)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 (the process's own streams)
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    sys.argv = [script, *args]
    # a new interpreter's path: the script's folder, then PYTHONPATH's entries, then the rest
    extra = [str(Path(script).parent), *(e for e in env.get("PYTHONPATH", "").split(os.pathsep) if e)]
    sys.path[:0] = extra
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        atexit._run_exitfuncs()  # what an interpreter does at its end (multiprocessing's child ends with os._exit)


def run_entry_forked(
    script: str, *args: str, cwd: Path | None = None, timeout: int = 900, env: dict[str, str] | None = None
):
    """``python <ROOT/script> <args>`` in a forked child: a `subprocess.CompletedProcess` like `run_entry`'s."""
    full_env = {**os.environ, **ENV, **(env or {})}
    with tempfile.TemporaryDirectory() as tmp:
        out, err = Path(tmp, "out"), Path(tmp, "err")
        child_args = (str(ROOT / script), list(args), str(cwd or ROOT), full_env, str(out), str(err))
        proc = _forkserver().Process(target=_child, args=child_args)
        proc.start()
        proc.join(timeout)
        if proc.exitcode is None:
            proc.kill()
            proc.join()
            raise subprocess.TimeoutExpired([script, *args], timeout)
        read = lambda p: p.read_text(errors="replace") if p.exists() else ""  # noqa: E731
        return subprocess.CompletedProcess([script, *args], proc.exitcode, read(out), read(err))


def run_entries(table: dict[str, tuple[str, list[str]]], cwd: Path, workers: int = 2) -> dict:
    """``name -> (script, args)`` -> ``name -> CompletedProcess``, ``workers`` at a time."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {name: pool.submit(run_entry_forked, s, *a, cwd=cwd) for name, (s, a) in table.items()}
        return {name: f.result() for name, f in futures.items()}
