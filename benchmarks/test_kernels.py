"""Kernel by kernel timings per backend and dtype: ``pytest benchmarks/ --benchmark-only``.

Not part of the default test run (``testpaths`` is ``tests``). Network: the
textbook's ``[10, 64, 32, 3]``; batches of 256 rows; ``train_epoch`` is one
stochastic epoch over them. Each call goes through the checked entry
(``net.kernels``), as every call in fastgd does.
"""

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import fastgd
from fastgd.kernels import step_config

ROWS = 256
CONFIG = step_config("cross_entropy", l2=1e-4)


@pytest.fixture(params=fastgd.backends())
def backend(request):
    return request.param


@pytest.fixture(params=["float64", "float32"])
def setup(request, backend):
    dtype = request.param
    net = fastgd.MLP([10, 64, 32, 3], backend=backend, dtype=dtype, random_state=0)
    rng = np.random.RandomState(0)
    X = rng.standard_normal((ROWS, 10)).astype(dtype)
    Y = np.eye(3, dtype=dtype)[rng.randint(0, 3, ROWS)]
    kernels = net.kernels
    ws = kernels.workspace(ROWS, ROWS)
    # The epoch kernel gathers single rows: a workspace sized for batches of one.
    epoch_ws = kernels.workspace(1, 1)
    with threadpool_limits(1):
        yield net, kernels, X, Y, ws, epoch_ws


def test_forward(benchmark, setup):
    net, kernels, X, _, ws, _ = setup
    benchmark(kernels.forward, net.params, X, ws)


def test_backward(benchmark, setup):
    net, kernels, X, Y, ws, _ = setup
    grads = np.zeros_like(net.params)
    benchmark(kernels.backward, net.params, X, Y, CONFIG, ws, grads)


def test_update(benchmark, setup):
    net, kernels, *_ = setup
    grads = np.full_like(net.params, 1e-6)
    state = np.zeros((0, len(net.params)), net.dtype)
    benchmark(kernels.update, net.params, grads, state, CONFIG, 1e-3, 0)


def test_train_epoch(benchmark, setup):
    net, kernels, X, Y, _, epoch_ws = setup
    grads, state = np.zeros_like(net.params), np.zeros((0, len(net.params)), net.dtype)
    order, lrs = np.arange(ROWS), np.full(ROWS, 1e-3)
    benchmark(kernels.train_epoch, net.params, grads, state, X, Y, order, 1, CONFIG, lrs, 0, epoch_ws)
