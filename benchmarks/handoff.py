"""What handing a mini-batch step to two threads costs: ``python -m benchmarks.handoff``.

An epoch of mini-batches on several threads (``fastgd.kernels.Kernels.epoch_runner``) starts its
threads once, then meets them three times a step inside the compiled code. Timed here, per
compiled backend, on a network too small to have work worth splitting (``[1, 1]``, two rows a
step, one a thread): an epoch of one step and one of 2,000 steps, on one thread and on two. The
difference per step is the cost of a step's three meetings; that of the one-step epoch, of
starting and joining the threads. Medians of 21 runs, BLAS on one thread.
"""

import time

import numpy as np
from threadpoolctl import threadpool_limits

import fastgd
from fastgd.kernels import step_config

STEPS, RUNS = 2000, 21


def epoch_seconds(backend, threads, steps):
    """The median wall time of an epoch of ``steps`` steps of two rows on ``threads`` threads."""
    net = fastgd.MLP([1, 1], output="identity", backend=backend, random_state=0)
    n = 2 * steps
    X, Y = np.ones((n, 1)), np.zeros((n, 1))
    params, grads, state = net.params.copy(), np.zeros_like(net.params), np.zeros((0, net.params.size))
    run = net.kernels.epoch_runner(params, grads, state, X, Y, np.arange(n), 2, step_config("mse"),
                                   net.kernels.workspace(2, 2), None, None, threads)
    lrs = np.full(steps, 1e-3)
    times = []
    for _ in range(RUNS + 1):  # the first compiles or loads the kernels
        start = time.perf_counter()
        run(lrs, 0)
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))


def main():
    with threadpool_limits(1):
        for backend in fastgd.backends():
            if not fastgd.MLP([1, 1], output="identity", backend=backend).kernels.splits_batches:
                continue
            one = {steps: epoch_seconds(backend, 1, steps) for steps in (1, STEPS)}
            two = {steps: epoch_seconds(backend, 2, steps) for steps in (1, STEPS)}
            per_step = ((two[STEPS] - two[1]) - (one[STEPS] - one[1])) / (STEPS - 1)
            print(f"{backend:>6}: a step's three meetings {per_step * 1e6:.2f} us; starting and joining the second "
                  f"thread {(two[1] - one[1]) * 1e6:.0f} us an epoch (an epoch of one step: {one[1] * 1e6:.0f} us on "
                  f"one thread, {two[1] * 1e6:.0f} us on two)")


if __name__ == "__main__":
    main()
