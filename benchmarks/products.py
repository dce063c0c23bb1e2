"""How near the GEMM rate W2's full-batch epoch can run through its BLAS: ``python -m benchmarks.products``.

A full-batch epoch of W2 (``[784, 256, 128, 10]``, float32, 60,000 rows) is almost all matrix
products: per block of rows, each layer's forward product, each weight gradient (added over the
blocks) and each delta below. Timed here alone, with nothing between them, through SciPy's
``sgemm`` (the BLAS the compiled kernels call) in the shapes and operand layouts the kernels hand
it, for blocks of several sizes (the kernels' is 256 rows), beside fastgd's own epochs: each as a
share of the 2048 x 2048 product's rate measured in the same round (``% of GEMM``, as in the main
run's table). One BLAS thread; medians of 5 rounds, each round timing everything once.
"""

import statistics
import time

import numpy as np
import scipy.linalg.blas as blas
from threadpoolctl import threadpool_limits

import fastgd
from fastgd.benchmarks.throughput import FastgdRunner, gemm_rate
from fastgd.benchmarks.workloads import WORKLOADS

ROUNDS, BLOCKS = 5, (128, 256, 1024, 60_000)


def products(X, weights, rows):
    """The epoch's products of ``X`` through a network of ``weights``, ``rows`` rows a block: a
    function that runs them once. Row-major arrays reach BLAS transposed, as the kernels hand them."""
    acts = [np.empty((rows, w.shape[1]), np.float32) for w in weights]
    deltas = [np.ones((rows, w.shape[0]), np.float32) for w in weights] + [np.ones_like(acts[-1])]
    grads = [np.empty_like(w) for w in weights]

    def epoch():
        for start in range(0, len(X), rows):
            r = min(rows, len(X) - start)
            inputs = [X[start:start + r]] + [a[:r] for a in acts]
            for w, a, z in zip(weights, inputs, inputs[1:]):  # z = a @ w
                blas.sgemm(1.0, w.T, a.T, c=z.T, overwrite_c=1)
            for l in range(len(weights) - 1, -1, -1):  # dW += a.T @ d; below = d @ w.T
                d = deltas[l + 1][:r]
                blas.sgemm(1.0, d.T, inputs[l].T, beta=1.0 if start else 0.0, c=grads[l].T, overwrite_c=1,
                           trans_b=1)
                if l > 0:
                    blas.sgemm(1.0, weights[l].T, d.T, c=deltas[l][:r].T, overwrite_c=1, trans_a=1)
    return epoch


def seconds(run):
    """``run`` as a function that returns the wall time of a call."""
    def timed():
        start = time.perf_counter()
        run()
        return time.perf_counter() - start
    return timed


def main():
    workload = WORKLOADS["W2"]
    X, y = workload.data()
    rng = np.random.default_rng(0)
    weights = [0.05 * rng.standard_normal(shape).astype(np.float32)
               for shape in zip(workload.sizes[:-1], workload.sizes[1:])]
    epochs = {f"products alone, blocks of {rows:,} rows": seconds(products(X, weights, rows)) for rows in BLOCKS}
    for backend in ("numba", "cython"):
        if backend in fastgd.backends():
            runner = FastgdRunner(backend, workload, X, y, None, 1)
            epochs[f"fastgd's epoch ({backend})"] = lambda runner=runner: runner.epoch()[0]
    shares = {name: [] for name in epochs}
    flops = len(X) * workload.flops_per_sample
    with threadpool_limits(1):
        for _ in range(ROUNDS):
            rate = gemm_rate("float32")
            for name, epoch in epochs.items():
                shares[name].append(flops / epoch() / rate)
    for name, values in shares.items():
        print(f"{name:>38}: {100 * statistics.median(values):5.1f}% of GEMM "
              f"({', '.join(f'{100 * v:.1f}' for v in values)})")


if __name__ == "__main__":
    main()
