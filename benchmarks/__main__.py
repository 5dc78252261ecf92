"""``python -m benchmarks`` runs every CPU benchmark; ``python -m benchmarks overhead data_throughput`` some
(``python -m benchmarks gpu_check`` on a GPU machine; ``python -m benchmarks peers``, ~3.8 h, only when named)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

ON_REQUEST = ("peers",)  # needs pip install .[peers] and ~3.8 h


def main(names: list[str]) -> None:
    here = Path(__file__).parent
    available = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name not in ("common", "__main__"))
    # the GPU scripts, and the hours-long runs against other libraries, run only when named
    default = [n for n in available if not n.startswith("gpu_") and n not in ON_REQUEST]
    for name in names or default:
        if name not in available:
            sys.exit(f"unknown benchmark {name!r}; available: {', '.join(available)}")
        print(f"\n## {name}\n", flush=True)
        # the command line names benchmarks: none of it is a benchmark's own argument, so each runs its defaults
        importlib.import_module(f"benchmarks.{name}").main([])


if __name__ == "__main__":
    main(sys.argv[1:])
