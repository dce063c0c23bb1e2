"""Peak extra memory of a fit, relative to the size of its data, per backend and mode.

Measured with tracemalloc, which sees NumPy's allocations (the kernels
allocate nothing of their own): the peak of memory allocated during ``fit``
beyond what was allocated before it, over ``X.nbytes``. The data is already
C-contiguous in the model's dtype, so a fit that copied it would show 1.0
or more.
"""

import argparse
import tracemalloc

import fastgd
from fastgd.datasets import synthetic_classification

MODES = {"batch": None, "mini-batch 64": 64, "stochastic": 1}


def peak_ratio(backend, X, y, batch_size, sizes):
    net = fastgd.MLP(sizes, backend=backend, dtype=X.dtype, random_state=0)
    net.fit(X[:256], y[:256], epochs=1, batch_size=batch_size, train_metrics=False)  # warm-up (JIT)
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    net.fit(X, y, epochs=1, batch_size=batch_size, train_metrics=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return (peak - before) / X.nbytes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[784, 256, 128, 10])
    args = parser.parse_args(argv)
    X, y = synthetic_classification(args.rows, args.sizes[0], args.sizes[-1], dtype="float32")
    print(f"data: {args.rows} x {args.sizes[0]} float32 = {X.nbytes / 2**20:.1f} MiB; network {args.sizes}")
    print("| backend | mode | peak extra memory / data size |\n|---|---|---|")
    for backend in fastgd.backends():
        for mode, batch_size in MODES.items():
            rows = X if batch_size != 1 else X[:2000]
            ratio = peak_ratio(backend, rows, y[: len(rows)], batch_size, args.sizes)
            print(f"| {backend} | {mode} | {ratio:.3f} |")


if __name__ == "__main__":
    main()
