"""Performance checks for the avatar layer, each against a baseline measured in the same run.

Run with ``benchmarks/run`` (or ``.venv/bin/python -m benchmarks [--quick]``) from the repo root.

Why BLAS is pinned here, in the package ``__init__``: OpenBLAS/OpenMP read their thread count once,
when numpy is first imported, and ``python -m benchmarks`` imports this file before anything else.
The morph budget (≤ 0.5 ms at 30k vertices) is for one core, because the GUI thread shares the
machine with rendering and audio; a multi-threaded BLAS would flatter the figures.
"""

from __future__ import annotations

import os
import sys

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")
NUMPY_WAS_IMPORTED_FIRST = "numpy" in sys.modules
for _name in THREAD_VARIABLES:
    os.environ[_name] = "1"
