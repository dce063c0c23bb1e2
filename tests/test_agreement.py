"""Every compiled backend computes what the NumPy reference computes, on the same inputs.

Tolerances: float64 to 1e-10 and float32 to 1e-5 relative for single kernel
calls; after 5 epochs of training, 1e-10 (float64) and 1e-4 (float32),
relative to the largest parameter.
"""

import gc
import warnings

import numpy as np
import pytest
import scipy.sparse

import fastgd
import fastgd.kernels
from conftest import BACKENDS, COMPILED, EXPECTED, OUTPUT_LOSSES, SOME_COMBINATIONS, TARGETS, make_problem
from fastgd._codes import LOSSES, NOT_FINITE
from fastgd.kernels import CSR, resolve, step_config
from fastgd.training import CHUNK_ROWS

KERNEL_RTOL = {"float64": 1e-10, "float32": 1e-5}
TRAINING_RTOL = {"float64": 1e-10, "float32": 1e-4}
def assert_close(got, expected, rtol):
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * max(np.abs(expected).max(), 1e-300))


def pair(backend, hidden, output, loss, dtype, sizes=(5, 9, 7, 3), seed=0):
    nets = [fastgd.MLP(list(sizes), hidden=hidden, output=output, loss=loss, backend=name, dtype=dtype,
                       random_state=seed) for name in ("numpy", backend)]
    return nets


@pytest.mark.parametrize("backend", TARGETS, indirect=True)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("rows", [1, 5, 16, 17, 40, 600])  # 600: blocks of 256 + 256 + 88 rows
@pytest.mark.parametrize("hidden, output, loss", SOME_COMBINATIONS)
def test_kernels_match_reference(backend, dtype, rows, hidden, output, loss):
    X, y = make_problem(output, n=rows, seed=rows)
    assert_kernels_match(pair(backend, hidden, output, loss, dtype), X, y, loss, rows, dtype)


@pytest.mark.parametrize("backend", TARGETS, indirect=True)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("rows", [1, 5, 40, 513])  # 513: blocks of 256 + 256 + 1 rows
def test_products_with_a_side_of_one_match_reference(backend, dtype, rows):
    # Layers of one input or one output, and blocks of one row: their products are matrix-vector or
    # outer products, not BLAS's gemm.
    X, y = make_problem("identity", n=rows, n_in=1, seed=rows)
    nets = pair(backend, "tanh", "identity", "mse", dtype, sizes=(1, 4, 1, 3), seed=2)
    assert_kernels_match(nets, X, y, "mse", rows, dtype)


@pytest.mark.parametrize("backend", TARGETS, indirect=True)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("rows", [17, 40, 600])
def test_products_in_tiles_match_reference(backend, dtype, rows):
    # Products past one tile every way: 300 terms (the tiles' depth is 128), widths that are not a
    # multiple of a tile's columns (16 or 32) or rows (6 or 8), row blocks of 256 and what is left.
    X, y = make_problem("softmax", n=rows, n_in=300, n_out=5, seed=rows)
    nets = pair(backend, "relu", "softmax", "cross_entropy", dtype, sizes=(300, 140, 37, 5), seed=3)
    assert_kernels_match(nets, X, y, "cross_entropy", rows, dtype)


def assert_kernels_match(nets, X, y, loss, rows, dtype):
    """The forward pass, losses, gradient and step of ``nets`` (the reference, a compiled one) agree."""
    reference, compiled = nets
    X, Y, _ = reference.encode(X, y)
    config = step_config(loss, l2=0.01)
    results = []
    for net in (reference, compiled):
        kernels = net.kernels
        ws = kernels.workspace(rows)
        params = net.params.copy()
        grads = np.zeros_like(params)
        out = kernels.forward(params, X, ws).copy()
        value, _ = kernels.data_loss(params, X, Y, LOSSES[loss], ws)
        batch_loss = kernels.backward(params, X, Y, config, ws, grads)
        penalty = kernels.l2_penalty(params, 0.01)
        gradient = grads.copy()  # update() may spend grads
        kernels.update(params, grads, np.zeros((0, len(params)), net.dtype), config, 0.1, 0)
        results.append((out, value, batch_loss, penalty, gradient, params))
    rtol = KERNEL_RTOL[dtype]
    for expected, got in zip(*results):
        assert np.asarray(got).dtype == np.asarray(expected).dtype or np.ndim(got) == 0
        assert_close(got, expected, rtol)


@pytest.mark.parametrize("backend", TARGETS, indirect=True)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batch_size", [None, 1, 8, 32], ids=["batch", "stochastic", "mini8", "mini32"])
@pytest.mark.parametrize("hidden, output, loss", SOME_COMBINATIONS)
def test_five_epochs_match_reference(backend, dtype, batch_size, hidden, output, loss):
    X, y = make_problem(output, n=70, seed=3)
    nets = pair(backend, hidden, output, loss, dtype, seed=5)
    lr = 0.01 if batch_size == 1 else 0.05
    histories = [net.fit(X, y, epochs=5, batch_size=batch_size, optimizer=fastgd.SGD(lr=lr), l2=1e-3,
                         train_metrics=False).history for net in nets]
    rtol = TRAINING_RTOL[dtype]
    assert_close(nets[1].params, nets[0].params, rtol)
    assert_close(histories[1]["loss"], histories[0]["loss"], rtol)


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("batch_size", [None, 1, 4])
@pytest.mark.parametrize("bits", ["mt19937", "pcg64"])
def test_a_generator_reseeded_mid_fit_shuffles_as_the_reference(backend, batch_size, bits):
    # Each epoch shuffles with the generator as it is then: re-seeding frees the state the one before used.
    class Reseed(fastgd.Callback):
        def on_epoch_end(self, epoch, logs):
            self.model.training.rng.__init__(epoch if bits == "mt19937" else np.random.PCG64(epoch))
            gc.collect()
            [np.full(10**5, 7, np.uint32) for _ in range(3)]  # memory a freed state may be given to

    X, y = make_problem("softmax", n=70, seed=3)
    nets = pair(backend, "tanh", "softmax", "cross_entropy", "float64", seed=5)
    for net in nets:
        net.fit(X, y, epochs=4, batch_size=batch_size, optimizer=fastgd.SGD(lr=0.05), callbacks=[Reseed()])
    assert_close(nets[1].params, nets[0].params, TRAINING_RTOL["float64"])
    assert nets[1].training.rng.randint(2**31) == nets[0].training.rng.randint(2**31)


@pytest.mark.parametrize("backend", TARGETS, indirect=True)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("sizes", [(5, 3), (5, 9, 3), (8, 9, 7, 3), (7, 37, 3)],
                         ids=["one-layer", "two-layers", "three-layers", "two-layers-wide"])
def test_stochastic_epochs_of_every_depth_match_reference(backend, dtype, sizes):
    # Plain SGD on one row per step defers each step's update of the first layer to the next
    # row's forward pass and the last one to the end of the epoch (one layer: nothing deferred).
    # That step goes through W0 four rows at a time, each row in vectors, then column by column:
    # 7 x 37 takes every path, in either dtype and vector width.
    X, y = make_problem("softmax", n=30, n_in=sizes[0], seed=2)
    weights = np.random.RandomState(1).uniform(0.5, 2.0, 30)
    nets = pair(backend, "relu", "softmax", "cross_entropy", dtype, sizes=sizes, seed=4)
    histories = [net.fit(X, y, epochs=3, batch_size=1, optimizer=fastgd.SGD(lr=0.05), l2=1e-2, sample_weight=weights,
                         train_metrics=False).history for net in nets]
    rtol = TRAINING_RTOL[dtype]
    assert_close(nets[1].params, nets[0].params, rtol)
    assert_close(histories[1]["loss"], histories[0]["loss"], rtol)


@pytest.mark.parametrize("backend", TARGETS, indirect=True)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("hidden", ["relu", "sigmoid", "tanh", "gelu", "softplus"])
@pytest.mark.parametrize("sizes", [(5, 1), (5, 9, 1), (6, 9, 7, 1)], ids=["one-layer", "two-layers", "three-layers"])
@pytest.mark.parametrize("momentum", [0.0, 0.5], ids=["sgd", "momentum"])
def test_one_output_layers_in_batches_of_one_match_reference(backend, dtype, hidden, sizes, momentum):
    # A layer of one output on one row steps its column of weights (and takes the delta below) in
    # passes down the column; its forward pass is a dot product. With momentum: a gradient, no fused step.
    X, y = make_problem("identity", n=30, n_in=sizes[0], n_out=1, seed=3)
    weights = np.random.RandomState(1).uniform(0.5, 2.0, 30)
    nets = pair(backend, hidden, "identity", "mse", dtype, sizes=sizes, seed=5)
    histories = [net.fit(X, y, epochs=3, batch_size=1, optimizer=fastgd.SGD(lr=0.01, momentum=momentum), l2=1e-2,
                         sample_weight=weights, train_metrics=False).history for net in nets]
    rtol = TRAINING_RTOL[dtype]
    assert_close(nets[1].params, nets[0].params, rtol)
    assert_close(histories[1]["loss"], histories[0]["loss"], rtol)


@pytest.mark.parametrize("backend", TARGETS, indirect=True)
def test_textbook_network_large_batches_match_reference(backend, textbook_data):
    X_train, _, y_train, _ = textbook_data
    nets = pair(backend, "relu", "softmax", "cross_entropy", "float64", sizes=(10, 64, 32, 3), seed=42)
    for net in nets:
        net.fit(X_train, y_train, epochs=5, batch_size=256, optimizer=fastgd.SGD(lr=0.05), l2=1e-4,
                train_metrics=False)
    assert_close(nets[1].params, nets[0].params, 1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["read-only", "strided rows", "strided columns", "fortran"])
def test_unusual_inputs_train_like_contiguous_ones(backend, kind):
    X, y = make_problem("softmax", n=40)
    if kind == "read-only":
        other = X.copy()
        other.flags.writeable = False
    elif kind == "strided rows":
        other = np.repeat(X, 3, axis=0)[::3]
    elif kind == "strided columns":
        other = np.repeat(X, 2, axis=1)[:, ::2]
    else:
        other = np.asfortranarray(X)
    assert other.flags.c_contiguous == (kind == "read-only")
    a, b = (fastgd.MLP([5, 6, 3], backend=backend, random_state=0) for _ in range(2))
    for net, data in ((a, X), (b, other)):
        for batch_size in (None, 1, 20):
            net.fit(data, y, epochs=1, batch_size=batch_size)
    # Not bit for bit: with reassociated sums, how a loop vectorises may depend on where each array starts.
    assert_close(b.params, a.params, 1e-12)
    assert_close(b.predict_proba(other), a.predict_proba(X), 1e-12)


def test_auto_prefers_cython_then_numba_then_numpy(monkeypatch):
    if "cython" in EXPECTED:
        assert resolve("auto")[0] == "cython"
    numba_loads = "numba" in fastgd.backends()
    monkeypatch.setitem(fastgd.kernels._loaded, "cython", "ImportError: not built")
    assert resolve("auto")[0] == ("numba" if numba_loads else "numpy")
    monkeypatch.setitem(fastgd.kernels._loaded, "numba", "ImportError: not installed")
    assert resolve("auto")[0] == "numpy" and fastgd.MLP([2, 2]).backend_ == "numpy"
    with pytest.raises(ValueError, match=r"backend: 'cython' is not available here \(ImportError: not built\)"):
        resolve("cython")


@pytest.mark.skipif(len(COMPILED) < 2, reason="needs two compiled backends")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batch_size", [None, 1, 8, 32], ids=["batch", "stochastic", "mini8", "mini32"])
def test_compiled_backends_agree_with_each_other(dtype, batch_size):
    X, y = make_problem("softmax", n=70, seed=4)
    nets = [fastgd.MLP([5, 9, 7, 3], backend=name, dtype=dtype, random_state=2) for name in COMPILED]
    for net in nets:
        net.fit(X, y, epochs=5, batch_size=batch_size, optimizer=fastgd.SGD(lr=0.05), l2=1e-3, train_metrics=False)
    for net in nets[1:]:
        assert_close(net.params, nets[0].params, TRAINING_RTOL[dtype])


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_confident_float32_cross_entropy_is_never_negative(backend):
    # 60,000 rows the network gets right by a wide margin: the exact loss is about 1e-13.
    rng = np.random.RandomState(0)
    labels = rng.randint(0, 10, 60_000)
    X = (np.eye(10)[labels] * 40 + rng.standard_normal((60_000, 10))).astype(np.float32)
    net = fastgd.MLP([10, 10], output="softmax", backend=backend, dtype="float32")
    net.set_weights([np.eye(10), np.zeros(10)])
    net.fit(X[:10], labels[:10], optimizer=fastgd.SGD(lr=1e-30), epochs=1)  # learns the labels, moves nothing
    loss, accuracy = net.evaluate(X, labels)
    exact = fastgd.MLP([10, 10], output="softmax", backend="numpy", dtype="float64")
    exact.set_weights([np.eye(10), np.zeros(10)])
    exact.classes_ = net.classes_
    assert accuracy == 1.0 and 0 <= loss < 1e-10 and exact.evaluate(X.astype(np.float64), labels)[0] < 1e-10


@pytest.mark.parametrize("backend", COMPILED)
def test_weights_whose_squares_overflow_train_on_without_l2(backend):
    # A dead ReLU unit's weights of 1e200 never move, and their squares overflow float64; without
    # L2 the loss does not involve them, so every backend trains on, as the reference does.
    X, y = make_problem("softmax", n=30)
    X = np.abs(X)
    nets = pair(backend, "relu", "softmax", "cross_entropy", "float64", sizes=(5, 4, 3))
    for net in nets:
        W0, b0, W1, b1 = net.get_weights()
        W0[:, 0] = -1e200  # unit 0 is never active on X >= 0
        net.set_weights([W0, b0, W1, b1])
    histories = [net.fit(X, y, epochs=3, batch_size=batch, optimizer=fastgd.SGD(lr=0.1), train_metrics=False)
                 for net in nets for batch in (None, 1, 8)]
    assert all(len(h.epoch) == 3 and np.isfinite(h.history["loss"]).all() for h in histories)
    assert_close(nets[1].params, nets[0].params, 1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rows", [3, 16, 17, 40])
@pytest.mark.parametrize("hidden, output, loss", SOME_COMBINATIONS)
def test_integer_weights_count_as_repeated_rows(backend, rows, hidden, output, loss):
    """A row of weight ``w`` is the row ``w`` times over: the weighted loss and gradient of a batch
    (means over its total weight, L2 per row of that weight) equal those of the repeated rows."""
    X, y = make_problem(output, n=rows, seed=rows)
    net = fastgd.MLP([5, 9, 7, 3], hidden=hidden, output=output, loss=loss, backend=backend, random_state=0)
    X, Y, _ = net.encode(X, y)
    weights = np.random.RandomState(rows).randint(0, 4, rows).astype(np.float64)
    weights[0] = 2
    repeated = np.repeat(np.arange(rows), weights.astype(int))
    config = step_config(loss, l2=0.01, l2_per_row=True)
    kernels = net.kernels
    ws = kernels.workspace(len(repeated))
    results = []
    for rows_X, rows_Y, w in ((X, Y, weights), (X[repeated], Y[repeated], None)):
        grads = np.zeros_like(net.params)
        value, _ = kernels.data_loss(net.params, rows_X, rows_Y, LOSSES[loss], ws, w)
        results.append((value, kernels.backward(net.params, rows_X, rows_Y, config, ws, grads, w), grads))
    for got, expected in zip(*results):
        assert_close(got, expected, 1e-12)


@pytest.mark.parametrize("backend", TARGETS, indirect=True)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batch_size", [None, 1, 8, 32], ids=["batch", "stochastic", "mini8", "mini32"])
@pytest.mark.parametrize("optimizer", [
    fastgd.SGD(lr=0.05), fastgd.Adam(lr=0.01),
    fastgd.BacktrackingLineSearch(alpha0=0.2),  # a full step is chaotic here: rounding flips accept/reject
], ids=["sgd", "adam", "line-search"])
def test_weighted_epochs_match_reference(backend, dtype, batch_size, optimizer):
    X, y = make_problem("softmax", n=70, seed=3)
    weights = np.random.RandomState(4).uniform(0.1, 3.0, 70)
    nets = pair(backend, "tanh", "softmax", "cross_entropy", dtype, seed=5)
    histories = [net.fit(X, y, epochs=5, batch_size=batch_size, optimizer=optimizer, l2=1e-3, sample_weight=weights)
                 for net in nets]
    rtol = TRAINING_RTOL[dtype]
    assert_close(nets[1].params, nets[0].params, rtol)
    for key in ("loss", "train_loss"):
        assert_close(histories[1].history[key], histories[0].history[key], rtol)
    unweighted = pair(backend, "tanh", "softmax", "cross_entropy", dtype, seed=5)[0]
    unweighted.fit(X, y, epochs=5, batch_size=batch_size, optimizer=optimizer, l2=1e-3)
    # The weights weigh rows against the others of their batch: a batch of one row is that row.
    assert np.allclose(unweighted.params, nets[0].params, rtol=1e-3) == (batch_size == 1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("output, loss", OUTPUT_LOSSES)
def test_rows_that_weigh_nothing_have_a_nan_mean(backend, dtype, output, loss):
    """A batch whose rows all weigh 0 has no mean loss: NaN from every kernel, without an error or a
    warning, and an epoch stops at it before the update (``NOT_FINITE``)."""
    X, y = make_problem(output, n=24, seed=2)
    net = fastgd.MLP([5, 9, 3], hidden="tanh", output=output, loss=loss, backend=backend, dtype=dtype,
                     random_state=0)
    X, Y, _ = net.encode(X, y)
    kernels, weights, start = net.kernels, np.zeros(24), net.params.copy()
    config = step_config(loss, l2=0.01, l2_per_row=True)
    ws, grads = kernels.workspace(24), np.zeros_like(start)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(kernels.data_loss(start, X, Y, LOSSES[loss], ws, weights)[0])
        assert np.isnan(kernels.backward(start, X, Y, config, ws, grads, weights))
        for batch_size, threads in ((24, 1), (24, 2), (8, 1)):
            params = start.copy()
            epoch = kernels.train_epoch(params, grads, np.zeros((0, len(params)), dtype), X, Y, np.arange(24),
                                        batch_size, config, np.full(24 // batch_size, 0.1), 0,
                                        kernels.workspace(24, 0 if batch_size == 24 else 8), weights, threads=threads)
            assert np.isnan(epoch[0]) and epoch[1:] == (0, NOT_FINITE)
            np.testing.assert_array_equal(params, start)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_fit_stops_as_diverged_at_a_batch_that_weighs_nothing(backend):
    X, y = make_problem("softmax", n=40, seed=3)
    weights = np.random.RandomState(4).uniform(0.1, 3.0, 40)
    weights[8:16] = 0  # the second batch of 8
    net = fastgd.MLP([5, 9, 3], hidden="tanh", backend=backend, random_state=5)
    start = net.params.copy()
    with pytest.raises(fastgd.TrainingDiverged, match="epoch 1") as error:
        net.fit(X, y, epochs=2, batch_size=8, shuffle=False, sample_weight=weights)
    assert error.value.history.epoch == []
    np.testing.assert_array_equal(net.params, start)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch_size", [None, 300], ids=["batch", "mini300"])
def test_training_metrics_add_chunks_by_their_weight(backend, batch_size):
    """The training loss is measured in chunks of ``CHUNK_ROWS`` rows: a chunk that weighs nothing
    adds nothing, and the others add their weighted losses over the total weight."""
    n = CHUNK_ROWS + 300
    X, y = make_problem("softmax", n=n, seed=3)
    weights = np.random.RandomState(4).uniform(0.1, 3.0, n)
    weights[:CHUNK_ROWS] = 0  # the first chunk
    net = fastgd.MLP([5, 9, 3], hidden="tanh", backend=backend, random_state=5)
    history = net.fit(X, y, epochs=2, batch_size=batch_size, optimizer=fastgd.Adam(lr=0.01), sample_weight=weights)
    log_p = np.log(net.predict_proba(X)[np.arange(n), y])
    assert history.history["train_loss"][-1] == pytest.approx(-(weights @ log_p) / weights.sum(), rel=1e-10)
    if batch_size is None:
        assert history.history["loss"][1] == pytest.approx(history.history["train_loss"][0], rel=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch_size", [None, 1, 8], ids=["batch", "stochastic", "mini8"])
@pytest.mark.parametrize("optimizer", [fastgd.SGD(lr=0.05), fastgd.BacktrackingLineSearch(alpha0=0.2)],
                         ids=["sgd", "line-search"])
def test_float32_weighs_rows_by_weights_beyond_its_range(backend, batch_size, optimizer):
    """Weights are float64: a float32 model weighs its rows by weights float32 cannot hold (2**990
    times the others: the same ratios, exactly) as by the others."""
    X, y = make_problem("softmax", n=40, seed=3)
    weights = np.random.RandomState(4).uniform(0.1, 3.0, 40)
    nets = [fastgd.MLP([5, 9, 3], hidden="tanh", backend=backend, dtype="float32", random_state=5) for _ in range(2)]
    start = nets[0].params.copy()
    histories = [net.fit(X, y, epochs=3, batch_size=batch_size, optimizer=optimizer, sample_weight=w).history
                 for net, w in zip(nets, (weights, weights * 2.0**990))]
    assert not np.allclose(nets[0].params, start, rtol=1e-3)
    np.testing.assert_array_equal(nets[1].params, nets[0].params)
    for key in ("loss", "train_loss"):
        assert histories[1][key] == histories[0][key]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("rows", [1, 5, 16, 17, 40, 600])
@pytest.mark.parametrize("hidden, output, loss", SOME_COMBINATIONS)
def test_sparse_rows_compute_what_dense_rows_compute(backend, dtype, rows, hidden, output, loss):
    X, y = make_problem(output, n=rows, n_in=12, seed=rows)
    X[np.random.RandomState(rows).rand(*X.shape) < 0.7] = 0  # 70% zeros; rows 0 may be empty
    X[0] = 0
    net = fastgd.MLP([12, 9, 7, 3], hidden=hidden, output=output, loss=loss, backend=backend, dtype=dtype,
                     random_state=0)
    X, Y, _ = net.encode(X, y)
    sparse = CSR(scipy.sparse.csr_array(X), dtype)
    config, ws = step_config(loss, l2=0.01), net.kernels.workspace(rows)
    weights = np.random.RandomState(1).uniform(0.5, 2, rows)
    results = []
    for rows_X in (X, sparse):
        grads = np.zeros_like(net.params)
        out = net.kernels.forward(net.params, rows_X, ws).copy()
        value, _ = net.kernels.data_loss(net.params, rows_X, Y, LOSSES[loss], ws, weights)
        results.append((out, value, net.kernels.backward(net.params, rows_X, Y, config, ws, grads, weights), grads))
    for got, expected in zip(*results):
        assert_close(got, expected, KERNEL_RTOL[dtype])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batch_size", [None, 1, 8, 32], ids=["batch", "stochastic", "mini8", "mini32"])
@pytest.mark.parametrize("optimizer", [fastgd.SGD(lr=0.05), fastgd.Adam(lr=0.01)], ids=["sgd", "adam"])
def test_sparse_epochs_take_the_dense_steps(backend, dtype, batch_size, optimizer):
    X, y = make_problem("softmax", n=70, n_in=30, seed=3)
    X[np.random.RandomState(3).rand(*X.shape) < 0.8] = 0
    nets = [fastgd.MLP([30, 9, 3], hidden="relu", backend=backend, dtype=dtype, random_state=5) for _ in range(2)]
    histories = [net.fit(rows, y, epochs=5, batch_size=batch_size, optimizer=optimizer, l2=1e-3).history
                 for net, rows in zip(nets, (X, scipy.sparse.csr_matrix(X)))]
    assert_close(nets[1].params, nets[0].params, TRAINING_RTOL[dtype])
    assert_close(histories[1]["train_loss"], histories[0]["train_loss"], TRAINING_RTOL[dtype])
    np.testing.assert_array_equal(nets[0].predict(X), nets[1].predict(scipy.sparse.csc_matrix(X)))


@pytest.mark.parametrize("backend", TARGETS, indirect=True)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batch_size", [None, 300], ids=["batch", "mini300"])
@pytest.mark.parametrize("optimizer", [fastgd.SGD(lr=0.05), fastgd.Adam(lr=0.01),
                                       fastgd.BacktrackingLineSearch(alpha0=0.2)], ids=["sgd", "adam", "line-search"])
@pytest.mark.parametrize("hidden, output, loss", SOME_COMBINATIONS)
def test_epochs_of_batches_in_several_blocks_match_reference(backend, dtype, batch_size, optimizer, hidden, output,
                                                             loss):
    """Batches of 700 and 300 rows: the compiled backends go through each in blocks of rows,
    the gradient summed block by block, one step after the last."""
    X, y = make_problem(output, n=700, seed=7)
    weights = np.random.RandomState(7).uniform(0.1, 3.0, 700)
    nets = pair(backend, hidden, output, loss, dtype, seed=5)
    histories = [net.fit(X, y, epochs=3, batch_size=batch_size, optimizer=optimizer, l2=1e-3, sample_weight=weights)
                 for net in nets]
    rtol = TRAINING_RTOL[dtype]
    assert_close(nets[1].params, nets[0].params, rtol)
    for key in ("loss", "train_loss"):
        assert_close(histories[1].history[key], histories[0].history[key], rtol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch_size", [None, 300], ids=["batch", "mini300"])
def test_sparse_batches_in_several_blocks_take_the_dense_steps(backend, batch_size):
    X, y = make_problem("softmax", n=700, n_in=30, seed=3)
    X[np.random.RandomState(3).rand(*X.shape) < 0.8] = 0
    nets = [fastgd.MLP([30, 9, 3], hidden="relu", backend=backend, random_state=5) for _ in range(2)]
    for net, rows in zip(nets, (X, scipy.sparse.csr_matrix(X))):
        net.fit(rows, y, epochs=3, batch_size=batch_size, optimizer=fastgd.Adam(lr=0.01), l2=1e-3)
    assert_close(nets[1].params, nets[0].params, TRAINING_RTOL["float64"])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batch_size", [700, 300], ids=["batch", "mini300"])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("optimizer", [fastgd.SGD(lr=0.05), fastgd.Adam(lr=0.01),
                                       fastgd.BacktrackingLineSearch(alpha0=0.2)], ids=["sgd", "adam", "line-search"])
def test_a_workspace_for_training_only_takes_the_same_steps(backend, dtype, batch_size, sparse, optimizer):
    """``keep_outputs=False``: a compiled backend keeps the outputs of one block of rows, not of
    every row, and trains to the same bits."""
    X, y = make_problem("softmax", n=700, n_in=12, seed=11)
    net = fastgd.MLP([12, 9, 7, 3], backend=backend, dtype=dtype, random_state=0)
    kernels, (X, Y, _) = net.kernels, net.encode(X, y)
    X = CSR(scipy.sparse.csr_array(np.where(X > 0.5, X, 0)), kernels.dtype) if sparse else X
    config = step_config("cross_entropy", optimizer.rule, optimizer.hyper(), l2=1e-3)
    batches = -(-700 // batch_size)
    results = []
    for keep_outputs in (True, False):
        ws = kernels.workspace(batch_size, batch_size if batches > 1 else 0, sparse=sparse, keep_outputs=keep_outputs)
        if backend != "numpy":
            assert ws.lse.size == (batch_size if keep_outputs else 256)
        params, state = net.params.copy(), np.zeros((optimizer.n_slots, kernels.n_params), kernels.dtype)
        for step in range(0, 3 * batches, batches):
            loss, _, status = kernels.train_epoch(params, np.zeros_like(params), state, X, Y, np.arange(700),
                                                  batch_size, config, np.full(batches, 0.05), step, ws)
            assert status == 0 and np.isfinite(loss)
        results.append((params, loss))
    np.testing.assert_array_equal(results[1][0], results[0][0])
    assert results[1][1] == results[0][1]
