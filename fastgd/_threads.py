"""Threads chosen by the size of the work, so that more cores never slow a fit.

Handing small steps to several threads costs more in waking and synchronising
them than the work itself: below ``MIN_FLOPS_PER_THREAD`` of work per step and
thread, fits run on one thread. Above it they take up to the process's BLAS
thread limit (``threadpoolctl``, ``OMP_NUM_THREADS``, ...): an epoch of one batch
splits its rows into shares, one per thread, each share's BLAS calls on one
thread (``fastgd.kernels.Kernels.epochs``); steps of a mini-batch leave the
threads to BLAS. Measured on two cores: a second thread paid off for
[784, 256, 128, 10] on 60,000 rows a step (60 GFLOP), not for 64 rows (64 MFLOP)
nor for [10, 64, 32, 3] on 1,500 rows (23 MFLOP).
"""

import threading
from concurrent.futures import ThreadPoolExecutor
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


def _allowed():
    return max((info["num_threads"] for info in _BLAS.info()), default=1)


def threads_for(layout, rows):
    """The threads that steps of ``rows`` rows repay, at most the process's BLAS thread limit."""
    return max(1, min(_allowed(), int(step_flops(layout, rows) // MIN_FLOPS_PER_THREAD)))


def blas_threads(threads):
    """A context in which BLAS uses at most ``threads`` threads."""
    return nullcontext() if threads >= _allowed() else _BLAS.limit(limits=threads)


def blas_threads_for(layout, rows):
    """A context in which BLAS uses as many threads as ``rows``-row steps repay."""
    return blas_threads(threads_for(layout, rows))


_workers = {"pool": None, "size": 0, "lock": threading.Lock()}


def pool(size):
    """A pool of at least ``size`` threads, kept for the process. A larger one replaces it; the one
    before is left running (another thread may be about to hand it work), its threads idle."""
    with _workers["lock"]:
        if _workers["size"] < size:
            _workers["pool"] = ThreadPoolExecutor(size, thread_name_prefix="fastgd")
            _workers["size"] = size
        return _workers["pool"]
