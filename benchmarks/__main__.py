"""Entry point: ``python -m benchmarks [--quick] [--only NAME]`` prints every table and exits 0.

Why one command that always exits 0: the figures are for people (and the design notes), not a CI
gate; a noisy shared runner must not fail a build. Budgets are shown in the tables instead.
"""

from __future__ import annotations

import argparse
import platform

import benchmarks  # noqa: F401  (pins BLAS threads before numpy is imported below)
from benchmarks.common import pin_to_one_core


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="few runs, for a smoke test (seconds, not minutes)")
    parser.add_argument("--only", choices=("load", "morph", "service", "local", "gui", "lipsync", "lipsync-accuracy"),
                        help="run a single benchmark")
    args = parser.parse_args(argv)

    threading = pin_to_one_core()
    import numpy as np

    print(f"avatar_studio benchmarks{' (quick)' if args.quick else ''}")
    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}")
    print(f"threads: {threading}")

    from benchmarks import (
        bench_gui,
        bench_lipsync,
        bench_lipsync_accuracy,
        bench_load,
        bench_local,
        bench_morph,
        bench_service,
    )

    if args.only in (None, "load"):
        bench_load.run(quick=args.quick)
    if args.only in (None, "morph"):
        bench_morph.run(quick=args.quick)
    if args.only in (None, "service"):
        bench_service.run(quick=args.quick)
    if args.only in (None, "local"):
        bench_local.run(quick=args.quick)
    if args.only in (None, "gui"):
        bench_gui.run(quick=args.quick)
    if args.only in (None, "lipsync"):
        bench_lipsync.run(quick=args.quick)
    if args.only in (None, "lipsync-accuracy"):
        bench_lipsync_accuracy.run(quick=args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
