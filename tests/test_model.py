"""The model API: building, training modes, labels, dtypes, weights, callbacks."""

import copy as copy_module
import subprocess
import sys
import warnings

import numpy as np
import pytest
import scipy.sparse

import fastgd
from fastgd.schedules import ExponentialDecay
from conftest import BACKENDS, make_problem, misaligned


def small_fit(net, X, y, **kwargs):
    kwargs = {"epochs": 3, "batch_size": 8, "optimizer": fastgd.SGD(lr=0.1), **kwargs}
    return net.fit(X, y, **kwargs)


def test_layers_compile_to_the_same_network_as_sizes():
    by_sizes = fastgd.MLP([4, 6, 3], hidden="tanh", random_state=3)
    by_layers = fastgd.MLP([fastgd.Dense(4, 6), fastgd.Tanh(), fastgd.Dense(6, 3), fastgd.Softmax()], random_state=3)
    np.testing.assert_array_equal(by_sizes.layout, by_layers.layout)
    np.testing.assert_array_equal(by_sizes.params, by_layers.params)
    assert by_layers.activations == ["tanh", "softmax"] and by_layers.loss == "cross_entropy"


def test_he_normal_initialisation_draws_layer_by_layer():
    net = fastgd.MLP([3, 5, 2], random_state=7)
    rng = np.random.RandomState(7)
    W0 = rng.standard_normal((3, 5)) * np.sqrt(2 / 3)
    W1 = rng.standard_normal((5, 2)) * np.sqrt(2 / 5)
    for got, expected in zip(net.get_weights(), [W0, np.zeros(5), W1, np.zeros(2)]):
        np.testing.assert_array_equal(got, expected)


def test_weights_are_views_and_get_weights_copies():
    net = fastgd.MLP([3, 4, 2], random_state=0)
    net.weights[0][0, 0] = 5.0
    assert net.params[0] == 5.0
    copy = net.get_weights()
    copy[0][0, 0] = -1.0
    assert net.params[0] == 5.0


def test_set_weights_round_trip():
    a, b = fastgd.MLP([3, 4, 2], random_state=0), fastgd.MLP([3, 4, 2], random_state=1)
    b.set_weights(a.get_weights())
    np.testing.assert_array_equal(a.params, b.params)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch_size", [None, 1, 7, 64])
def test_every_mode_learns(backend, batch_size):
    X, y = make_problem("softmax", n=120, seed=2)
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)  # a learnable rule, 3 classes
    net = fastgd.MLP([5, 16, 3], backend=backend, random_state=0)
    epochs = 15 if batch_size in (1, 7) else 80
    history = small_fit(net, X, y, epochs=epochs, batch_size=batch_size).history
    assert len(history["loss"]) == epochs
    assert history["train_loss"][-1] < 0.6 * history["train_loss"][0]
    assert history["train_accuracy"][-1] > 0.85


def test_fit_continues_from_current_weights_and_generator():
    X, y = make_problem("softmax", n=50)
    once, twice = fastgd.MLP([5, 6, 3], random_state=4), fastgd.MLP([5, 6, 3], random_state=4)
    small_fit(once, X, y, epochs=5)
    small_fit(twice, X, y, epochs=2)
    twice.fit(X, y, epochs=3, batch_size=8)  # optimizer=None keeps SGD(lr=0.1)
    assert twice.optimizer.lr == 0.1
    np.testing.assert_array_equal(once.params, twice.params)



@pytest.mark.parametrize("backend", BACKENDS)
def test_fits_reuse_their_buffers_and_train_as_a_fresh_model_does(backend):
    X, y = make_problem("softmax", n=60, seed=3)
    net = fastgd.MLP([5, 7, 3], backend=backend, random_state=2)
    kernels, made = type(net.kernels), []
    original = kernels.workspace

    def counted(self, *args, **kwargs):
        made.append(args)
        return original(self, *args, **kwargs)

    for batch_size in (8, 8, None, 1, 8):
        fresh = copy_module.deepcopy(net)  # a copy starts without buffers
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(kernels, "workspace", counted)
            small_fit(net, X, y, epochs=2, batch_size=batch_size, validation_data=(X, y))
        small_fit(fresh, X, y, epochs=2, batch_size=batch_size, validation_data=(X, y))
        np.testing.assert_array_equal(net.params, fresh.params)
        np.testing.assert_array_equal(net.training.state, fresh.training.state)
    # A training workspace where the fit before took batches of another size; one for the metrics, once.
    assert made == [(8, 8), (60,), (60, 0), (1, 1), (8, 8)], made


def test_fresh_model_uses_sgd_001():
    assert isinstance(fastgd.MLP([2, 2]).optimizer, fastgd.SGD) and fastgd.MLP([2, 2]).optimizer.lr == 0.01


def test_history_keys_and_train_metrics_switch():
    X, y = make_problem("softmax", n=30)
    history = small_fit(fastgd.MLP([5, 4, 3]), X, y, validation_data=(X[:10], y[:10])).history
    assert set(history) == {"loss", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "epoch_time"}
    history = small_fit(fastgd.MLP([5, 4, 3]), X, y, train_metrics=False).history
    assert set(history) == {"loss", "epoch_time"}


def test_l2_term_is_part_of_every_reported_loss():
    X, y = make_problem("softmax", n=30)
    net = fastgd.MLP([5, 4, 3], backend="numpy", random_state=0)
    history = net.fit(X, y, epochs=1, l2=0.5, optimizer=fastgd.SGD(lr=1e-9), shuffle=False).history
    weights = net.get_weights()
    penalty = 0.25 * sum(np.sum(W**2) for W in weights[::2])
    net.training.l2 = 0.0
    data_loss, _ = net.evaluate(X, y)
    assert history["train_loss"][0] == pytest.approx(data_loss + penalty, rel=1e-12)
    assert history["loss"][0] == pytest.approx(data_loss + penalty, rel=1e-6)  # before the tiny step


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_end_to_end(backend, dtype, monkeypatch):
    X, y = make_problem("softmax", n=30)
    net = fastgd.MLP([5, 4, 3], backend=backend, dtype=dtype, random_state=0)
    seen = []
    train_epoch = net.kernels.backend.train_epoch

    def spy(layout, params, grads, state, X, Y, *rest):
        seen.extend(a.dtype for a in (params, grads, state, X, Y))
        return train_epoch(layout, params, grads, state, X, Y, *rest)

    monkeypatch.setattr(net.kernels.backend, "train_epoch", spy)
    small_fit(net, X, y)  # float64 input, converted once at the door
    assert set(seen) == {np.dtype(dtype)}
    assert net.params.dtype == dtype and net.predict_proba(X).dtype == dtype


@pytest.mark.parametrize("layout_of", ["fortran", "strided", "readonly"])
def test_any_memory_layout_gives_the_contiguous_result(layout_of):
    X, y = make_problem("softmax", n=40)
    if layout_of == "fortran":
        X_other = np.asfortranarray(X)
    elif layout_of == "strided":
        X_other = np.repeat(X, 2, axis=1)[:, ::2]
    else:
        X_other = X.copy()
        X_other.flags.writeable = False
    a, b = fastgd.MLP([5, 6, 3], random_state=1), fastgd.MLP([5, 6, 3], random_state=1)
    small_fit(a, X, y)
    small_fit(b, X_other, y)
    np.testing.assert_array_equal(a.params, b.params)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X_other))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("output", ["softmax", "identity"])
def test_misaligned_arrays_are_copied_and_give_the_aligned_result(backend, dtype, output):
    X, y = make_problem(output, n=40, dtype=dtype)
    Y = np.eye(3, dtype=dtype)[y] if output == "softmax" else y
    weights = np.linspace(0.5, 2.0, len(X))
    a, b = (fastgd.MLP([5, 6, 3], output=output, backend=backend, dtype=dtype, random_state=1) for _ in range(2))
    small_fit(a, X, Y, sample_weight=weights)
    small_fit(b, misaligned(X), misaligned(Y), sample_weight=misaligned(weights))
    np.testing.assert_array_equal(a.params, b.params)
    np.testing.assert_array_equal(a.predict(X), b.predict(misaligned(X)))
    assert a.evaluate(X, Y) == b.evaluate(misaligned(X), misaligned(Y))
    if output == "softmax":
        np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(misaligned(X)))
        assert a.evaluate(X, y) == b.evaluate(misaligned(X), misaligned(y))


def test_string_labels_and_one_hot_rows_train_like_integer_labels():
    X, y = make_problem("softmax", n=40)
    labels = np.array(["ant", "bee", "cat"])
    names = labels[y]
    one_hot = np.eye(3)[y]
    nets = [fastgd.MLP([5, 6, 3], random_state=1) for _ in range(3)]
    for net, target in zip(nets, (y, names, one_hot)):
        small_fit(net, X, target)
    np.testing.assert_array_equal(nets[0].params, nets[1].params)
    np.testing.assert_array_equal(nets[0].params, nets[2].params)
    assert list(nets[1].predict(X[:5])) == list(labels[nets[0].predict(X[:5])])
    assert nets[1].evaluate(X, names) == nets[0].evaluate(X, y)


def test_binary_sigmoid_classifier():
    X, _ = make_problem("softmax", n=60)
    y = np.where(X[:, 0] > 0, "yes", "no")
    net = fastgd.MLP([5, 8, 1], output="sigmoid", random_state=0)
    small_fit(net, X, y, epochs=30)
    proba = net.predict_proba(X)
    assert proba.shape == (60, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert list(net.classes_) == ["no", "yes"]
    assert set(net.predict(X)) <= {"no", "yes"}
    assert net.evaluate(X, y)[1] > 0.9


def test_multilabel_sigmoid_predicts_indicator_rows():
    X, y = make_problem("sigmoid", n=30)
    net = fastgd.MLP([5, 4, 3], output="sigmoid", random_state=0)
    small_fit(net, X, y)
    assert net.predict(X).shape == (30, 3) and set(np.unique(net.predict(X))) <= {0, 1}


def test_regression_with_mse():
    rng = np.random.RandomState(0)
    X = rng.standard_normal((80, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.3
    net = fastgd.MLP([3, 16, 1], hidden="tanh", output="identity", random_state=0)
    history = net.fit(X, y, epochs=200, batch_size=16, optimizer=fastgd.SGD(lr=0.02)).history
    assert "train_accuracy" not in history
    loss = net.evaluate(X, y)
    assert isinstance(loss, float) and loss < 0.02 * np.var(y)
    assert net.predict(X).shape == (80,)
    wide = fastgd.MLP([3, 4, 2], output="identity")
    wide.fit(X, np.column_stack([y, -y]), epochs=1)
    assert wide.predict(X).shape == (80, 2)


def test_sigmoid_with_mse_regresses_values_in_0_1():
    rng = np.random.RandomState(0)
    X = rng.uniform(-1, 1, (60, 2))
    y = 1 / (1 + np.exp(-(X @ np.array([1.5, -2.0]) + 0.3)))  # 60 distinct values in (0, 1)
    net = fastgd.MLP([2, 1], output="sigmoid", loss="mse", random_state=0)
    assert not net.is_classifier and net.task.kind == "values"
    history = net.fit(X, y, epochs=300, batch_size=10, optimizer=fastgd.SGD(lr=2.0)).history
    assert "train_accuracy" not in history and history["train_loss"][-1] < 1e-4
    assert net.predict(X).shape == (60,) and np.all((net.predict(X) > 0) & (net.predict(X) < 1))
    with pytest.raises(TypeError, match="predict_proba: only a classifier"):
        net.predict_proba(X)


def one_neuron_epoch(x, y, w, b, lr):
    """The course's table, written out: batch-of-one SGD on sigmoid(w x + b) with squared error."""
    for xi, yi in zip(x, y):
        a = 1 / (1 + np.exp(-(w * xi + b)))
        d = 2 * (a - yi) * a * (1 - a)  # d/dz (a - y)**2
        w, b = w - lr * d * xi, b - lr * d
    return w, b


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_sigmoid_neuron_by_squared_error_takes_the_hand_computed_steps(backend):
    x = np.array([0.5, 1.0, 1.5, 2.0, 2.5])
    y = np.array([0.1, 0.2, 0.3, 0.4, 0.5])  # values in [0, 1]: regression, not five classes
    net = fastgd.MLP([1, 1], output="sigmoid", loss="mse", backend=backend)
    net.set_weights([np.array([[2.0]]), np.array([1.0])])
    w, b = 2.0, 1.0
    for _ in range(3):
        net.fit(x[:, None], y, epochs=1, batch_size=1, shuffle=False, optimizer=fastgd.SGD(lr=0.9))
        w, b = one_neuron_epoch(x, y, w, b, 0.9)
        np.testing.assert_allclose(net.params, [w, b], rtol=1e-12)
    assert (w, b) != (2.0, 1.0)


def test_callback_can_stop_training():
    class StopAtThree(fastgd.Callback):
        def on_epoch_end(self, epoch, logs):
            if epoch == 2:
                self.model.stop_training = True

    X, y = make_problem("softmax", n=20)
    history = small_fit(fastgd.MLP([5, 3, 3]), X, y, epochs=10, callbacks=[StopAtThree()])
    assert history.epoch == [0, 1, 2]


def trained_state(net):
    training = net.training
    return (net.params.copy(), training.state.copy(), training.step, training.lr_scale, training.l2,
            training.optimizer, training.rng.get_state()[1].copy(), net.history_)


def assert_same_state(state, expected):
    assert all(np.array_equal(a, b) if isinstance(a, np.ndarray) else a is b or a == b
               for a, b in zip(state, expected, strict=True))


def test_a_fit_refused_for_its_schedule_changes_nothing():
    X, y = make_problem("softmax", n=20)
    net = fastgd.MLP([5, 3, 3], random_state=0)
    net.fit(X, y, epochs=3, batch_size=5, optimizer=fastgd.Adam(lr=0.01), l2=1e-3)
    before = trained_state(net)
    for lr in (lambda step: -0.1, lambda step: float("nan"), lambda step: [0.1, 0.2]):
        with pytest.raises(ValueError, match="the schedule must give one finite rate >= 0 per step"):
            net.fit(X, y, epochs=2, batch_size=5, optimizer=fastgd.Adam(lr=lr), l2=0.5)
        assert_same_state(trained_state(net), before)


def test_a_callback_cannot_train_the_model_its_fit_trains():
    X, y = make_problem("softmax", n=20)
    refused = []

    class Refit(fastgd.Callback):
        def on_epoch_end(self, epoch, logs):
            before = trained_state(self.model)
            for train in (lambda: self.model.fit(X, y, epochs=1, optimizer=fastgd.Adam(lr=0.1)),
                          lambda: fastgd.lr_find(self.model, X, y, steps=5),
                          lambda: self.model.training.reset(fastgd.SGD(lr=1.0))):
                with pytest.raises(RuntimeError, match="a callback cannot train the model too"):
                    train()
            assert_same_state(trained_state(self.model), before)
            copy = copy_module.deepcopy(self.model)  # a copy can be trained
            copy.fit(X, y, epochs=1)
            refused.append(epoch)

    net = fastgd.MLP([5, 3, 3], random_state=0)
    history = net.fit(X, y, epochs=3, optimizer=fastgd.SGD(lr=0.05), callbacks=[Refit()])
    assert refused == [0, 1, 2] and net.history_ is history and history.epoch == [0, 1, 2]
    assert isinstance(net.training.optimizer, fastgd.SGD) and net.training.step == 3
    net.fit(X, y, epochs=1)  # and the model itself, once its fit is over


def test_divergence_stops_and_keeps_the_last_finite_weights():
    class Snapshots(fastgd.Callback):
        def __init__(self):
            self.params = []

        def on_epoch_end(self, epoch, logs):
            self.params.append(self.model.params.copy())

    X, y = make_problem("identity", n=40)
    net = fastgd.MLP([5, 32, 3], output="identity", random_state=0)
    snapshots = Snapshots()
    snapshots.params.append(net.params.copy())
    with pytest.raises(fastgd.TrainingDiverged, match="diverged in epoch") as raised:
        net.fit(X * 10, y, epochs=50, batch_size=1, optimizer=fastgd.SGD(lr=ExponentialDecay(1e-4, 1.02)),
                callbacks=[snapshots])
    history = raised.value.history
    assert 0 < len(history.epoch) < 50 and history is net.history_
    assert np.all(np.isfinite(history.history["loss"]))
    np.testing.assert_array_equal(net.params, snapshots.params[-1])
    steps = net.training.step
    with pytest.warns(RuntimeWarning, match="diverged"):
        again = net.fit(X * 10, y, epochs=50, batch_size=1, on_divergence="warn")
    assert len(again.epoch) < 50 and net.training.step == steps + 40 * len(again.epoch)  # only finite epochs count


def test_backends_lists_what_this_machine_has_fastest_first():
    available = fastgd.backends()
    assert available == [name for name in fastgd.kernels.PREFERENCE if name in available]
    assert set(BACKENDS) <= set(available)  # every backend the run expects (it may test fewer than load)
    reasons = fastgd.backends(reasons=True)
    assert [name for name, reason in reasons.items() if reason is None] == available
    assert all(isinstance(reason, str) and reason for name, reason in reasons.items() if name not in available)
    if BACKENDS[0] == "cython":  # the fastest there is
        assert fastgd.MLP([2, 2], backend="auto").backend_ == "cython"


def test_predict_and_evaluate_handle_many_rows_in_chunks():
    rng = np.random.RandomState(0)
    X = rng.standard_normal((10_000, 4))
    y = rng.randint(0, 3, 10_000)
    net = fastgd.MLP([4, 5, 3], random_state=0)
    net.fit(X[:100], y[:100], epochs=1)
    reference = fastgd.MLP([4, 5, 3], backend="numpy")
    reference.set_weights(net.get_weights())
    reference.classes_ = net.classes_
    whole = reference.kernels.forward(reference.params, X, reference.kernels.workspace(len(X)))
    np.testing.assert_allclose(net.predict_proba(X), whole, rtol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, accuracy = net.evaluate(X, y)
    assert np.isfinite(loss) and 0 <= accuracy <= 1


def test_import_leaves_scikit_learn_until_the_estimators_are_used():
    code = ("import sys, fastgd; assert 'sklearn' not in sys.modules; from fastgd import *; "
            "assert MLPClassifier.__module__ == 'fastgd.estimators' and 'sklearn' in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("seed", ["0", 1.5, True, object()])
def test_a_random_state_that_is_not_one_is_named(seed):
    with pytest.raises(ValueError, match="^random_state: expected an int, a numpy.random.RandomState or None"):
        fastgd.MLP([3, 2], random_state=seed)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sparse_X_through_the_model_and_its_tools(backend):
    X, y = make_problem("softmax", n=60, n_in=20, seed=1)
    X[np.random.RandomState(1).rand(*X.shape) < 0.8] = 0
    S = scipy.sparse.csr_matrix(X)
    dense, sparse = (fastgd.MLP([20, 8, 3], backend=backend, random_state=0) for _ in range(2))
    dense.fit(X, y, epochs=3, batch_size=16, optimizer=fastgd.Adam(lr=0.01))
    sparse.fit(S, y, epochs=3, batch_size=16, optimizer=fastgd.Adam(lr=0.01))
    np.testing.assert_allclose(sparse.params, dense.params, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sparse.predict_proba(S.tocsc()), dense.predict_proba(X), rtol=1e-10)
    assert sparse.evaluate(S, y) == pytest.approx(dense.evaluate(X, y), rel=1e-10)
    errors = fastgd.check_gradients(sparse, S, y, max_rows=20)
    assert max(errors.values()) < 1e-6
    before = sparse.params.copy()
    assert np.isfinite(fastgd.lr_find(sparse, S, y, steps=20).suggestion)
    np.testing.assert_array_equal(sparse.params, before)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sparse_X_of_many_columns_is_never_densified(backend):
    """100,000 columns, batches of 200: a dense batch would be 160 MB, the dense data 320 MB. The fit
    allocates what its 1,000,000 weights need (8 MB per copy: gradients, the snapshot it can go back
    to, the reference's scratch; on two threads, the second's gradient) and 16-row input blocks for
    the small-batch loops (12.8 MB each, one per thread's workspace)."""
    import tracemalloc

    X = scipy.sparse.random(400, 100_000, density=1e-4, format="csr", random_state=0)
    y = np.arange(400) % 2
    net = fastgd.MLP([100_000, 10, 2], backend=backend, random_state=0)
    net.fit(X, y, epochs=1, batch_size=200, optimizer=fastgd.SGD(lr=0.1))  # compiled, and the optimizer state made
    tracemalloc.start()
    net.fit(X, y, epochs=1, batch_size=200, optimizer=fastgd.SGD(lr=0.1))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 150e6, peak
