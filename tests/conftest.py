import importlib
import os

import numpy as np
import pytest

import fastgd
from fastgd._codes import HIDDEN_ACTIVATIONS
from fastgd.kernels import cython_build
from fastgd.datasets import textbook

# The backends this run must test: every one unless FASTGD_EXPECT_BACKENDS names fewer
# (e.g. "numpy,numba" on a machine without a C compiler). One that cannot be loaded
# fails the run at once instead of silently dropping its tests.
EXPECTED = [name for name in os.environ.get("FASTGD_EXPECT_BACKENDS", "numpy,numba,cython").split(",") if name]
BACKENDS = [name for name in fastgd.kernels.PREFERENCE if name in EXPECTED]
COMPILED = [b for b in BACKENDS if b != "numpy"]
# The builds of the Cython extension present that this CPU runs (x86-64: baseline, AVX2 + FMA, AVX-512).
CYTHON_BUILDS = [name.lstrip(".") for name in fastgd.kernels.cython_builds()]
# (hidden, output, loss): every hidden activation with every valid output/loss pair.
OUTPUT_LOSSES = [("softmax", "cross_entropy"), ("sigmoid", "binary_cross_entropy"),
                 ("sigmoid", "mse"), ("identity", "mse"), ("exp", "poisson")]
HIDDEN = list(HIDDEN_ACTIVATIONS)
COMBINATIONS = [(h, o, l) for h in HIDDEN for o, l in OUTPUT_LOSSES]
# Fewer, for the costlier tests: scikit-learn's four hidden activations with every pair, each other one with one.
SCIKIT_LEARN_HIDDEN = ["relu", "sigmoid", "tanh", "identity"]
SOME_COMBINATIONS = ([c for c in COMBINATIONS if c[0] in SCIKIT_LEARN_HIDDEN]
                     + [(h, *OUTPUT_LOSSES[i % len(OUTPUT_LOSSES)])
                        for i, h in enumerate(h for h in HIDDEN if h not in SCIKIT_LEARN_HIDDEN)])


# Every compiled backend, plus "cython:BUILD" for each build of the extension
# other than the one this CPU loads (which "cython" tests).
TARGETS = COMPILED + [f"cython:{build}" for build in CYTHON_BUILDS
                      if "cython" in COMPILED and f".{build}" != cython_build()]


@pytest.fixture
def backend(request, monkeypatch):
    """A backend name from ``TARGETS``; "cython:BUILD" makes ``backend="cython"`` load BUILD."""
    name, _, build = request.param.partition(":")
    if build:
        monkeypatch.setitem(fastgd.kernels._loaded, "cython", importlib.import_module(f"fastgd.kernels.{build}"))
    return name


def pytest_sessionstart(session):
    unknown = set(EXPECTED) - set(fastgd.kernels.PREFERENCE)
    missing = {name: reason for name, reason in fastgd.backends(reasons=True).items()
               if name in EXPECTED and reason is not None}
    if unknown or missing:
        raise pytest.UsageError(f"expected backends that cannot be used here: {sorted(unknown) or ''} {missing} "
                                "(set FASTGD_EXPECT_BACKENDS to the ones this machine should have)")


@pytest.fixture(scope="session")
def textbook_data():
    return textbook()


def misaligned(array):
    """A C-contiguous copy of ``array`` one byte off its dtype's alignment."""
    array = np.ascontiguousarray(array)
    raw = np.zeros(array.nbytes + 1, np.uint8)
    copy = np.frombuffer(raw.data, dtype=array.dtype, count=array.size, offset=1).reshape(array.shape)
    copy[...] = array
    assert copy.flags.c_contiguous and not copy.flags.aligned
    return copy


def make_problem(output, n=40, n_in=5, n_out=3, seed=0, dtype=np.float64):
    """Random inputs and targets that suit an output layer: labels, indicator rows, counts or values."""
    rng = np.random.RandomState(seed)
    X = rng.standard_normal((n, n_in)).astype(dtype)
    if output == "softmax":
        y = rng.randint(0, n_out, n)
    elif output == "sigmoid":
        y = (rng.rand(n, n_out) > 0.5).astype(dtype)
    elif output == "exp":  # counts; small inputs, so that exp(z) of the first steps stays moderate
        X *= dtype(0.3)
        y = rng.poisson(np.exp(0.5 * rng.standard_normal((n, n_out)))).astype(dtype)
    else:
        y = rng.standard_normal((n, n_out)).astype(dtype)
    return X, y
