"""Kernel by kernel timings per backend and dtype: ``pytest benchmarks/ --benchmark-only``.

Not part of the default test run (``testpaths`` is ``tests``). Network: the
textbook's ``[10, 64, 32, 3]``; batches of 256 rows; ``train_epoch`` is one
stochastic epoch over them.
"""

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import fastgd
from fastgd._codes import LOSSES, SGD

ROWS = 256


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
    kernels = net._kernels
    ws = kernels.workspace(net.layout, net.dtype, ROWS, ROWS)
    # The epoch kernel gathers single rows: a workspace sized for batches of one.
    epoch_ws = kernels.workspace(net.layout, net.dtype, 1, 1)
    with threadpool_limits(1):
        yield net, kernels, X, Y, ws, epoch_ws


def test_forward(benchmark, setup):
    net, kernels, X, _, ws, _ = setup
    benchmark(kernels.forward, net.layout, net.params, X, ws)


def test_backward(benchmark, setup):
    net, kernels, X, Y, ws, _ = setup
    grads = np.zeros_like(net.params)
    benchmark(kernels.backward, net.layout, net.params, X, Y, LOSSES["cross_entropy"], 1e-4, ws, grads)


def test_update(benchmark, setup):
    net, kernels, *_ = setup
    grads = np.full_like(net.params, 1e-6)
    state = np.zeros((0, len(net.params)), net.dtype)
    benchmark(kernels.update, net.params, grads, state, SGD, fastgd.SGD().hyper(), 1e-3, 0)


def test_train_epoch(benchmark, setup):
    net, kernels, X, Y, _, epoch_ws = setup
    grads, state = np.zeros_like(net.params), np.zeros((0, len(net.params)), net.dtype)
    order, lrs = np.arange(ROWS), np.full(ROWS, 1e-3)
    benchmark(kernels.train_epoch, net.layout, net.params, grads, state, X, Y, order, 1, LOSSES["cross_entropy"],
              1e-4, SGD, fastgd.SGD().hyper(), lrs, 0, 0.0, 0.0, epoch_ws)
