"""Where an estimator's fit spends its time: ``python -m benchmarks.estimator_overhead``.

``fastgd.MLPClassifier`` with scikit-learn's defaults (100 hidden units, Adam, batches of 200)
for 200 epochs on the textbook data (1,500 rows, 10 features, 3 classes), per backend: the
share of the fit inside the backend's epoch kernel (the shuffle of the rows included),
the share inside the checked entry around it (``fastgd.kernels.Kernels.epochs``,
checked once per fit), and the rest (scikit-learn's checks of X and y, building the
network, and per epoch the learning rates, the snapshot of the weights and Python
bookkeeping). One BLAS thread; the median of 7 fits after a warm-up.
"""

import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

import fastgd
from fastgd.datasets import textbook
from fastgd.kernels import resolve
from fastgd.kernels.runner import EpochRunner


def shares(backend, X, y, fits=7):
    """``(kernel share, entry share, fit seconds)``, medians over ``fits`` fits."""
    module = resolve(backend)[1]
    kernel, entry = module.train_epoch, EpochRunner.__call__
    spent = {"kernel": 0.0, "entry": 0.0}

    def timed(spent_on, function):
        def run(*args):
            start = time.perf_counter()
            try:
                return function(*args)
            finally:
                spent[spent_on] += time.perf_counter() - start
        return run

    rows = []
    try:
        module.train_epoch, EpochRunner.__call__ = timed("kernel", kernel), timed("entry", entry)
        fastgd.MLPClassifier(random_state=0, backend=backend, max_iter=5).fit(X, y)  # warm-up
        for _ in range(fits):
            spent.update(kernel=0.0, entry=0.0)
            start = time.perf_counter()
            fastgd.MLPClassifier(random_state=0, backend=backend, max_iter=200, tol=0).fit(X, y)
            total = time.perf_counter() - start
            rows.append((spent["kernel"] / total, spent["entry"] / total, total))
    finally:
        module.train_epoch, EpochRunner.__call__ = kernel, entry
    return np.median(np.array(rows), axis=0)


def main():
    warnings.simplefilter("ignore", ConvergenceWarning)
    X, _, y, _ = textbook()
    with threadpool_limits(1):
        for backend in fastgd.backends():
            kernel, entry, total = shares(backend, X, y)
            print(f"{backend:>6}: {kernel:.1%} in the epoch kernel, {entry:.1%} with the checked entry around it, "
                  f"{1 - entry:.1%} elsewhere; a fit takes {total * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
