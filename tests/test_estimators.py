"""scikit-learn estimators: the estimator contract, scikit-learn's own meaning of each parameter,
and life inside scikit-learn (clone, pickle, Pipeline, GridSearchCV, partial_fit)."""

import ast
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import sklearn.neural_network as sk
from sklearn.base import clone
from sklearn.datasets import make_classification, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from conftest import BACKENDS
import fastgd
from fastgd import MLPClassifier, MLPRegressor

ESTIMATORS = [Estimator(backend=backend) for backend in BACKENDS for Estimator in (MLPClassifier, MLPRegressor)]


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


def copy_weights(ours, theirs):
    """Give our fitted estimator's network the weights of scikit-learn's."""
    weights = [a for pair in zip(theirs.coefs_, theirs.intercepts_) for a in pair]
    ours.model_.set_weights(weights)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("task", ["regression", "multi-output regression", "binary", "multi-class", "multi-label"])
def test_sgd_steps_are_scikit_learns(backend, task):
    """Same start, same full-batch steps: the same weights (alpha's batch scaling, the halved
    squared error and the summed multi-label log-loss converted in the wrapper)."""
    rng = np.random.RandomState(0)
    X = rng.standard_normal((60, 4))
    if task.endswith("regression"):
        y = X @ rng.standard_normal((4, 2 if task.startswith("multi") else 1))
        y = y.ravel() if y.shape[1] == 1 else y
        Ours, Theirs = MLPRegressor, sk.MLPRegressor
    else:
        Ours, Theirs = MLPClassifier, sk.MLPClassifier
        if task == "multi-label":
            y = (X[:, :3] + 0.3 * rng.standard_normal((60, 3)) > 0).astype(int)
        else:
            y = rng.randint(0, 2 if task == "binary" else 4, 60)
    params = dict(hidden_layer_sizes=(7, 5), activation="tanh", solver="sgd", learning_rate_init=0.05, momentum=0.0,
                  alpha=0.01, batch_size=60, shuffle=False, random_state=0)
    theirs, ours = Theirs(**params), Ours(**params, backend=backend)
    first = {} if task.endswith("regression") else {"classes": np.arange(y.shape[1]) if y.ndim == 2 else np.unique(y)}
    theirs.partial_fit(X, y, **first)
    ours.partial_fit(X, y, **first)
    copy_weights(ours, theirs)
    for _ in range(20):
        theirs.partial_fit(X, y)
        ours.partial_fit(X, y)
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    if task != "multi-output regression":  # where scikit-learn's reported L2 term has another factor
        np.testing.assert_allclose(ours.loss_curve_[1:], theirs.loss_curve_[1:], rtol=1e-10)
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["MLPClassifier", "MLPRegressor"])
def test_parameters_and_defaults_are_scikit_learns(name):
    ours, theirs = getattr(fastgd, name)().get_params(), getattr(sk, name)().get_params()
    added = {"dropout": 0.0, "backend": "auto", "dtype": None}
    added |= {"class_weight": None} if name == "MLPClassifier" else {}
    assert set(ours) == set(theirs) | set(added)
    assert {k: ours[k] for k in theirs} == theirs and {k: ours[k] for k in added} == added


def test_an_unknown_regression_loss_is_named():
    with pytest.raises(ValueError, match="^loss: expected one of"):
        MLPRegressor(loss="huber").fit(np.eye(3), [0.0, 1.0, 2.0])


def test_results_are_comparable_to_scikit_learns():
    X, y = make_classification(600, 10, n_informative=6, n_classes=3, random_state=0)
    scores = [Estimator(random_state=0).fit(X[:400], y[:400]).score(X[400:], y[400:])
              for Estimator in (MLPClassifier, sk.MLPClassifier)]
    assert abs(scores[0] - scores[1]) < 0.05, scores


@pytest.mark.parametrize("backend", BACKENDS)
def test_clone_pickle_pipeline_and_grid_search(backend):
    X, y = make_classification(200, 6, random_state=1)
    estimator = MLPClassifier(hidden_layer_sizes=(16,), learning_rate_init=0.01, max_iter=100, random_state=0,
                              backend=backend)
    pipeline = make_pipeline(StandardScaler(), clone(estimator)).fit(X, y)
    restored = pickle.loads(pickle.dumps(pipeline))
    np.testing.assert_array_equal(restored.predict_proba(X), pipeline.predict_proba(X))
    assert isinstance(pipeline[-1].model_.__getstate__()["_kernels"], str)  # a backend's name, not its module
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search = GridSearchCV(make_pipeline(StandardScaler(), estimator), {"mlpclassifier__alpha": [1e-4, 1e-1]},
                              cv=3, n_jobs=2).fit(X, y)
    assert search.best_score_ > 0.8
    assert search.best_estimator_[-1].model_.backend_ == backend


@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_partial_fit_streams_chunks(Estimator):
    if Estimator is MLPClassifier:
        X, y = make_classification(1000, 8, n_classes=3, n_informative=5, random_state=0)
    else:
        X, y = make_regression(1000, 8, noise=1.0, random_state=0)
        y = y / y.std()
    estimator = Estimator(hidden_layer_sizes=(32,), learning_rate_init=0.01, random_state=0)
    first = True
    for _ in range(10):
        for chunk in np.array_split(np.arange(800), 8):
            kwargs = {"classes": np.unique(y)} if first and Estimator is MLPClassifier else {}
            estimator.partial_fit(X[chunk], y[chunk], **kwargs)
            first = False
    # scikit-learn's counts: n_iter_ per call, t_ and loss_curve_ over all of them
    assert estimator.n_iter_ == 1 and len(estimator.loss_curve_) == 80 and estimator.t_ == 8000
    assert estimator.score(X[800:], y[800:]) > 0.7  # chance: 1/3 (classes), 0 (R²)


def test_partial_fit_needs_the_classes_first_and_keeps_them():
    with pytest.raises(ValueError, match="^classes must be passed on the first call"):
        MLPClassifier().partial_fit(np.zeros((4, 2)), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="`y` has classes not in `self.classes_`"):
        MLPClassifier().partial_fit(np.zeros((4, 2)), [0, 5, 0, 1], classes=[0, 1])
    clf = MLPClassifier().partial_fit(np.zeros((4, 2)), [0, 1, 0, 1], classes=[0, 1, 2])
    with pytest.raises(ValueError, match="`y` has classes not in `self.classes_`"):
        clf.partial_fit(np.zeros((2, 2)), [3, 0])
    with pytest.raises(ValueError, match=r"`classes=\[1, 2\]` is not the same as on last call"):
        clf.partial_fit(np.zeros((2, 2)), [1, 2], classes=[1, 2])
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping=True"):
        MLPClassifier(early_stopping=True).partial_fit(np.zeros((4, 2)), [0, 1, 0, 1], classes=[0, 1])
    assert not hasattr(MLPClassifier(solver="lbfgs"), "partial_fit")


def test_a_warm_start_needs_the_same_classes():
    X, y = make_classification(60, 5, n_classes=3, n_informative=3, random_state=0)
    clf = MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, warm_start=True).fit(X, y)
    with pytest.raises(ValueError, match=r"warm_start can only be used where `y` has the same classes"):
        clf.fit(X[y < 2], y[y < 2])


def test_a_validation_split_too_small_is_refused_before_training():
    est = MLPRegressor(early_stopping=True)
    with pytest.raises(ValueError, match="The validation set is too small"):
        est.fit(np.zeros((10, 2)), np.arange(10.0))
    assert not hasattr(est, "model_")


def test_early_stopping_keeps_the_best_validation_weights():
    X, y = make_classification(400, 10, random_state=0)
    clf = MLPClassifier(hidden_layer_sizes=(64,), early_stopping=True, n_iter_no_change=5, max_iter=500,
                        random_state=0).fit(X, y)
    assert clf.n_iter_ < 500 and len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_)


@pytest.mark.parametrize("params, name", [
    (dict(hidden_layer_sizes=(0,)), "hidden_layer_sizes"), (dict(activation="swish"), "activation"),
    (dict(solver="newton"), "solver"), (dict(alpha=-1.0), "alpha"), (dict(batch_size=0), "batch_size"),
    (dict(learning_rate="cyclic"), "learning_rate"), (dict(learning_rate_init=0.0), "learning_rate_init"),
    (dict(max_iter=0), "max_iter"), (dict(momentum=1.5), "momentum"), (dict(beta_1=1.0), "beta_1"),
    (dict(validation_fraction=1.0), "validation_fraction"), (dict(n_iter_no_change=0), "n_iter_no_change"),
    (dict(dtype="int8"), "dtype"), (dict(max_fun=0), "max_fun"), (dict(backend="gpu"), "backend"),
])
def test_bad_parameters_are_named_at_fit(params, name):
    with pytest.raises(ValueError, match=f"^{name}:"):
        MLPClassifier(**params).fit(np.eye(3), [0, 1, 0])


def test_any_fastgd_optimizer_as_solver():
    X, y = make_classification(300, 6, random_state=0)
    solver = fastgd.RMSprop(lr=0.01, momentum=0.5)
    clf = MLPClassifier(hidden_layer_sizes=(16,), solver=solver, max_iter=60, random_state=0).fit(X, y)
    assert clf.score(X, y) > 0.85
    assert clf.model_.optimizer == solver == fastgd.RMSprop(lr=0.01, momentum=0.5)  # immutable: shared, unchanged
    assert clone(clf).get_params()["solver"] is not None


# ---------------------------------------------------------------- scikit-learn's public API only
def test_fastgd_imports_nothing_private_from_scikit_learn():
    """scikit-learn changes its private helpers without notice, and pyproject.toml bounds it only from below."""
    private = []
    for path in Path(fastgd.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "sklearn":
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names if alias.name.split(".")[0] == "sklearn"]
            else:
                continue
            private += [f"{path.name}: {name}" for name in names if any(p.startswith("_") for p in name.split("."))]
    assert not private


@pytest.mark.parametrize("weights", [np.ones(59), np.ones((60, 1)), np.zeros(60), 0, np.full(60, np.nan),
                                     ["a"] * 60, np.ones(60) + 1j, 2, [1.0] * 60, np.arange(60, dtype=np.float32)],
                         ids=["short", "2-D", "zeros", "zero", "nan", "strings", "complex", "number", "list",
                              "float32"])
@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_sample_weights_are_checked_as_scikit_learn_checks_them(weights, solver):
    X, y = make_classification(60, 4, random_state=0)
    outcomes = []
    for Estimator in (sk.MLPClassifier, MLPClassifier):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                est = Estimator(hidden_layer_sizes=(4,), solver=solver, max_iter=2, random_state=0)
                est.fit(X, y, sample_weight=weights)
                outcome = est.coefs_
            except (TypeError, ValueError) as error:
                outcome = (type(error), str(error))
        outcomes.append((outcome, [(w.category, str(w.message)) for w in caught]))
    (theirs, their_warnings), (mine, my_warnings) = outcomes
    if isinstance(theirs, tuple):
        assert mine == theirs
    else:
        for got, expected in zip(mine, theirs, strict=True):
            np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-8)
    assert my_warnings == their_warnings  # lbfgs: scikit-learn's ConvergenceWarning, word for word


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("solver", ["sgd", "adam", "lbfgs"])
def test_the_model_reports_the_loss_it_was_trained_on(backend, solver, tmp_path):
    # scikit-learn's objective on n rows: the mean log-loss plus alpha / (2 n) * sum(W**2), also from a saved file.
    from sklearn.metrics import log_loss

    X, y = make_classification(120, 6, n_informative=4, n_classes=3, random_state=0)
    est = MLPClassifier((7,), alpha=0.5, solver=solver, max_iter=30, backend=backend, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
    penalty = 0.5 * 0.5 * sum((W**2).sum() for W in est.coefs_)
    expected = log_loss(y, est.predict_proba(X)) + penalty / len(X)
    assert est.model_.evaluate(X, y)[0] == pytest.approx(expected, rel=1e-10)
    weights = np.random.RandomState(0).uniform(0.5, 2.0, len(X))
    weighted = log_loss(y, est.predict_proba(X), sample_weight=weights) + penalty / weights.sum()
    assert est.model_.evaluate(X, y, sample_weight=weights)[0] == pytest.approx(weighted, rel=1e-10)
    est.model_.save(tmp_path / "model.npz")
    assert fastgd.load(tmp_path / "model.npz").evaluate(X, y)[0] == pytest.approx(expected, rel=1e-10)
