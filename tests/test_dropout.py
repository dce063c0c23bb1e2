"""Inverted dropout: counter-based masks that every backend and every split across threads draw alike."""

import numpy as np
import pytest
import scipy.sparse

import fastgd
from fastgd._layout import weight_views
from fastgd.kernels import step_config
from fastgd.kernels._numpy import dropped
from fastgd.optimizers import OPTIMIZERS

from conftest import BACKENDS, TARGETS, make_problem
from test_agreement import TRAINING_RTOL, assert_close

OPTIMIZERS_TO_TRY = {
    "sgd": fastgd.SGD(lr=0.05),
    "nesterov": fastgd.SGD(lr=0.05, momentum=0.9, nesterov=True),
    "adam": fastgd.Adam(lr=0.01),
    "rmsprop": fastgd.RMSprop(lr=0.01, momentum=0.5, centered=True),
    "adagrad": fastgd.Adagrad(lr=0.05),
    # A full step is chaotic on one row per step: rounding grows past the tolerance, with or without dropout.
    "line-search": fastgd.BacktrackingLineSearch(alpha0=0.2),
}


def dropout_net(backend, dtype="float64", dropout=(0.3, 0.5), seed=5, hidden="tanh", sizes=(5, 9, 7, 3)):
    return fastgd.MLP(list(sizes), hidden=hidden, backend=backend, dtype=dtype, random_state=seed,
                      dropout=list(dropout))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_masks_drop_about_p_of_the_units_independently(p):
    masks = dropped(2**63 + 12345, 7, np.arange(200), 1, 1000, p)
    n = masks.size
    assert abs(masks.mean() - p) < 5 * np.sqrt(p * (1 - p) / n)
    # Neighbouring units, rows, steps, layers and seeds draw apart.
    for other in (dropped(2**63 + 12345, 8, np.arange(200), 1, 1000, p), dropped(2**63 + 12345, 7, np.arange(200), 2,
                                                                                  1000, p),
                  dropped(2**63 + 12346, 7, np.arange(200), 1, 1000, p), masks[:, 1:], masks[1:]):
        same = (masks[: other.shape[0], : other.shape[1]] == other).mean()
        assert abs(same - (p * p + (1 - p) * (1 - p))) < 0.01
    np.testing.assert_array_equal(dropped(2**63 + 12345, 7, np.arange(5, 9), 1, 1000, p), masks[5:9])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_step_drops_the_units_its_masks_name(backend, dtype):
    """A dropped hidden unit has no gradient into or out of it: one SGD step on one row (no L2)
    leaves its column of W0 and its row of W1 as they were, and only those."""
    p, width = 0.4, 500
    net = fastgd.MLP([6, width, 3], hidden="tanh", backend=backend, dtype=dtype, random_state=1, dropout=p)
    X, y = make_problem("softmax", n=1, n_in=6, seed=2)
    W0, _, W1, _ = (w.copy() for w in net.weights)
    net.fit(X, y, epochs=1, optimizer=fastgd.SGD(lr=0.1), train_metrics=False)
    expected = dropped(net.training.dropout_seed, 0, [0], 0, width, p)[0]
    assert abs(expected.mean() - p) < 0.1
    np.testing.assert_array_equal((net.weights[0] == W0).all(axis=0), expected)
    np.testing.assert_array_equal((net.weights[2] == W1).all(axis=1), expected)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch_size", [None, 1, 8, 32])
def test_rate_zero_is_no_dropout_bit_for_bit(backend, batch_size):
    X, y = make_problem("softmax", n=70, seed=3)
    nets = [fastgd.MLP([5, 9, 7, 3], backend=backend, random_state=5, **extra) for extra in ({}, {"dropout": 0.0})]
    for net in nets:
        net.fit(X, y, epochs=2, batch_size=batch_size, optimizer=fastgd.SGD(lr=0.05, momentum=0.5),
                train_metrics=False)
    np.testing.assert_array_equal(nets[1].params, nets[0].params)
    assert nets[1].training.rng.randint(2**31) == nets[0].training.rng.randint(2**31)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_same_seed_gives_the_same_weights(backend):
    X, y = make_problem("softmax", n=70, seed=3)
    nets = [dropout_net(backend) for _ in range(2)] + [dropout_net(backend, seed=6)]
    for net in nets:
        net.fit(X, y, epochs=2, batch_size=8, optimizer=fastgd.SGD(lr=0.05), train_metrics=False)
    np.testing.assert_array_equal(nets[1].params, nets[0].params)
    assert nets[2].training.dropout_seed != nets[0].training.dropout_seed


# Every optimizer in float64; float32 with plain SGD and Adam.
DTYPE_OPTIMIZERS = [("float64", name) for name in OPTIMIZERS_TO_TRY] + [("float32", "sgd"), ("float32", "adam")]


@pytest.mark.parametrize("backend", TARGETS, indirect=True)
@pytest.mark.parametrize("dtype, optimizer", DTYPE_OPTIMIZERS)
@pytest.mark.parametrize("batch_size", [None, 1, 8, 32], ids=["batch", "stochastic", "mini8", "mini32"])
def test_every_backend_drops_as_the_reference(backend, dtype, batch_size, optimizer):
    X, y = make_problem("softmax", n=70, seed=3)
    nets = [dropout_net(name, dtype) for name in ("numpy", backend)]
    for net in nets:
        net.fit(X, y, epochs=2, batch_size=batch_size, optimizer=OPTIMIZERS_TO_TRY[optimizer], l2=1e-3,
                clip_norm=2.0, train_metrics=False)
    assert_close(nets[1].params, nets[0].params, TRAINING_RTOL[dtype])


@pytest.mark.parametrize("backend", TARGETS, indirect=True)
@pytest.mark.parametrize("batch_size", [None, 1, 8, 32], ids=["batch", "stochastic", "mini8", "mini32"])
@pytest.mark.parametrize("rows", ["sparse", "weighted"])
def test_sparse_and_weighted_rows_drop_as_the_reference(backend, batch_size, rows):
    X, y = make_problem("softmax", n=70, seed=3)
    weights = np.random.RandomState(1).uniform(0.2, 2.0, 70) if rows == "weighted" else None
    X = scipy.sparse.csr_array(np.where(np.abs(X) < 0.7, 0, X)) if rows == "sparse" else X
    nets = [dropout_net(name, hidden="relu") for name in ("numpy", backend)]
    for net in nets:
        net.fit(X, y, epochs=2, batch_size=batch_size, optimizer=fastgd.SGD(lr=0.05), sample_weight=weights,
                train_metrics=False)
    assert_close(nets[1].params, nets[0].params, TRAINING_RTOL["float64"])


# Every backend splits an epoch of one batch; those that split epochs of several batches too.
SPLITS = [(name, None) for name in BACKENDS] + [
    (name, 64) for name in BACKENDS if fastgd.MLP([2, 2], backend=name).kernels.splits_batches]


@pytest.mark.parametrize("backend, batch_size", SPLITS)
def test_any_split_of_the_rows_across_threads_drops_alike(backend, batch_size):
    """EpochRunner of 600 rows (one batch, or batches of 64) on 1, 2 and 3 threads."""
    net = dropout_net(backend, sizes=(6, 9, 7, 3))
    X, y = make_problem("softmax", n=600, n_in=6, seed=1)
    X, Y, _ = net.encode(X, y)
    results = []
    for threads in (1, 2, 3):
        config = step_config("cross_entropy", "sgd", dict.fromkeys(OPTIMIZERS["sgd"].hyper, 0.0), l2=1e-3,
                             dropout_seed=net.training.dropout_seed)
        params, grads, state = net.params.copy(), np.zeros_like(net.params), np.zeros((0, len(net.params)))
        size = batch_size or 600
        batches = -(-600 // size)
        ws = net.kernels.workspace(size, size if batches > 1 else 0)
        run = net.kernels.epoch_runner(params, grads, state, X, Y, np.arange(600), size, config, ws, None,
                                 np.random.RandomState(4), threads)
        for epoch in range(2):
            assert run(np.full(batches, 0.05), epoch * batches)[1:] == (batches, 0)
        results.append(params)
    for params in results[1:]:
        assert_close(params, results[0], 1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_predictions_evaluate_and_metrics_use_every_unit(backend):
    X, y = make_problem("softmax", n=70, seed=3)
    net = dropout_net(backend, dropout=(0.5, 0.5))
    history = net.fit(X, y, epochs=2, batch_size=8, validation_data=(X, y)).history
    plain = fastgd.MLP([5, 9, 7, 3], hidden="tanh", backend=backend)
    plain.set_weights(net.get_weights())
    plain.classes_ = net.classes_
    np.testing.assert_array_equal(net.predict_proba(X), plain.predict_proba(X))
    np.testing.assert_array_equal(net.predict_proba(X), net.predict_proba(X))
    assert net.evaluate(X, y) == plain.evaluate(X, y)
    assert history["val_loss"][-1] == pytest.approx(plain.evaluate(X, y)[0], rel=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_saved_model_resumes_with_the_same_masks(backend, tmp_path):
    X, y = make_problem("softmax", n=70, seed=3)
    straight, halted = dropout_net(backend), dropout_net(backend)
    straight.fit(X, y, epochs=4, batch_size=8, optimizer=fastgd.Adam(lr=0.01), train_metrics=False)
    halted.fit(X, y, epochs=2, batch_size=8, optimizer=fastgd.Adam(lr=0.01), train_metrics=False)
    halted.save(tmp_path / "model.npz")
    resumed = fastgd.load(tmp_path / "model.npz")
    assert resumed.dropout == [0.3, 0.5] and resumed.training.dropout_seed == straight.training.dropout_seed
    resumed.fit(X, y, epochs=2, batch_size=8, train_metrics=False)
    np.testing.assert_array_equal(resumed.params, straight.params)


def test_one_step_is_the_gradient_of_the_loss_under_its_masks():
    """One full-batch SGD step with dropout, against the complex-step derivative of the loss of the
    network whose hidden units are dropped by the masks ``dropped`` names (float64)."""
    X, y = make_problem("softmax", n=20, seed=4)
    net = dropout_net("numpy", dropout=(0.3, 0.5))
    rates, lr, l2 = (0.3, 0.5), 0.1, 0.01
    keep = [np.where(dropped(net.training.dropout_seed, 0, np.arange(20), l, n, p), 0.0, 1 / (1 - p))
            for l, (n, p) in enumerate(zip((9, 7), rates))]
    Y = np.eye(3)[y]

    def loss(params):
        views = weight_views(net.kernels.layout, params)
        a = X.astype(params.dtype)
        for l in range(3):
            z = a @ views[2 * l] + views[2 * l + 1]
            a = np.tanh(z) * keep[l] if l < 2 else z
        lse = np.log(np.exp(a).sum(axis=1))
        return (lse - (Y * a).sum(axis=1)).mean() + l2 / 2 * sum((W * W).sum() for W in views[::2])

    params = net.params.copy()
    gradient = np.array([loss(params + 1e-30j * np.eye(len(params))[i]).imag / 1e-30 for i in range(len(params))])
    net.fit(X, y, epochs=1, optimizer=fastgd.SGD(lr=lr), l2=l2, train_metrics=False)
    assert_close(net.params, params - lr * gradient, 1e-12)


@pytest.mark.parametrize("make, message", [
    (lambda: fastgd.MLP([3, 4, 2], dropout=1.0), r"dropout: expected a dropout rate in \[0, 1\), got 1.0"),
    (lambda: fastgd.MLP([3, 4, 4, 2], dropout=[0.1]), r"dropout: expected one rate per hidden layer \(2\), got 1"),
    (lambda: fastgd.Dropout(-0.1), r"p: expected a dropout rate in \[0, 1\), got -0.1"),
    (lambda: fastgd.MLP([fastgd.Dense(3, 2), fastgd.Softmax(), fastgd.Dropout(0.2)]),
     "a Dropout layer may follow a hidden layer, not the output layer"),
    (lambda: fastgd.MLP([fastgd.Dense(3, 4), fastgd.Dropout(0.2), fastgd.Dropout(0.2), fastgd.Dense(4, 2)]),
     "must follow a Dense layer or its activation"),
    (lambda: fastgd.MLP([fastgd.Dense(3, 4), fastgd.Dense(4, 2)], dropout=0.5), "place Dropout layers"),
])
def test_bad_rates_are_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_layers_and_estimators_take_dropout():
    net = fastgd.MLP([fastgd.Dense(4, 6), fastgd.ReLU(), fastgd.Dropout(0.2), fastgd.Dense(6, 5), fastgd.Dropout(),
                      fastgd.Dense(5, 3), fastgd.Softmax()], random_state=0)
    assert net.dropout == [0.2, 0.5] and net.activations == ["relu", "identity", "softmax"]
    X, y = make_problem("softmax", n=60, n_in=4, seed=1)
    classifier = fastgd.MLPClassifier((6, 5), dropout=[0.2, 0.1], max_iter=5, random_state=0).fit(X, y)
    assert classifier.model_.dropout == [0.2, 0.1]
    again = fastgd.MLPClassifier((6, 5), dropout=[0.2, 0.1], max_iter=5, random_state=0).fit(X, y)
    np.testing.assert_array_equal(again.model_.params, classifier.model_.params)
    other = fastgd.MLPClassifier((6, 5), dropout=[0.2, 0.1], max_iter=5, random_state=1).fit(X, y)
    assert other.model_.training.dropout_seed != classifier.model_.training.dropout_seed
    regressor = fastgd.MLPRegressor(hidden_layer_sizes=(6,), dropout=0.3, max_iter=5, random_state=0)
    regressor.fit(X, y.astype(float))
    assert regressor.model_.dropout == [0.3]
