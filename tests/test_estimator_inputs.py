"""Bad and unusual inputs at the estimators' surface: a clear error or a correct answer, case by case."""

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.exceptions import NotFittedError
from sklearn.neural_network import MLPClassifier as SkMLPClassifier

import fastgd
from conftest import BACKENDS, misaligned
from fastgd import MLPClassifier, MLPRegressor

RNG = np.random.RandomState(0)
X = RNG.standard_normal((60, 4))
Y_LABELS = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)


def fitted(**params):
    return MLPClassifier(hidden_layer_sizes=(8,), max_iter=20, random_state=0, **params).fit(X, Y_LABELS)


@pytest.mark.parametrize("bad_X, error, match", [
    (X[:, 0], ValueError, "Expected 2D array"),
    (X[:0], ValueError, "0 sample"),
    (np.where(X > 1.5, np.nan, X), ValueError, "NaN"),
    (np.where(X > 1.5, np.inf, X), ValueError, "infinity"),
    (X + 1j, ValueError, "Complex data not supported"),
    (np.array([["a", "b", "c", "d"]] * 60, dtype=object), ValueError, "could not convert"),
])
def test_bad_X_at_fit(bad_X, error, match):
    with pytest.raises(error, match=match):
        MLPClassifier(max_iter=5).fit(bad_X, Y_LABELS)


@pytest.mark.parametrize("bad_y, error, match", [
    (Y_LABELS[:-1], ValueError, "inconsistent numbers of samples"),
    (X[:, 0], ValueError, "Unknown label type"),
    (np.where(Y_LABELS > 0, np.nan, 0.0), ValueError, "NaN"),
])
def test_bad_y_at_fit(bad_y, error, match):
    with pytest.raises(error, match=match):
        MLPClassifier(max_iter=5).fit(X, bad_y)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("container", [sp.csr_matrix, sp.csc_matrix, sp.coo_array], ids=["csr", "csc", "coo"])
def test_sparse_X_fits_and_predicts_as_dense_X(container):
    dense = fitted()
    sparse = MLPClassifier(hidden_layer_sizes=(8,), max_iter=20, random_state=0).fit(container(X), Y_LABELS)
    for a, b in zip(sparse.coefs_, dense.coefs_):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(sparse.predict(container(X)), dense.predict(X))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_one_class_is_learned_and_predicted_as_scikit_learn_does():
    y = np.full(len(X), "only")
    clf = MLPClassifier(hidden_layer_sizes=(4,), max_iter=5).fit(X, y)
    theirs = SkMLPClassifier(hidden_layer_sizes=(4,), max_iter=5).fit(X, y)
    assert list(clf.classes_) == list(theirs.classes_) == ["only"]
    assert (clf.predict(X) == "only").all() and clf.predict_proba(X).shape == theirs.predict_proba(X).shape == (60, 2)


def test_string_and_object_labels_come_back_as_given():
    names = np.array(["low", "mid", "high"])[Y_LABELS]
    for labels in (names, names.astype(object)):
        clf = MLPClassifier(hidden_layer_sizes=(8,), learning_rate_init=0.05, random_state=0).fit(X, labels)
        assert set(clf.predict(X)) <= set(names) and clf.classes_.tolist() == ["high", "low", "mid"]
        assert clf.score(X, labels) > 0.9


def test_object_array_of_numbers_is_converted():
    clf = fitted()
    np.testing.assert_array_equal(clf.predict(X.astype(object)), clf.predict(X))


@pytest.mark.parametrize("layout", ["fortran", "strided", "readonly", "float32", "list"])
def test_any_layout_gives_the_contiguous_answer(layout):
    reference = fitted().predict_proba(X)
    if layout == "fortran":
        other = np.asfortranarray(X)
    elif layout == "strided":
        other = np.repeat(X, 2, axis=1)[:, ::2]
    elif layout == "readonly":
        other = X.copy()
        other.flags.writeable = False
    elif layout == "float32":
        np.testing.assert_allclose(fitted().predict_proba(X.astype(np.float32)), reference, rtol=1e-6)
        return
    else:
        other = X.tolist()
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=20, random_state=0).fit(other, Y_LABELS)
    np.testing.assert_array_equal(clf.predict_proba(other), reference)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
@pytest.mark.parametrize("Estimator, y", [(MLPClassifier, Y_LABELS), (MLPRegressor, X[:, 0] - X[:, 1])],
                         ids=["classifier", "regressor"])
def test_misaligned_arrays_give_the_aligned_answer(backend, solver, Estimator, y):
    weights = np.linspace(0.5, 2.0, len(X))

    def trained(X, y, weights):
        est = Estimator(hidden_layer_sizes=(8,), max_iter=5, solver=solver, random_state=0, backend=backend)
        est.fit(X, y, sample_weight=weights)
        if solver != "lbfgs":
            est.partial_fit(X, y, sample_weight=weights)
        return est

    reference, other = trained(X, y, weights), trained(misaligned(X), misaligned(y), misaligned(weights))
    np.testing.assert_array_equal(other.model_.params, reference.model_.params)
    np.testing.assert_array_equal(other.predict(misaligned(X)), reference.predict(X))


def test_mismatched_n_features_at_predict():
    with pytest.raises(ValueError, match="X has 3 features, but MLPClassifier is expecting 4 features"):
        fitted().predict(X[:, :3])


def test_predict_before_fit():
    with pytest.raises(NotFittedError):
        MLPRegressor().predict(X)


def test_a_single_sample_and_a_single_feature_fit():
    MLPRegressor(max_iter=5).fit(X[:1], [1.0])
    clf = MLPClassifier(max_iter=5).fit(X[:, :1], Y_LABELS)
    assert clf.predict(X[:, :1]).shape == (60,)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
@pytest.mark.parametrize("solver", ["sgd", "lbfgs"])
@pytest.mark.parametrize("weights, message", [
    (np.full(60, 1e308), "sample_weight: the weights add up to more than a float64 holds"),
    (np.where(np.arange(60) == 3, -1e-310, 1.0), "sample_weight: 1 weight.* below 2.225e-308.* -1e-310 in row 3"),
], ids=["overflowing-total", "subnormal"])
def test_weights_a_batch_cannot_be_divided_by_are_refused(backend, Estimator, solver, weights, message):
    est = Estimator(hidden_layer_sizes=(8,), solver=solver, batch_size=1, max_iter=3, random_state=0,
                    backend=backend)
    with pytest.raises(ValueError, match=message) as error:
        est.fit(X, Y_LABELS, sample_weight=weights)
    assert not isinstance(error.value, fastgd.TrainingDiverged) and not hasattr(est, "model_")


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_negative_weights_are_taken_as_scikit_learn_takes_them():
    weights = np.where(np.arange(60) % 7 == 0, -0.5, 1.0)
    ours = MLPClassifier(hidden_layer_sizes=(8,), max_iter=20, random_state=0).fit(X, Y_LABELS, sample_weight=weights)
    theirs = SkMLPClassifier(hidden_layer_sizes=(8,), max_iter=20, random_state=0).fit(X, Y_LABELS,
                                                                                     sample_weight=weights)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-8)


def test_a_diverging_fit_raises_and_keeps_the_last_finite_weights():
    reg = MLPRegressor(solver="sgd", learning_rate_init=0.5, momentum=0.0, max_iter=50, random_state=0)
    with pytest.raises(fastgd.TrainingDiverged):
        reg.fit(X * 100, X[:, 0] * 1e4)
    assert np.all(np.isfinite(reg.model_.params)) and np.all(np.isfinite(reg.loss_curve_))
