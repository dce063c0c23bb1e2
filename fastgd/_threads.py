"""BLAS threads chosen by the size of the work, so that more cores never slow a fit.

Handing small matrices to a multi-threaded BLAS costs more in waking and
synchronising its threads than the product itself: below ``MIN_FLOPS_PER_THREAD``
of work per step and thread, fits run BLAS on one thread. Above it, the
process's own setting (``threadpoolctl``, ``OMP_NUM_THREADS``, ...) stands.
Measured on two cores: a second thread paid off for [784, 256, 128, 10] on
60,000 rows a step (60 GFLOP), not for 64 rows (64 MFLOP) nor for
[10, 64, 32, 3] on 1,500 rows (23 MFLOP).
"""

from contextlib import nullcontext

import scipy.linalg  # noqa: F401  (loads SciPy's BLAS, the one Numba's and Cython's kernels call)
from threadpoolctl import ThreadpoolController

MIN_FLOPS_PER_THREAD = 1e8

# Made at import (after NumPy and SciPy have loaded their BLAS): building it
# scans the process's libraries, ~8 ms that would otherwise fall on a first fit.
_BLAS = ThreadpoolController().select(user_api="blas")


def step_flops(layout, rows):
    """FLOPs of one training step on ``rows`` rows: ``rows * (4 W + 2 (W - W1))``."""
    weights = int((layout[:, 0] * layout[:, 1]).sum())
    return rows * (6 * weights - 2 * int(layout[0, 0] * layout[0, 1]))


def blas_threads_for(layout, rows):
    """A context in which BLAS uses as many threads as ``rows``-row steps repay."""
    allowed = max((info["num_threads"] for info in _BLAS.info()), default=1)
    wanted = max(1, min(allowed, int(step_flops(layout, rows) // MIN_FLOPS_PER_THREAD)))
    return nullcontext() if wanted >= allowed else _BLAS.limit(limits=wanted)
