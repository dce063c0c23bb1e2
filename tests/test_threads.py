"""An epoch of one batch split into shares of its rows, computed on threads: the same steps as
the reference's, the same results for the same threads, and fits that use it when it pays."""

import hashlib
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import scipy.sparse
from threadpoolctl import threadpool_limits

import fastgd
from fastgd import _threads
from fastgd.kernels import CSR, step_config
from fastgd.optimizers import OPTIMIZERS

from conftest import BACKENDS, COMPILED, make_problem
from test_agreement import KERNEL_RTOL, TRAINING_RTOL, assert_close

OPTIMIZER_CASES = {  # (rule, hyper-parameters, clipping)
    "sgd": ("sgd", dict(momentum=0.0), {}),  # plain SGD: the step is fused into the last pass
    "momentum-clipped": ("sgd", dict(momentum=0.9, nesterov=1.0, weight_decay=1e-2), dict(clip_norm=0.5)),
    "adam": ("adam", dict(beta1=0.9, beta2=0.999, eps=1e-8, amsgrad=1.0), {}),
    "line-search": ("line_search", dict(rho=0.5, c=1e-4, min_step=1e-6, fallback_step=1e-3), {}),
    # A large eps: steps of one row scale a gradient as small as rounding's up to the learning rate.
    "rmsprop-clipped": ("rmsprop", dict(alpha=0.9, eps=0.1, momentum=0.5, centered=1.0),
                        dict(clip_value=0.05, clip_norm=0.2)),
    "adagrad": ("adagrad", dict(eps=0.1), {}),
}
# The rules that every way of splitting a step is tested with.
SHARED_CASES = ["sgd", "momentum-clipped", "adam", "line-search"]


def epochs(backend, dtype, threads, optimizer, output="softmax", loss="cross_entropy", sparse=False, weighted=False,
           n=600, count=4, batch_size=None, sizes=(6, 9, 7, 3), hidden="tanh", dropout=0.0):
    """``(params, losses, state)`` after ``count`` epochs of batches of ``batch_size`` rows (None: one
    batch) on ``threads`` threads (the state flattened, with a 0 in front: plain SGD keeps none)."""
    X, y = make_problem(output, n=n, n_in=sizes[0], n_out=sizes[-1], seed=1)
    net = fastgd.MLP(list(sizes), hidden=hidden, output=output, loss=loss, backend=backend, dtype=dtype,
                     random_state=2, dropout=dropout)
    X, Y, _ = net.encode(X, y)
    rule, hyper, clipping = OPTIMIZER_CASES[optimizer]
    hyper = {**dict.fromkeys(OPTIMIZERS[rule].hyper, 0.0), **hyper}
    config = step_config(loss, rule, hyper, l2=1e-3, **clipping, dropout_seed=net.training.dropout_seed)
    params, grads = net.params.copy(), np.zeros_like(net.params)
    state = np.zeros((len(OPTIMIZERS[rule].slots(hyper)), len(params)), dtype)
    weights = np.random.RandomState(3).uniform(0.2, 2.0, n) if weighted else None
    rows = CSR(scipy.sparse.csr_array(np.where(np.abs(X) < 0.7, 0, X)), dtype) if sparse else X
    batch_size = batch_size or n
    batches = -(-n // batch_size)
    ws = net.kernels.workspace(batch_size, batch_size if batches > 1 else 0, sparse=sparse)
    run = net.kernels.epoch_runner(params, grads, state, rows, Y, np.arange(n), batch_size, config, ws, weights,
                             np.random.RandomState(4), threads)
    losses = []
    for epoch in range(count):
        value, steps, status = run(np.full(batches, 0.05), epoch * batches)
        assert (steps, status) == (batches, 0)
        losses.append(value)
    return params, losses, np.concatenate([[0], state.ravel()])


# Backends whose epochs of several batches split each batch's rows across threads.
SPLITTING = [name for name in BACKENDS if fastgd.MLP([2, 2], backend=name).kernels.splits_batches]
# Dense batches of 64 rows split every layer between the threads, sparse ones their rows.
MINI_BATCH_KERNELS = [(backend, kernel, sparse)
                      for backend in BACKENDS for kernel, sparse in [("train_epoch_units", False),
                                                                     ("train_epoch_share", True)]
                      if hasattr(fastgd.MLP([2, 2], backend=backend).kernels.backend, kernel)]
# One batch of 600 rows in 2 or 3 shares (each more than one block of rows of the compiled backends);
# batches of 64 (the last of 24), each in 2 or 3 shares; and
# batches of 580 (the last of 20), two shares of 290 rows each more than one block.
SHARE_CASES = [(backend, None, optimizer) for backend in BACKENDS for optimizer in SHARED_CASES] + \
    [(backend, 64, optimizer) for backend in SPLITTING for optimizer in SHARED_CASES] + \
    [(backend, 580, "momentum-clipped") for backend in SPLITTING]


@pytest.mark.parametrize("backend, batch_size, optimizer", SHARE_CASES)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("rows", ["dense", "sparse", "weighted"])
def test_an_epoch_in_shares_matches_the_reference_in_one(backend, batch_size, optimizer, dtype, threads, rows):
    options = dict(sparse=rows == "sparse", weighted=rows == "weighted", batch_size=batch_size,
                   count=4 if batch_size is None else 2)
    expected = epochs("numpy", dtype, 1, optimizer, **options)
    got = epochs(backend, dtype, threads, optimizer, **options)
    for value, reference in zip(got, expected):
        assert_close(value, reference, TRAINING_RTOL[dtype])


@pytest.mark.parametrize("backend, batch_size", [(backend, None) for backend in BACKENDS] +
                         [(backend, 64) for backend in SPLITTING])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum-clipped"])
@pytest.mark.parametrize("sizes", [(1, 9, 1, 3), (4, 9, 1)])
def test_shares_through_layers_of_one_unit_match_the_reference_in_one(backend, batch_size, optimizer, sizes):
    # A layer of one input and one of one output: products with a side of one, in every share (batches of
    # 64 rows split by their rows with a layer of one input, else by units, the output a layer of one unit).
    options = dict(batch_size=batch_size, count=2, sizes=sizes, output="identity", loss="mse")
    expected = epochs("numpy", "float64", 1, optimizer, **options)
    got = epochs(backend, "float64", 2, optimizer, **options)
    for value, reference in zip(got, expected):
        assert_close(value, reference, TRAINING_RTOL["float64"])


@pytest.mark.parametrize("backend", SPLITTING)
@pytest.mark.parametrize("rows", ["dense", "sparse", "weighted"])
def test_a_line_search_steps_from_shares_as_the_reference_does(backend, rows, monkeypatch):
    """A backend without ``train_epoch_share`` takes a full-batch line search on threads from its shares'
    gradients (``batch_step``), as the reference does: so do the compiled ones, held to the contract."""
    monkeypatch.delattr(fastgd.kernels._loaded[backend], "train_epoch_share")
    steps = spy_on(monkeypatch, backend, "batch_step")
    options = dict(sparse=rows == "sparse", weighted=rows == "weighted")
    expected = epochs("numpy", "float64", 1, "line-search", **options)
    got = epochs(backend, "float64", 2, "line-search", **options)
    assert len(steps) == 4
    for value, reference in zip(got, expected):
        assert_close(value, reference, TRAINING_RTOL["float64"])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("output, loss", [("sigmoid", "binary_cross_entropy"), ("sigmoid", "mse"),
                                          ("identity", "mse"), ("exp", "poisson")])
def test_every_loss_in_shares_matches_one_share(backend, output, loss):
    one = epochs(backend, "float64", 1, "adam", output, loss, weighted=True)
    shared = epochs(backend, "float64", 3, "adam", output, loss, weighted=True)
    for value, reference in zip(shared, one):
        assert_close(value, reference, KERNEL_RTOL["float64"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_same_threads_give_the_same_bits(backend):
    first, second = (epochs(backend, "float32", 2, "adam") for _ in range(2))
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_share_that_diverges_stops_the_epoch_before_its_step(backend):
    X, y = make_problem("identity", n=40, seed=0)
    net = fastgd.MLP([5, 9, 3], output="identity", backend=backend, random_state=0)
    X, Y, _ = net.encode(X, y)
    X[35] = 1e300  # in the second share
    params, grads = net.params.copy(), np.zeros_like(net.params)
    before = params.copy()
    value, steps, status = net.kernels.train_epoch(params, grads, np.zeros((0, len(params))), X, Y, np.arange(40), 40,
                                                   step_config("mse"), np.full(1, 0.1), 0, net.kernels.workspace(40),
                                                   threads=2)
    assert not np.isfinite(value) and steps == 0 and status == 1
    np.testing.assert_array_equal(params, before)


@pytest.mark.parametrize("backend", COMPILED)
def test_a_full_batch_fit_splits_its_rows_across_the_threads_it_repays(backend, monkeypatch):
    """With every step large enough to repay threads, a full-batch fit computes its shares on as many
    threads as BLAS may use, and trains as a one-thread fit does; a mini-batch fit does not split."""
    module = fastgd.kernels._loaded[backend]
    seen = []

    def batch_gradient(*args):
        seen.append(threading.get_ident())
        return kernel(*args)

    kernel = module.batch_gradient
    monkeypatch.setattr(module, "batch_gradient", batch_gradient)
    X, y = make_problem("softmax", n=300, seed=0)
    fits = {}
    for threads, min_flops in ((2, 1), (1, _threads.MIN_FLOPS_PER_THREAD)):
        monkeypatch.setattr(_threads, "MIN_FLOPS_PER_THREAD", min_flops)
        net = fastgd.MLP([5, 9, 3], backend=backend, random_state=0)
        with threadpool_limits(threads):
            net.fit(X, y, epochs=3, optimizer=fastgd.Adam(lr=0.01), l2=1e-3)
            fits[threads] = net
    main = threading.get_ident()  # two shares an epoch: one on the fit's thread, the other on another
    assert len(seen) == 6 and seen.count(main) == 3
    assert_close(fits[2].params, fits[1].params, 1e-12)
    assert_close(fits[2].history_.history["loss"], fits[1].history_.history["loss"], 1e-12)
    seen.clear()
    monkeypatch.setattr(_threads, "MIN_FLOPS_PER_THREAD", 1)
    with threadpool_limits(2):
        fastgd.MLP([5, 9, 3], backend=backend, random_state=0).fit(X, y, epochs=1, batch_size=100)
    assert seen == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_chunks_evaluated_on_threads_give_what_one_thread_gives(backend, monkeypatch):
    from fastgd.training import CHUNK_ROWS, forward_chunks

    n = 3 * CHUNK_ROWS + 100
    X, y = make_problem("softmax", n=n, seed=5)
    net = fastgd.MLP([5, 9, 3], backend=backend, random_state=0)
    X, Y, _ = net.encode(X, y)
    weights = np.random.RandomState(0).uniform(0, 2, n)
    seen = set()
    data_loss = net.kernels.backend.data_loss

    def spy(*args):
        seen.add(threading.get_ident())
        return data_loss(*args)

    monkeypatch.setattr(net.kernels.backend, "data_loss", spy)
    one = forward_chunks(net.kernels, net.params, X, Y, 0, None, weights)
    seen.clear()
    workspaces = [net.kernels.workspace(CHUNK_ROWS) for _ in range(3)]
    three = forward_chunks(net.kernels, net.params, X, Y, 0, workspaces, weights)
    assert len(seen) >= 2  # the calling thread and at least one of the pool
    np.testing.assert_array_equal(three[0], one[0])
    assert three[1] == one[1]


def blas_limit():
    return max(info["num_threads"] for info in _threads._BLAS.info())


def test_overlapping_blas_limits_on_two_threads_leave_the_process_limit_as_it_was(monkeypatch):
    # Each context lowers the process's limit while it lasts; the last to end restores it, whichever order
    # they end in. (As on a machine of 8 CPUs: the limit fits may take is the one from before the contexts.)
    monkeypatch.setattr(_threads, "_cpus", lambda: 8)
    with threadpool_limits(5):
        for order in ("first in, first out", "first in, last out"):
            entered, release = [threading.Event() for _ in range(2)], [threading.Event() for _ in range(2)]
            seen = {}

            def hold(k, threads):
                with _threads.blas_threads(threads):
                    entered[k].set()
                    release[k].wait()
                    seen[k] = blas_limit()

            workers = [threading.Thread(target=hold, args=(k, threads), daemon=True) for k, threads in ((0, 3), (1, 2))]
            try:
                workers[0].start()
                assert entered[0].wait(10) and blas_limit() == 3
                workers[1].start()
                assert entered[1].wait(10) and blas_limit() == 2 and _threads._allowed() == 5
                for k in ((0, 1) if order == "first in, first out" else (1, 0)):
                    release[k].set()
                    workers[k].join(10)
            finally:
                for event in release:
                    event.set()
            assert seen == {0: 2 if order == "first in, first out" else 3, 1: 2}, order
            assert blas_limit() == 5, order


@pytest.mark.parametrize("backend", BACKENDS)
def test_fits_on_two_threads_at_once_leave_the_process_blas_limit_as_it_was(backend, monkeypatch):
    monkeypatch.setattr(_threads, "MIN_FLOPS_PER_THREAD", 1)  # every fit takes threads, and shares them out
    X, y = make_problem("softmax", n=300, seed=0)
    errors = []

    def train(seed):
        try:
            for batch_size in (None, 50) * 5:
                fastgd.MLP([5, 9, 3], backend=backend, random_state=seed).fit(X, y, epochs=2, batch_size=batch_size)
        except Exception as error:  # noqa: BLE001 (reported below)
            errors.append(error)

    with threadpool_limits(4):
        workers = [threading.Thread(target=train, args=(seed,)) for seed in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert errors == [] and blas_limit() == 4



@pytest.mark.parametrize("backend", SPLITTING)
@pytest.mark.parametrize("output, loss", [("sigmoid", "binary_cross_entropy"), ("identity", "mse"),
                                          ("exp", "poisson")])
def test_every_loss_in_mini_batch_shares_matches_one_thread(backend, output, loss):
    options = dict(weighted=True, batch_size=50, count=2)
    one = epochs(backend, "float64", 1, "momentum-clipped", output, loss, **options)
    shared = epochs(backend, "float64", 2, "momentum-clipped", output, loss, **options)
    for value, reference in zip(shared, one):
        assert_close(value, reference, KERNEL_RTOL["float64"])


@pytest.mark.parametrize("backend", SPLITTING)
def test_mini_batches_on_the_same_threads_give_the_same_bits(backend):
    first, second = (epochs(backend, "float32", 3, "adam", batch_size=40) for _ in range(2))
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", SPLITTING)
@pytest.mark.parametrize("bad", ["row", "value"])
def test_a_mini_batch_share_that_fails_stops_where_one_thread_stops(backend, bad):
    X, y = make_problem("identity", n=200, seed=0)
    net = fastgd.MLP([5, 9, 3], output="identity", backend=backend, random_state=0)
    X, Y, _ = net.encode(X, y)
    order = np.arange(200)
    if bad == "value":
        X[150] = 1e300  # in the third batch of 64, its second share
    else:
        order[140] = 10**6
    results = []
    for threads in (1, 2):
        params, grads = net.params.copy(), np.zeros_like(net.params)
        value, steps, status = net.kernels.train_epoch(params, grads, np.zeros((0, len(params))), X, Y, order.copy(),
                                                       64, step_config("mse"), np.full(4, 0.1), 0,
                                                       net.kernels.workspace(64, 64), threads=threads)
        results.append((params, steps, status, np.isfinite(value)))
    (one, *rest_one), (two, *rest_two) = results
    assert rest_one == rest_two == [2, 1 if bad == "value" else 2, False]
    assert_close(two, one, KERNEL_RTOL["float64"])


@pytest.mark.parametrize("backend, kernel, sparse", MINI_BATCH_KERNELS)
def test_a_mini_batch_share_that_cannot_run_stops_the_others(backend, kernel, sparse, monkeypatch):
    module = fastgd.kernels._loaded[backend]
    share = getattr(module, kernel)

    def failing(*args):
        if args[-4] == 1:  # thread 1
            raise MemoryError("no room")
        return share(*args)

    monkeypatch.setattr(module, kernel, failing)
    with pytest.raises(MemoryError, match="no room"):
        epochs(backend, "float64", 2, "sgd", batch_size=64, count=1, sparse=sparse)


def spy_on(monkeypatch, backend, kernel):
    """The threads that call ``kernel`` of ``backend`` from now on, one entry a call."""
    module = fastgd.kernels._loaded[backend]
    seen, original = [], getattr(module, kernel)

    def spy(*args):
        seen.append(threading.get_ident())
        return original(*args)

    monkeypatch.setattr(module, kernel, spy)
    return seen


def assert_fits_agree(backend, sizes, X, y, **options):
    """A fit where the process allows two threads trains as one held to one thread: the same weights
    and logs (but the times) to rounding."""
    fits = {}
    for threads in (2, 1):
        net = fastgd.MLP(sizes, backend=backend, random_state=0)
        with threadpool_limits(threads):
            net.fit(X, y, **options)
        fits[threads] = net
    assert_close(fits[2].params, fits[1].params, KERNEL_RTOL["float64"])
    for name, values in fits[1].history_.history.items():  # the losses, a line search's step sizes
        if name != "epoch_time":
            assert_close(fits[2].history_.history[name], values, KERNEL_RTOL["float64"])


@pytest.mark.parametrize("backend", SPLITTING)
def test_a_mini_batch_fit_splits_steps_that_repay_threads(backend, monkeypatch):
    seen = spy_on(monkeypatch, backend, "train_epoch_units")  # dense batches of 128 rows: every layer split
    X, y = make_problem("softmax", n=300, n_in=20, seed=0)  # 12.8 MFLOP a step of 128 rows
    for optimizer in (fastgd.Adam(lr=0.01), fastgd.BacktrackingLineSearch(alpha0=2.0)):
        assert_fits_agree(backend, [20, 1024, 3], X, y, epochs=3, batch_size=128, optimizer=optimizer, l2=1e-3)
    assert len(seen) == 12 and seen.count(threading.get_ident()) == 6  # two threads an epoch, in two-thread fits
    seen.clear()
    with threadpool_limits(2):
        fastgd.MLP([20, 1024, 3], backend=backend, random_state=0).fit(X, y, epochs=1, batch_size=16)
    assert seen == []  # steps too small to repay a second thread run on one


@pytest.mark.parametrize("backend", SPLITTING)
def test_a_full_batch_line_search_computes_every_trial_point_in_shares(backend, monkeypatch):
    """Its threads meet inside the compiled epoch as mini-batches' do: each trial point's loss, not only
    the gradient, is computed in shares; and it trains as one thread does."""
    seen = spy_on(monkeypatch, backend, "train_epoch_share")
    gradients = spy_on(monkeypatch, backend, "batch_gradient")
    monkeypatch.setattr(_threads, "MIN_FLOPS_PER_THREAD", 1)
    X, y = make_problem("softmax", n=300, seed=0)
    options = dict(epochs=3, optimizer=fastgd.BacktrackingLineSearch(alpha0=50.0), l2=1e-3)
    assert_fits_agree(backend, [5, 9, 3], X, y, **options)
    assert len(seen) == 6 and seen.count(threading.get_ident()) == 3 and gradients == []
    with threadpool_limits(1):
        steps = fastgd.MLP([5, 9, 3], backend=backend, random_state=0).fit(X, y, **options).history["step_size"]
    assert min(steps) < 50.0  # the searches tried more than one point


@pytest.mark.skipif("numba" not in COMPILED or sys.platform != "linux",
                    reason="the numba backend is not expected here, or threads do not sleep on a futex")
def test_a_numba_thread_that_waits_for_a_late_one_sleeps_until_it_comes():
    from fastgd.kernels._numba import SYNC_LINE, _meet

    sync = np.zeros(SYNC_LINE * 3, np.int64)
    assert _meet(sync, 0, 1, 1)  # compiled (or loaded) before the clock starts
    sync[:] = 0
    waited = {}

    def early():
        start, cpu = time.perf_counter(), time.thread_time()
        waited["met"] = _meet(sync, 0, 2, 1)
        waited["wall"], waited["cpu"] = time.perf_counter() - start, time.thread_time() - cpu

    thread = threading.Thread(target=early)
    thread.start()
    time.sleep(0.3)
    assert _meet(sync, 1, 2, 1)
    thread.join(timeout=10)
    assert waited["met"] and 0.25 < waited["wall"] < 5 and waited["cpu"] < 0.1  # asleep, not spinning

    def abandoned():
        waited["met"] = _meet(sync, 0, 2, 2)

    thread = threading.Thread(target=abandoned)
    thread.start()
    sync[SYNC_LINE * 2] = 1  # the epoch is given up: the waiting thread stops waiting
    thread.join(timeout=10)
    assert not thread.is_alive() and waited["met"] is False


# Backends whose epochs of one row a step split every layer between threads.
SPLITTING_UNITS = [name for name in BACKENDS if fastgd.MLP([2, 2], backend=name).kernels.splits_units]
# Two layers (the first split by units), three (by inputs), four; sparse rows reach a first layer split
# either way. Batches of one row: 150 of them, two epochs.
UNITS_NETWORKS = {"two": (6, 33, 3), "three": (6, 9, 7, 3), "four": (6, 17, 9, 5, 3)}


@pytest.mark.parametrize("backend", SPLITTING_UNITS)
@pytest.mark.parametrize("sizes", UNITS_NETWORKS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("rows", ["dense", "sparse", "weighted"])
def test_one_row_steps_on_threads_match_the_reference_on_one(backend, sizes, dtype, threads, rows):
    options = dict(sparse=rows == "sparse", weighted=rows == "weighted", batch_size=1, n=150, count=2,
                   sizes=UNITS_NETWORKS[sizes])
    expected = epochs("numpy", dtype, 1, "sgd", **options)
    got = epochs(backend, dtype, threads, "sgd", **options)
    for value, reference in zip(got, expected):
        assert_close(value, reference, TRAINING_RTOL[dtype])


@pytest.mark.parametrize("backend", SPLITTING_UNITS)
@pytest.mark.parametrize("optimizer", [name for name in OPTIMIZER_CASES if name != "sgd"])
@pytest.mark.parametrize("sizes", UNITS_NETWORKS)
@pytest.mark.parametrize("rows", ["dense", "sparse", "weighted"])
def test_every_rule_in_one_row_steps_on_threads_matches_the_reference_on_one(backend, optimizer, sizes, rows):
    options = dict(sparse=rows == "sparse", weighted=rows == "weighted", batch_size=1, n=100, count=2,
                   sizes=UNITS_NETWORKS[sizes])
    expected = epochs("numpy", "float64", 1, optimizer, **options)
    for threads in (2, 3):
        for value, reference in zip(epochs(backend, "float64", threads, optimizer, **options), expected):
            assert_close(value, reference, TRAINING_RTOL["float64"])


@pytest.mark.parametrize("backend", SPLITTING_UNITS)
@pytest.mark.parametrize("optimizer", OPTIMIZER_CASES)
@pytest.mark.parametrize("sizes", UNITS_NETWORKS)
@pytest.mark.parametrize("rows", ["dense", "weighted"])
@pytest.mark.parametrize("batch_size", [7, 64])
def test_dense_batches_split_by_units_on_threads_match_the_reference_on_one(backend, optimizer, sizes, rows,
                                                                            batch_size, monkeypatch):
    # 129 rows: the last batch of 3 rows, or of one; every layer split, units dropped.
    seen = spy_on(monkeypatch, backend, "train_epoch_units")
    options = dict(weighted=rows == "weighted", batch_size=batch_size, n=129, count=2, sizes=UNITS_NETWORKS[sizes],
                   dropout=0.3)
    expected = epochs("numpy", "float64", 1, optimizer, **options)
    for threads in (2, 3):
        for value, reference in zip(epochs(backend, "float64", threads, optimizer, **options), expected):
            assert_close(value, reference, TRAINING_RTOL["float64"])
    assert len(seen) == 2 * (2 + 3)  # two epochs on two threads, two on three


@pytest.mark.parametrize("backend", SPLITTING_UNITS)
@pytest.mark.parametrize("optimizer", [name for name in OPTIMIZER_CASES if name != "sgd"])
def test_every_rule_in_float32_one_row_steps_on_threads_matches_the_reference_on_one(backend, optimizer):
    options = dict(batch_size=1, n=100, count=2, sizes=UNITS_NETWORKS["three"])
    expected = epochs("numpy", "float32", 1, optimizer, **options)
    for value, reference in zip(epochs(backend, "float32", 2, optimizer, **options), expected):
        assert_close(value, reference, TRAINING_RTOL["float32"])


@pytest.mark.parametrize("backend", SPLITTING_UNITS)
@pytest.mark.parametrize("output, loss, hidden", [("sigmoid", "binary_cross_entropy", "relu"),
                                                  ("identity", "mse", "gelu"), ("exp", "poisson", "softplus"),
                                                  ("softmax", "cross_entropy", "leaky_relu")])
@pytest.mark.parametrize("sizes", ["two", "three"])
def test_every_loss_and_activation_in_one_row_steps_on_threads_matches_one_thread(backend, output, loss, hidden,
                                                                                 sizes):
    options = dict(weighted=True, batch_size=1, n=100, count=2, sizes=UNITS_NETWORKS[sizes], hidden=hidden)
    one = epochs(backend, "float64", 1, "sgd", output, loss, **options)
    split = epochs(backend, "float64", 2, "sgd", output, loss, **options)
    for value, reference in zip(split, one):
        assert_close(value, reference, KERNEL_RTOL["float64"])


@pytest.mark.parametrize("backend", SPLITTING_UNITS)
@pytest.mark.parametrize("sizes", ["two", "three"])
def test_one_row_steps_on_threads_drop_the_units_one_thread_drops(backend, sizes):
    options = dict(batch_size=1, n=100, count=2, sizes=UNITS_NETWORKS[sizes], dropout=0.3)
    one = epochs(backend, "float64", 1, "sgd", **options)
    for threads in (2, 3):
        for value, reference in zip(epochs(backend, "float64", threads, "sgd", **options), one):
            assert_close(value, reference, KERNEL_RTOL["float64"])


@pytest.mark.parametrize("backend", SPLITTING_UNITS)
@pytest.mark.parametrize("optimizer", ["sgd", "rmsprop-clipped", "line-search"])
def test_one_row_steps_on_the_same_threads_give_the_same_bits(backend, optimizer):
    first, second = (epochs(backend, "float32", 2, optimizer, batch_size=1, n=100) for _ in range(2))
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


# Threaded epochs of every kind: one batch in shares, mini-batches, one row a step (plain SGD, a rule, a line search).
PROCESS_CASES = [(None, 2, "adam"), (64, 2, "momentum-clipped"), (1, 2, "sgd"), (1, 2, "adam"), (1, 3, "line-search")]


def threaded_digests(backend):
    """A digest of the weights and state after each of ``PROCESS_CASES``, float32 and float64."""
    return [hashlib.sha256(b"".join(array.tobytes() for array in epochs(backend, dtype, threads, optimizer, n=300,
                                                                        count=2, batch_size=batch_size)[::2])
                           ).hexdigest()
            for batch_size, threads, optimizer in PROCESS_CASES for dtype in ("float32", "float64")]


@pytest.mark.parametrize("backend", sorted(set(SPLITTING) & set(SPLITTING_UNITS)))
def test_threaded_epochs_give_the_same_bits_in_another_process(backend):
    """Run after run: other processes, their arrays elsewhere in memory (a loop that vectorised by where
    an array starts would sum in another order), train to the same bits. Numba's kernels as loaded
    from its cache: a process that has just compiled them trains to the same weights to rounding, not
    to the same bits (docs/backends.md)."""
    here = threaded_digests(backend)  # compiles and caches what the others load
    code = ("import sys, numpy; sys.path.insert(0, sys.argv[1]); shift = numpy.empty(int(sys.argv[3])); "
            "from test_threads import threaded_digests; print(*threaded_digests(sys.argv[2]))")
    others = [subprocess.run([sys.executable, "-c", code, os.path.dirname(__file__), backend, str(shift)],
                             capture_output=True, text=True, timeout=600) for shift in (1, 12345)]
    for other in others:
        assert other.returncode == 0, other.stderr
    assert others[0].stdout.split() == others[1].stdout.split()
    if backend != "numba":
        assert others[0].stdout.split() == here


@pytest.mark.parametrize("backend", SPLITTING_UNITS)
@pytest.mark.parametrize("bad", ["row", "value", "weights"])
@pytest.mark.parametrize("sizes", ["two", "three"])
@pytest.mark.parametrize("rule", ["sgd", "adam"])
def test_one_row_steps_on_threads_stop_where_one_thread_stops(backend, bad, sizes, rule):
    sizes = UNITS_NETWORKS[sizes]
    X, y = make_problem("identity", n=60, n_in=sizes[0], seed=0)
    net = fastgd.MLP(list(sizes), output="identity", backend=backend, random_state=0)
    X, Y, _ = net.encode(X, y)
    order, params = np.arange(60), net.params.copy()
    if bad == "value":
        Y[40] = 1e300  # its loss overflows
    elif bad == "row":
        order[40] = 10**6
    else:  # the last weight of the first layer: thread 1's part, whether it is split by inputs or by units
        params[net.kernels.layout[0, 4] - 1] = np.inf
    hyper = {**dict.fromkeys(OPTIMIZERS[rule].hyper, 0.0), **OPTIMIZER_CASES[rule][1]}
    results = []
    for threads in (1, 2):
        trained, state = params.copy(), np.zeros((len(OPTIMIZERS[rule].slots(hyper)), len(params)))
        value, steps, status = net.kernels.train_epoch(trained, np.zeros_like(params), state, X, Y, order.copy(), 1,
                                                       step_config("mse", rule, hyper, l2=1e-3), np.full(60, 0.01),
                                                       0, net.kernels.workspace(1, 1), threads=threads)
        results.append((trained, status, np.isfinite(value)))
    (one, *rest_one), (two, *rest_two) = results
    assert rest_one == rest_two == [1 if bad != "row" else 2, False]
    if bad != "weights":
        assert_close(two, one, KERNEL_RTOL["float64"])


@pytest.mark.parametrize("backend", SPLITTING_UNITS)
def test_a_one_row_share_that_cannot_run_stops_the_others(backend, monkeypatch):
    module = fastgd.kernels._loaded[backend]
    units = module.train_epoch_units

    def failing(*args):
        if args[-4] == 1:  # thread 1
            raise MemoryError("no room")
        return units(*args)

    monkeypatch.setattr(module, "train_epoch_units", failing)
    with pytest.raises(MemoryError, match="no room"):
        epochs(backend, "float64", 2, "sgd", batch_size=1, n=50, count=1)


@pytest.mark.parametrize("backend", SPLITTING_UNITS)
def test_a_one_row_fit_of_any_rule_splits_steps_that_repay_threads(backend, monkeypatch):
    seen = spy_on(monkeypatch, backend, "train_epoch_units")
    X, y = make_problem("softmax", n=60, n_in=20, seed=0)  # 0.2 MFLOP a step
    for optimizer, clip_norm in ((fastgd.SGD(lr=0.01), None), (fastgd.SGD(lr=0.01, momentum=0.9), 1.0),
                                 (fastgd.BacktrackingLineSearch(alpha0=20.0), 1.0)):
        assert_fits_agree(backend, [20, 2048, 3], X, y, epochs=2, batch_size=1, optimizer=optimizer, l2=1e-3,
                          clip_norm=clip_norm)
    assert len(seen) == 12 and seen.count(threading.get_ident()) == 6  # two threads an epoch, in two-thread fits
    seen.clear()
    with threadpool_limits(2):
        fastgd.MLP([20, 64, 3], backend=backend, random_state=0).fit(X, y, epochs=1, batch_size=1)
    assert seen == []  # steps too small to repay a second thread run on one


@pytest.mark.parametrize("backend", [name for name in BACKENDS if name not in SPLITTING])
def test_a_backend_that_cannot_split_mini_batches_refuses_threads_for_them(backend):
    X, y = make_problem("softmax", n=20, n_in=6, seed=0)
    net = fastgd.MLP([6, 9, 3], backend=backend, random_state=0)
    X, Y, _ = net.encode(X, y)
    params = net.params.copy()
    with pytest.raises(ValueError, match="threads: the \\w+ backend takes each batch of an epoch of several batches "
                                         "on one thread"):
        net.kernels.train_epoch(params, np.zeros_like(params), np.zeros((0, len(params))), X, Y, np.arange(20), 4,
                                step_config("cross_entropy"), np.full(5, 0.1), 0, net.kernels.workspace(4, 4),
                                threads=2)
    np.testing.assert_array_equal(params, net.params)


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_row_steps_on_threads_go_through_several_layers(backend):
    X, y = make_problem("softmax", n=20, n_in=6, seed=0)
    net = fastgd.MLP([6, 3], backend=backend, random_state=0)
    X, Y, _ = net.encode(X, y)
    params = net.params.copy()
    with pytest.raises(ValueError, match="threads: .*one row on one thread"):
        net.kernels.train_epoch(params, np.zeros_like(params), np.zeros((0, len(params))), X, Y, np.arange(20), 1,
                                step_config("cross_entropy"), np.full(20, 0.1), 0, net.kernels.workspace(1, 1),
                                threads=2)
    np.testing.assert_array_equal(params, net.params)


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="a Ctrl-C lands on the main thread")
def test_a_ctrl_c_while_waiting_for_the_threads_is_raised_once_they_have_ended():
    """Else a thread left running writes into buffers the next epoch reuses (a two-thread epoch's meeting
    place among them: a thread stuck there kept the process from exiting)."""
    import signal

    ended, told = threading.Event(), []

    def slow():
        time.sleep(0.5)
        ended.set()
        return 7

    future = _threads.pool(1).submit(slow)
    threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt):
        _threads.results([future], lambda: told.append(ended.is_set()))
    assert ended.is_set() and told == [False]  # told to stop at once; raised once the thread had ended
    assert _threads.results([future]) == [7]


def test_the_pool_never_keeps_the_process_from_exiting():
    """Its threads are daemon threads, all started with the pool: none that a Ctrl-C cut short in the
    middle of starting it can be left for the process to wait for at exit (as a ThreadPoolExecutor's)."""
    workers = _threads.Workers(2, name="fastgd-test")
    started = [thread for thread in threading.enumerate() if thread.name.startswith("fastgd-test_")]
    assert len(started) == 2 and all(thread.daemon for thread in started)
    assert workers.submit(pow, 2, 10).result() == 1024
    with pytest.raises(ZeroDivisionError):
        workers.submit(divmod, 1, 0).result()
