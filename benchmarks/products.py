"""What the matrix products leave to the rest of an epoch, on one core: ``python -m benchmarks.products``.

Two cells of the main run, their products timed alone, with nothing between them, through SciPy's
``sgemm`` (the BLAS the compiled kernels called before their own tiles) in the shapes and operand
layouts the kernels hand it, beside fastgd's own epochs (and, for W3, JAX's ``jax-scan`` in a
process of its own, if installed), all on the first usable core, alternating in each of 5 rounds
(medians):

- W2 full batch (``[784, 256, 128, 10]``, 60,000 rows): per block of rows, each layer's forward
  product, each weight gradient (added over the blocks) and each delta below, for blocks of several
  sizes (the kernels' is 256 rows); each as a share of the 2048 x 2048 product's rate measured in
  the same round (``% of GEMM``, as in the main run's table).
- W3 mini-batch 64 (``[64, 1024, 1]``, 20,000 rows): a step's two 64 x 64 x 1024 products, the
  forward pass's ``X W0`` and the weight gradient ``X.T D``, as the kernels hand them (1,024 rows of
  output as BLAS sees row-major arrays) and the other way round (64 rows); their samples/s if a step
  were those products alone.
"""

import statistics
import time

import numpy as np
import scipy.linalg.blas as blas
from threadpoolctl import threadpool_limits

import fastgd
from fastgd.benchmarks.affinity import cores_for, pinned
from fastgd.benchmarks.throughput import FastgdRunner, PeerProcess, gemm_rate
from fastgd.benchmarks.workloads import WORKLOADS

ROUNDS, BLOCKS, BATCH = 5, (128, 256, 1024, 60_000), 64


def seconds(run):
    """``run`` as a function that returns the wall time of a call."""
    def timed():
        start = time.perf_counter()
        run()
        return time.perf_counter() - start
    return timed


def full_batch_products(X, weights, rows):
    """The products of a full-batch epoch of ``X`` through a network of ``weights``, ``rows`` rows a
    block: a function that runs them once. Row-major arrays reach BLAS transposed, as the kernels
    hand them."""
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


def step_products(X, W, as_handed):
    """An epoch of mini-batch steps of ``BATCH`` rows of ``X`` through a first layer ``W``, each step
    only its two products: a function that runs them once; ``as_handed``: the operands as the kernels
    hand them to BLAS (``W`` and the deltas as (units, inputs) matrices), else the other way round."""
    order = "C" if as_handed else "F"  # Fortran-ordered: BLAS takes them as they are
    batches = [np.asarray(X[start:start + BATCH], order=order) for start in range(0, len(X) - BATCH + 1, BATCH)]
    W = np.asarray(W, order=order)
    Z, dW = np.empty(W.shape, np.float32, order), np.empty(W.shape, np.float32, order)
    D = np.ones((BATCH, W.shape[1]), np.float32, order)

    def epoch():
        for x in batches:
            if as_handed:  # Z.T = W.T @ x.T, dW.T = D.T @ x: 1,024 rows of output
                blas.sgemm(1.0, W.T, x.T, c=Z.T, overwrite_c=1)
                blas.sgemm(1.0, D.T, x.T, c=dW.T, overwrite_c=1, trans_b=1)
            else:  # Z = x @ W, dW = x.T @ D: 64 rows of output
                blas.sgemm(1.0, x, W, c=Z, overwrite_c=1)
                blas.sgemm(1.0, x, D, c=dW, overwrite_c=1, trans_a=1)
    return epoch


def full_batch(rng):
    """``{name: (function returning an epoch's seconds, FLOPs of an epoch)}`` of W2's full batch."""
    workload = WORKLOADS["W2"]
    X, y = workload.data()
    weights = [0.05 * rng.standard_normal(shape).astype(np.float32)
               for shape in zip(workload.sizes[:-1], workload.sizes[1:])]
    flops = len(X) * workload.flops_per_sample
    epochs = {f"products alone, blocks of {rows:,} rows": seconds(full_batch_products(X, weights, rows))
              for rows in BLOCKS}
    for backend in ("numba", "cython"):
        if backend in fastgd.backends():
            runner = FastgdRunner(backend, workload, X, y, None, 1)
            epochs[f"fastgd's epoch ({backend})"] = lambda runner=runner: runner.epoch()[0]
    return {name: (epoch, flops) for name, epoch in epochs.items()}


def mini_batch(rng, core):
    """``{name: (function returning an epoch's seconds, rows of an epoch)}`` of W3's mini-batch 64, and
    the peer processes to close."""
    workload = WORKLOADS["W3"]
    X, y = workload.data()
    W = 0.05 * rng.standard_normal(workload.sizes[:2]).astype(np.float32)
    epochs = {"two products alone, as handed to BLAS": seconds(step_products(X, W, True)),
              "two products alone, the other way round": seconds(step_products(X, W, False))}
    for backend in ("numba", "cython"):
        if backend in fastgd.backends():
            runner = FastgdRunner(backend, workload, X, y, BATCH, 1)
            epochs[f"fastgd's epoch ({backend})"] = lambda runner=runner: runner.epoch()[0]
    peer = PeerProcess("jax-scan", 1, core)
    if peer.setup({"workload": "W3", "rows": len(X), "batch_size": BATCH, "scale": 1.0})[1] is None:
        epochs["jax-scan's epoch (its own process)"] = lambda: peer.epoch()[0]
    return {name: (epoch, len(X)) for name, epoch in epochs.items()}, [peer]


def main():
    rng = np.random.default_rng(0)
    core = cores_for(1)
    with pinned(core), threadpool_limits(1):
        print("W2 full batch, one thread: % of the 2048 x 2048 GEMM rate")
        cells = full_batch(rng)
        shares = {name: [] for name in cells}
        for _ in range(ROUNDS):
            rate = gemm_rate("float32")
            for name, (epoch, flops) in cells.items():
                shares[name].append(flops / epoch() / rate)
        for name, values in shares.items():
            print(f"{name:>40}: {100 * statistics.median(values):5.1f}% "
                  f"({', '.join(f'{100 * v:.1f}' for v in values)})")
        print("W3 mini-batch 64, one thread: samples/s")
        cells, peers = mini_batch(rng, core)
        rates = {name: [] for name in cells}
        for _ in range(ROUNDS):
            for name, (epoch, rows) in cells.items():
                rates[name].append(rows / epoch())
        for peer in peers:
            peer.close()
        for name, values in rates.items():
            print(f"{name:>40}: {statistics.median(values):9,.0f} ({', '.join(f'{v:,.0f}' for v in values)})")


if __name__ == "__main__":
    main()
