import importlib.util

import numpy as np
import pytest

import fastgd
from fastgd.datasets import textbook

BACKENDS = fastgd.backends()
COMPILED = [b for b in BACKENDS if b != "numpy"]
# The builds of the Cython extension present (baseline, and AVX2 + FMA on x86-64).
CYTHON_BUILDS = [name for name in ("_cython", "_cython_avx2")
                 if importlib.util.find_spec(f"fastgd.kernels.{name}") is not None]
# (hidden, output, loss): every hidden activation with every valid output/loss pair.
OUTPUT_LOSSES = [("softmax", "cross_entropy"), ("sigmoid", "binary_cross_entropy"),
                 ("sigmoid", "mse"), ("identity", "mse")]
HIDDEN = ["relu", "sigmoid", "tanh", "identity"]
COMBINATIONS = [(h, o, l) for h in HIDDEN for o, l in OUTPUT_LOSSES]


@pytest.fixture(scope="session")
def textbook_data():
    return textbook()


def make_problem(output, n=40, n_in=5, n_out=3, seed=0, dtype=np.float64):
    """Random inputs and targets that suit an output layer: labels, indicator rows or values."""
    rng = np.random.RandomState(seed)
    X = rng.standard_normal((n, n_in)).astype(dtype)
    if output == "softmax":
        y = rng.randint(0, n_out, n)
    elif output == "sigmoid":
        y = (rng.rand(n, n_out) > 0.5).astype(dtype)
    else:
        y = rng.standard_normal((n, n_out)).astype(dtype)
    return X, y
