"""The cores a benchmarked process may run on (its CPU affinity), and the CPU time it takes.

A library's thread settings are requests (XLA runs on every core whatever its
flags say); the CPU affinity of every thread of a process is a limit. A
T-thread figure comes from a process whose threads may run on T cores only,
and its CPU time over wall time shows how many it kept busy. Linux only
(``AVAILABLE``): elsewhere ``pin`` does nothing.
"""

import contextlib
import os
import time

AVAILABLE = hasattr(os, "sched_setaffinity") and os.path.isdir("/proc/self/task")


def usable_cores():
    """The cores the calling thread may run on, in order."""
    return sorted(os.sched_getaffinity(0)) if AVAILABLE else list(range(os.cpu_count()))


def cores_for(threads):
    """The first ``threads`` of the usable cores (all of them when there are fewer)."""
    return usable_cores()[:threads]


def _thread_ids():
    return [int(tid) for tid in os.listdir("/proc/self/task")]


def pin(cores):
    """Let every thread of this process run on ``cores`` only; threads it starts later inherit them."""
    if not AVAILABLE:
        return
    for tid in _thread_ids():
        with contextlib.suppress(ProcessLookupError):  # the thread ended since it was listed
            os.sched_setaffinity(tid, cores)


def process_cores():
    """The cores any thread of this process may run on."""
    if not AVAILABLE:
        return usable_cores()
    cores = set()
    for tid in _thread_ids():
        with contextlib.suppress(ProcessLookupError):
            cores |= os.sched_getaffinity(tid)
    return sorted(cores)


@contextlib.contextmanager
def pinned(cores):
    """A context in which this process runs on ``cores`` only; after it, every thread may run on the
    cores the calling thread could before."""
    before = usable_cores()
    pin(cores)
    try:
        yield
    finally:
        pin(before)


def timed(fn):
    """``(wall seconds, CPU seconds of every thread of the process, cores its threads may run on)``
    of ``fn()``; the cores are read after the clocks stop."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall, cpu, process_cores()
