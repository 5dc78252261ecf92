"""The forked entry runner itself: a child must end as an interpreter does (tests/forked_entries.py)."""

import atexit

from .forked_entries import run_entry_forked


def test_a_forked_run_keeps_exit_status_streams_and_atexit_handlers(tmp_path):
    # the runner calls the private atexit._run_exitfuncs (multiprocessing ends a child with os._exit, which skips
    # them): if a Python upgrade renames it, this fails here rather than as lost log lines in other tests
    assert callable(getattr(atexit, "_run_exitfuncs", None)), "atexit._run_exitfuncs is gone: see forked_entries.py"
    marker = tmp_path / "atexit-ran"
    script = tmp_path / "entry.py"
    script.write_text(
        "import atexit, sys\n"
        f"atexit.register(lambda: open({str(marker)!r}, 'w').write('yes'))\n"
        "print('out', sys.argv[1:])\n"
        "print('err', file=sys.stderr)\n"
        "sys.exit(3)\n"
    )
    proc = run_entry_forked(str(script), "a=1", cwd=tmp_path)
    assert proc.returncode == 3
    assert proc.stdout.strip() == "out ['a=1']" and proc.stderr.strip() == "err"
    assert marker.read_text() == "yes"
