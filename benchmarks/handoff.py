"""What handing a mini-batch step to two threads costs: ``python -m benchmarks.handoff``.

An epoch of mini-batches on several threads (``fastgd.kernels.Kernels.epoch_runner``) starts its
threads once, then meets them inside the compiled code at every step: three times split by rows
(``train_epoch_share``), once for each sum of partial products split by units (``train_epoch_units``,
a dense batch through two layers or more). Timed here, per compiled backend, on networks too small
to have work worth splitting, two rows a step: ``[1, 1]`` (split by rows, one a thread) and
``[2, 2, 2, 1]`` (split by units, three meetings a step: two partial products forward, one delta
back); an epoch of one step and one of 2,000 steps, on one thread and on two. The difference per
step is the cost of a step's meetings; that of the one-step epoch, of starting and joining the
threads. Medians of 21 runs, BLAS on one thread.
"""

import time

import numpy as np
from threadpoolctl import threadpool_limits

import fastgd
from fastgd.kernels import step_config

STEPS, RUNS = 2000, 21
SPLITS = {"rows": ([1, 1], "train_epoch_share"), "units": ([2, 2, 2, 1], "train_epoch_units")}


def epoch_seconds(backend, sizes, threads, steps):
    """The median wall time of an epoch of ``steps`` steps of two rows on ``threads`` threads."""
    net = fastgd.MLP(sizes, output="identity", backend=backend, random_state=0)
    n = 2 * steps
    X, Y = np.ones((n, sizes[0])), np.zeros((n, 1))
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
            for split, (sizes, kernel) in SPLITS.items():
                if not hasattr(fastgd.MLP(sizes, output="identity", backend=backend).kernels.backend, kernel):
                    continue
                one = {steps: epoch_seconds(backend, sizes, 1, steps) for steps in (1, STEPS)}
                two = {steps: epoch_seconds(backend, sizes, 2, steps) for steps in (1, STEPS)}
                per_step = ((two[STEPS] - two[1]) - (one[STEPS] - one[1])) / (STEPS - 1)
                print(f"{backend:>6}, split by {split} ({sizes}): a step's three meetings {per_step * 1e6:.2f} us; "
                      f"starting and joining the second thread {(two[1] - one[1]) * 1e6:.0f} us an epoch (an epoch "
                      f"of one step: {one[1] * 1e6:.0f} us on one thread, {two[1] * 1e6:.0f} us on two)")


if __name__ == "__main__":
    main()
