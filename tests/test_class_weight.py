"""``MLPClassifier(class_weight=...)``: scikit-learn's meaning (it multiplies ``sample_weight``)."""

import warnings

import numpy as np
import pytest
from sklearn.datasets import make_classification, make_multilabel_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.class_weight import compute_sample_weight

import fastgd
from conftest import BACKENDS

X, y_index = make_classification(n_samples=120, n_features=6, n_informative=4, n_classes=3,
                                 weights=[0.6, 0.3, 0.1], random_state=0)
y = np.array(["bird", "cat", "dog"])[y_index]
ROW_WEIGHTS = np.random.RandomState(1).uniform(0.5, 2.0, len(y))
SETTINGS = dict(hidden_layer_sizes=(8,), max_iter=15, batch_size=16, random_state=0)


def fit(estimator, X, y, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(X, y, **kwargs)


def assert_same_fit(a, b):
    for wa, wb in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        np.testing.assert_allclose(wa, wb, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(getattr(a, "loss_curve_", a.loss_), getattr(b, "loss_curve_", b.loss_), rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("solver, early_stopping", [("sgd", False), ("adam", True), ("lbfgs", False)])
@pytest.mark.parametrize("class_weight", ["balanced", {"bird": 0.5, "dog": 4.0}], ids=["balanced", "dict"])
def test_class_weight_is_the_fit_with_its_sample_weight(backend, solver, early_stopping, class_weight):
    settings = dict(SETTINGS, solver=solver, early_stopping=early_stopping, backend=backend)
    per_class = compute_sample_weight(class_weight, y)
    for row_weights in (None, ROW_WEIGHTS):
        ours = fit(fastgd.MLPClassifier(class_weight=class_weight, **settings), X, y, sample_weight=row_weights)
        expected = per_class if row_weights is None else per_class * row_weights
        assert_same_fit(ours, fit(fastgd.MLPClassifier(**settings), X, y, sample_weight=expected))
    unweighted = fit(fastgd.MLPClassifier(**settings), X, y, sample_weight=ROW_WEIGHTS)
    assert np.abs(unweighted.coefs_[0] - ours.coefs_[0]).max() > 1e-6  # the weights changed the fit


def test_class_weight_of_multi_label_targets():
    X, Y = make_multilabel_classification(n_samples=80, n_features=5, n_classes=3, random_state=0)
    ours = fit(fastgd.MLPClassifier(class_weight="balanced", **SETTINGS), X, Y)
    assert_same_fit(ours, fit(fastgd.MLPClassifier(**SETTINGS), X, Y,
                              sample_weight=compute_sample_weight("balanced", Y)))


def test_partial_fit_takes_a_dict_of_class_weights_and_refuses_balanced():
    class_weight = {"cat": 2.0, "dog": 3.0}
    ours, theirs = fastgd.MLPClassifier(class_weight=class_weight, **SETTINGS), fastgd.MLPClassifier(**SETTINGS)
    for rows in (slice(0, 60), slice(60, None)):
        ours.partial_fit(X[rows], y[rows], classes=["bird", "cat", "dog"])
        theirs.partial_fit(X[rows], y[rows], classes=["bird", "cat", "dog"],
                           sample_weight=compute_sample_weight(class_weight, y[rows]))
    assert_same_fit(ours, theirs)
    balanced = fastgd.MLPClassifier(class_weight="balanced", **SETTINGS)
    with pytest.raises(ValueError, match="^class_weight: 'balanced' is not supported by partial_fit"):
        balanced.partial_fit(X, y, classes=["bird", "cat", "dog"])
    assert not hasattr(balanced, "model_") and not hasattr(balanced, "classes_")


def test_a_bad_class_weight_is_refused_before_anything_changes():
    estimator = fit(fastgd.MLPClassifier(**SETTINGS), X, y)
    before = [w.copy() for w in estimator.coefs_]
    estimator.set_params(class_weight="heavy")
    with pytest.raises(ValueError, match="^class_weight: expected None, 'balanced', a dict or a list of dicts, "
                                         "got 'heavy'"):
        estimator.fit(X[:40], y_index[:40])
    assert list(estimator.classes_) == ["bird", "cat", "dog"]
    assert all(np.array_equal(a, b) for a, b in zip(before, estimator.coefs_))


def test_a_refit_refused_for_its_weights_keeps_the_classes_it_was_fitted_on():
    estimator = fit(fastgd.MLPClassifier(**SETTINGS), X, y)
    with pytest.raises(ValueError, match="sample_weight"):
        estimator.fit(X, y_index % 2, sample_weight=np.ones(3))
    assert list(estimator.classes_) == ["bird", "cat", "dog"]
    assert set(estimator.predict(X)) <= {"bird", "cat", "dog"}
