"""Threads chosen by the size of the work, so that more cores never slow a fit.

Handing small steps to several threads costs more in waking and synchronising
them than the work itself: below ``MIN_FLOPS_PER_THREAD`` of work per step and
thread, fits run on one thread. Above it they take up to the process's BLAS
thread limit (``threadpoolctl``, ``OMP_NUM_THREADS``, ...) and no more than the
CPUs the process may run on (its affinity, read at each fit: a worker held to one
CPU after it started trains on one thread): an epoch of one batch
splits its rows into shares, one per thread, each share's BLAS calls on one
thread (``fastgd.kernels.Kernels.epoch_runner``). Measured on two cores: a second thread
paid off for [784, 256, 128, 10] on 60,000 rows a step (60 GFLOP), not for 64
rows (64 MFLOP) nor for [10, 64, 32, 3] on 1,500 rows (23 MFLOP).

Where a backend's threads meet inside its compiled epoch (``Kernels.splits_batches``),
the steps of mini-batches split too (a small dense batch every layer's units, where
``Kernels.splits_units``; others their rows), from far less work: at least
``MIN_ROWS_PER_SHARE`` rows and ``MIN_FLOPS_PER_SHARE`` FLOPs a thread. On two
cores, [64, 1024, 1] and [784, 256, 128, 10] at 64 rows a step (17 and 64 MFLOP)
ran 1.5-1.65x as fast on two threads as on one (split by rows, 1.2-1.6x), [10, 64, 32, 3]
(1 MFLOP) 0.8-1.2x; and with the other core busy with another process, 0.55-0.7x and
0.2x: a step waits for its slowest thread. Elsewhere mini-batch steps leave the threads to BLAS.

Steps of one row split every layer between threads where the backend's
threads meet inside its compiled epoch (``Kernels.splits_units``), from
``MIN_FLOPS_PER_UNITS`` FLOPs a step and thread.
"""

import contextlib
import os
import queue
import threading
from concurrent.futures import Executor, Future, wait

import scipy.linalg  # noqa: F401  (loads SciPy's BLAS, the one Numba's and Cython's kernels call)
import threadpoolctl
from threadpoolctl import ThreadpoolController

MIN_FLOPS_PER_THREAD = 1e8
MIN_ROWS_PER_SHARE, MIN_FLOPS_PER_SHARE = 32, 4e6
MIN_FLOPS_PER_UNITS = 1e5

# Made at import (after NumPy and SciPy have loaded their BLAS): building it
# scans the process's libraries, ~8 ms that would otherwise fall on a first fit.
_BLAS = ThreadpoolController().select(user_api="blas")


def step_flops(layout, rows):
    """FLOPs of one training step on ``rows`` rows: ``rows * (4 W + 2 (W - W1))``."""
    weights = int((layout[:, 0] * layout[:, 1]).sum())
    return rows * (6 * weights - 2 * int(layout[0, 0] * layout[0, 1]))


# The thread counts of the blas_threads contexts under way in the process; while they hold BLAS below its
# limit, the limits from before (a threadpoolctl limiter that restores them) and the limit set for them.
_limits = {"lock": threading.Lock(), "active": [], "original": None, "set": None}


def _original_limit():
    """The process's BLAS thread limit before any :func:`blas_threads` under way (``_limits["lock"]`` held)."""
    original = _limits["original"]
    return max([entry["num_threads"] for entry in original._original_info] if original
               else [library.num_threads for library in _BLAS.lib_controllers], default=1)


def _cpus():
    """The CPUs the calling thread may run on: its affinity (which a process's threads inherit) where the
    system keeps one."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _allowed():
    """The most threads a fit may take: the process's BLAS thread limit, at most its CPUs."""
    with _limits["lock"]:
        return min(_original_limit(), _cpus())


def threads_for(layout, rows):
    """The threads that steps of ``rows`` rows repay, at most :func:`_allowed`."""
    return max(1, min(_allowed(), int(step_flops(layout, rows) // MIN_FLOPS_PER_THREAD)))


# threadpoolctl (3.8 on) lets one Python thread at a time set OpenBLAS's limits, the first to set them
# while it lives. fastgd's limiter is the process's, counted across threads: it takes that control for each
# change it makes, from whichever thread it runs on, and leaves it free after.
_openblas_control = getattr(threadpoolctl.OpenBLASController, "clear_controlling_thread", lambda force=False: None)


def _apply(change):
    """Add or remove a context's thread count (``change(active)``), then set the BLAS limit to the
    fewest threads the contexts under way allow where that is below the limit from before the first,
    or restore that limit."""
    with _limits["lock"]:
        active = _limits["active"]
        change(active)
        limit = min(active, default=None)
        if limit is not None and limit >= _original_limit():
            limit = None
        if limit == _limits["set"]:
            return
        _openblas_control(force=True)
        try:
            if limit is not None:
                if _limits["original"] is None:
                    _limits["original"] = _BLAS.limit(limits=None)  # keeps the limits as they are, to restore
                _BLAS.limit(limits=limit)
            else:
                _limits["original"].restore_original_limits()
                _limits["original"] = None
            _limits["set"] = limit
        finally:
            _openblas_control()


@contextlib.contextmanager
def blas_threads(threads):
    """A context in which BLAS uses at most ``threads`` threads. The limit is the process's: while
    contexts on several threads overlap, BLAS uses the fewest threads any of them allows, and the
    last to end restores the limits from before the first."""
    _apply(lambda active: active.append(threads))
    try:
        yield
    finally:
        _apply(lambda active: active.remove(threads))


def share_threads_for(layout, batch_rows):
    """The threads that mini-batch steps of ``batch_rows`` rows repay where the threads meet inside the
    compiled epoch (about a microsecond a meeting): at least ``MIN_ROWS_PER_SHARE`` rows and
    ``MIN_FLOPS_PER_SHARE`` FLOPs a step for each, at most :func:`_allowed`."""
    return max(1, min(_allowed(), batch_rows // MIN_ROWS_PER_SHARE,
                      int(step_flops(layout, batch_rows) // MIN_FLOPS_PER_SHARE)))


def units_threads_for(layout):
    """The threads that steps of one row repay where each layer is split between threads that meet
    inside the compiled epoch: at least ``MIN_FLOPS_PER_UNITS`` FLOPs a step for each, at most
    :func:`_allowed`."""
    return max(1, min(_allowed(), int(step_flops(layout, 1) // MIN_FLOPS_PER_UNITS)))


def blas_threads_for(layout, rows):
    """A context in which BLAS uses as many threads as ``rows``-row steps repay."""
    return blas_threads(threads_for(layout, rows))


_workers = {"pool": None, "size": 0, "lock": threading.Lock()}


def results(futures, on_interrupt=None):
    """The results of ``futures`` once every one has ended. A Ctrl-C while waiting is held (after
    ``on_interrupt()``, which may tell the threads to stop) and raised once they have: a thread left
    running would write into buffers that the next call reuses."""
    interrupt = None
    for future in futures:
        while True:
            try:
                wait([future])
                break
            except KeyboardInterrupt as error:
                interrupt = error
                if on_interrupt is not None:
                    on_interrupt()
    if interrupt is not None:
        raise interrupt
    return [future.result() for future in futures]


class Workers(Executor):
    """``size`` daemon threads, started at once, that run what is submitted in turn. Not a
    ``ThreadPoolExecutor``: it starts its (non-daemon) threads inside ``submit``, and a Ctrl-C there,
    between starting one and recording it, left a thread that the process waited for at exit forever."""

    def __init__(self, size: int, name: str = "fastgd"):
        self._tasks = queue.SimpleQueue()
        for k in range(size):
            threading.Thread(target=self._work, name=f"{name}_{k}", daemon=True).start()

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future = Future()
        self._tasks.put((future, fn, args, kwargs))
        return future

    def _work(self):
        while True:
            future, fn, args, kwargs = self._tasks.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as error:
                    future.set_exception(error)


def pool(size):
    """A pool of at least ``size`` threads, kept for the process. A larger one replaces it; the one
    before is left running (another thread may be about to hand it work), its threads idle."""
    with _workers["lock"]:
        if _workers["size"] < size:
            _workers["pool"] = Workers(size)
            _workers["size"] = size
        return _workers["pool"]
