"""``python -m gensuite <train|sample|eval|compare> [overrides]``: the checkout's ``train.py``, ``sample.py``,
``eval.py`` and ``compare.py`` for an installed suite, from any folder (`gensuite.entry` holds all four)."""

from __future__ import annotations

import os
import sys

#: command -> (the `gensuite.entry` function, what it does)
COMMANDS = {
    "train": ("train", "train one model (or a sweep with -m); writes a run folder under logs/"),
    "sample": ("sample", "samples of a checkpoint: ckpt_path=<.ckpt> n=64 [format=grid|npz|png]"),
    "eval": ("evaluate", "the metrics of a checkpoint (ckpt_path=) or of given samples (samples= data=)"),
    "compare": ("compare", "train every family under one budget (or read runs=<folder>) and write a report"),
}
#: the command of this process, for the ranks Lightning's DDP launcher starts again: it runs
#: ``python -m gensuite.__main__ <the overrides>`` (the command word is not among them) with this environment
COMMAND_ENV = "GENSUITE_COMMAND"


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: python -m gensuite <command> [hydra overrides...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items()]
    lines += ["", "e.g.   python -m gensuite train model=gan data=mnist5k"]
    lines += ["help:  python -m gensuite <command> --help"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] in COMMANDS:
        command, overrides = args[0], args[1:]
    elif os.environ.get(COMMAND_ENV) in COMMANDS and "LOCAL_RANK" in os.environ:  # a relaunched DDP rank
        command, overrides = os.environ[COMMAND_ENV], args
    else:
        given = f"unknown command {args[0]!r}" if args else "no command given"
        print(f"{given}\n\n{usage()}", file=sys.stderr)
        raise SystemExit(2)
    os.environ[COMMAND_ENV] = command
    sys.argv = [sys.argv[0], *overrides]  # what Hydra parses
    from gensuite import entry

    getattr(entry, COMMANDS[command][0])()


if __name__ == "__main__":
    main()
