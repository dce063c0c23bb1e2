"""fastgd's estimators take scikit-learn's steps: same data, same random_state, float64, and
their weights, loss curves and iteration counts agree with scikit-learn's to 1e-10 (lbfgs: 1e-6)."""

import warnings

import numpy as np
import pytest
import scipy.sparse
import sklearn.neural_network as sk
from sklearn.datasets import load_digits, make_multilabel_classification, make_regression
from sklearn.exceptions import ConvergenceWarning

import fastgd
from conftest import BACKENDS

X_DIGITS, Y_DIGITS = load_digits(n_class=3, return_X_y=True)
X_DIGITS, Y_DIGITS = X_DIGITS[:200] / 16, Y_DIGITS[:200]
X_REG, Y_REG = make_regression(200, 10, noise=10.0, random_state=7)
Y_REG = Y_REG / Y_REG.std()
Y_COUNTS = np.random.RandomState(5).poisson(np.exp(np.column_stack([Y_REG, -Y_REG]) / 2))  # two outputs

SOLVERS = [("adam", {})] + [
    ("sgd", dict(learning_rate=schedule, momentum=momentum, nesterovs_momentum=nesterov))
    for schedule in ("constant", "invscaling", "adaptive")
    for momentum, nesterov in ((0.0, False), (0.9, False), (0.9, True))]
SOLVER_IDS = ["adam"] + [f"sgd-{kw['learning_rate']}-momentum{kw['momentum']}"
                         + ("-nesterov" * kw["nesterovs_momentum"]) for _, kw in SOLVERS[1:]]
MODES = ("fit", "early_stopping", "warm_start", "partial_fit")
X_LABELS, Y_LABELS = make_multilabel_classification(n_samples=50, random_state=0, return_indicator=True)
LBFGS_PROBLEMS = {  # estimator, X, y, parameters
    "multiclass": ("MLPClassifier", X_DIGITS, Y_DIGITS, {}),
    "binary": ("MLPClassifier", X_DIGITS, (Y_DIGITS == 1).astype(int), dict(activation="tanh")),
    "multilabel": ("MLPClassifier", X_LABELS, Y_LABELS, dict(activation="logistic")),
    "regression": ("MLPRegressor", X_REG, Y_REG, dict(alpha=1e-3)),
    "multi-output": ("MLPRegressor", X_REG, np.column_stack([Y_REG, Y_REG**2 / 4]), dict(activation="tanh")),
    "poisson": ("MLPRegressor", X_REG, Y_COUNTS, dict(loss="poisson")),
}


def train(Estimator, backend, mode, X, y, sample_weight=None, **params):
    """The estimator after the fits of ``mode``; ``backend=None`` is scikit-learn's own."""
    if backend is not None:
        Estimator, params = getattr(fastgd, Estimator.__name__), {**params, "backend": backend}
    est = Estimator(early_stopping=mode == "early_stopping", warm_start=mode == "warm_start", **params)
    extra = {"classes": np.unique(y)} if Estimator.__name__ == "MLPClassifier" else {}
    extra["sample_weight"] = sample_weight
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", "Got `batch_size`", UserWarning)  # 200 rows, 180 after the split
        if mode == "partial_fit":
            for _ in range(12):
                est.partial_fit(X, y, **extra)
        else:
            est.fit(X, y, sample_weight=sample_weight)
            if mode == "warm_start":
                est.set_params(max_iter=8).fit(X, y, sample_weight=sample_weight)
    return est


def assert_same_steps(mine, theirs):
    for got, expected in zip(mine.coefs_ + mine.intercepts_, theirs.coefs_ + theirs.intercepts_, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10 * np.abs(expected).max())
    np.testing.assert_allclose(mine.loss_curve_, theirs.loss_curve_, rtol=1e-10)
    assert (mine.n_iter_, mine.t_) == (theirs.n_iter_, theirs.t_)
    assert mine.best_loss_ == pytest.approx(theirs.best_loss_, rel=1e-10) if theirs.best_loss_ is not None \
        else mine.best_loss_ is None
    if theirs.validation_scores_ is not None:
        np.testing.assert_allclose(mine.validation_scores_, theirs.validation_scores_, rtol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch_size", [200, 32], ids=["full", "batch32"])
@pytest.mark.parametrize("solver, kwargs", SOLVERS, ids=SOLVER_IDS)
def test_the_classifier_takes_scikit_learns_steps(solver, kwargs, batch_size, mode, backend):
    params = dict(hidden_layer_sizes=(8,), solver=solver, batch_size=batch_size, max_iter=15, random_state=0,
                  learning_rate_init=0.05, tol=1e-3, n_iter_no_change=3, **kwargs)
    theirs = train(sk.MLPClassifier, None, mode, X_DIGITS, Y_DIGITS, **params)
    assert_same_steps(train(sk.MLPClassifier, backend, mode, X_DIGITS, Y_DIGITS, **params), theirs)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("solver, kwargs", SOLVERS[:3], ids=SOLVER_IDS[:3])
@pytest.mark.parametrize("loss", ["squared_error", "poisson"])
def test_the_regressor_takes_scikit_learns_steps(loss, solver, kwargs, mode, backend):
    params = dict(loss=loss, hidden_layer_sizes=(8, 4), activation="tanh", solver=solver, batch_size=32,
                  max_iter=15, learning_rate_init=0.01, alpha=1e-3, random_state=np.random.RandomState(3), **kwargs)
    y = Y_REG if loss == "squared_error" else Y_COUNTS
    theirs = train(sk.MLPRegressor, None, mode, X_REG, y, **params)
    params["random_state"] = np.random.RandomState(3)
    assert_same_steps(train(sk.MLPRegressor, backend, mode, X_REG, y, **params), theirs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_binary_classifier_splits_its_validation_rows_as_scikit_learn(backend):
    y = (Y_DIGITS == 1).astype(int)
    params = dict(hidden_layer_sizes=(6,), max_iter=10, random_state=1, early_stopping=True, validation_fraction=0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        theirs = sk.MLPClassifier(**params).fit(X_DIGITS, y)
        mine = fastgd.MLPClassifier(backend=backend, **params).fit(X_DIGITS, y)
    assert_same_steps(mine, theirs)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ("fit", "warm_start", "early_stopping"))
@pytest.mark.parametrize("problem", LBFGS_PROBLEMS)
def test_lbfgs_takes_scikit_learns_steps(problem, mode, backend):
    """30 L-BFGS-B iterations (or fewer, to convergence): rounding differences between two correct
    gradients grow with every iteration of a quasi-Newton method, to ~1e-10 after 30 here and ~1e-7
    after 40, so the runs are kept short enough for a 1e-6 comparison to mean something."""
    name, X, y, extra = LBFGS_PROBLEMS[problem]
    params = dict(hidden_layer_sizes=(8, 4), solver="lbfgs", max_iter=30, random_state=0, **extra)
    estimators = []
    for Estimator in (getattr(sk, name), getattr(fastgd, name)):
        kwargs = {} if Estimator.__module__.startswith("sklearn") else dict(backend=backend)
        est = Estimator(warm_start=mode == "warm_start", early_stopping=mode == "early_stopping", **params, **kwargs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(X, y)
            if mode == "warm_start":
                est.set_params(max_iter=5).fit(X, y)
        estimators.append(est)
    theirs, mine = estimators
    for got, expected in zip(mine.coefs_ + mine.intercepts_, theirs.coefs_ + theirs.intercepts_, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())
    assert mine.n_iter_ == theirs.n_iter_ and mine.t_ == theirs.t_ == 0
    assert mine.loss_ == pytest.approx(theirs.loss_, rel=1e-6)
    assert not hasattr(mine, "loss_curve_") and not hasattr(theirs, "loss_curve_")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("solver, mode", [(solver, mode) for solver in ("adam", "sgd", "lbfgs") for mode in MODES
                                          if (solver, mode) != ("lbfgs", "partial_fit")])  # lbfgs has none
@pytest.mark.parametrize("name", ["MLPClassifier", "MLPRegressor"])
def test_sample_weights_take_scikit_learns_steps(name, solver, mode, backend):
    X, y = (X_DIGITS, Y_DIGITS) if name == "MLPClassifier" else (X_REG, Y_REG)
    weights = np.random.RandomState(1).uniform(0, 3, len(X))
    params = dict(hidden_layer_sizes=(8,), solver=solver, batch_size=32, max_iter=15, random_state=0,
                  learning_rate_init=0.01, alpha=1e-3)
    theirs = train(getattr(sk, name), None, mode, X, y, weights, **params)
    mine = train(getattr(sk, name), backend, mode, X, y, weights, **params)
    if solver == "lbfgs":
        for got, expected in zip(mine.coefs_ + mine.intercepts_, theirs.coefs_ + theirs.intercepts_, strict=True):
            np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())
        assert mine.n_iter_ == theirs.n_iter_ and mine.loss_ == pytest.approx(theirs.loss_, rel=1e-6)
    else:
        assert_same_steps(mine, theirs)
    unweighted = train(getattr(sk, name), backend, mode, X, y, **params)
    assert not np.allclose(unweighted.coefs_[0], mine.coefs_[0], rtol=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
@pytest.mark.parametrize("container", [scipy.sparse.csr_matrix, scipy.sparse.csc_array], ids=["csr", "csc"])
@pytest.mark.parametrize("name", ["MLPClassifier", "MLPRegressor"])
def test_sparse_X_takes_scikit_learns_steps(name, container, solver, backend):
    """Sparse X, read as sparse rows by the kernels (never densified), as scikit-learn reads it."""
    X, y = (X_DIGITS, Y_DIGITS) if name == "MLPClassifier" else (X_REG * (np.abs(X_REG) > 1), Y_REG)
    params = dict(hidden_layer_sizes=(8,), solver=solver, batch_size=32, max_iter=15, random_state=0,
                  learning_rate_init=0.01, alpha=1e-3)
    mode = "fit" if solver == "lbfgs" else "early_stopping"  # the split of sparse rows too
    theirs = train(getattr(sk, name), None, mode, container(X), y, **params)
    mine = train(getattr(sk, name), backend, mode, container(X), y, **params)
    rtol = 1e-6 if solver == "lbfgs" else 1e-10
    for got, expected in zip(mine.coefs_ + mine.intercepts_, theirs.coefs_ + theirs.intercepts_, strict=True):
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * np.abs(expected).max())
    np.testing.assert_allclose(mine.predict(container(X)), theirs.predict(container(X)), rtol=rtol, atol=rtol)
