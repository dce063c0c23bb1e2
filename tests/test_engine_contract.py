"""What engines that train estimators elsewhere (dask-ml, Ray, joblib) rely on: ``partial_fit`` and
its ``classes``, one epoch per warm-started fit, cheap copies, pickles that predict the same in another
process, and threads each process picks for itself."""

import copy
import os
import pickle
import subprocess
import sys
import threading
import warnings

import cloudpickle
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_classification, make_regression
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

import fastgd
from fastgd import MLPClassifier, MLPRegressor, _threads

from conftest import BACKENDS, COMPILED, make_problem


def problem(Estimator, n=300, dtype=np.float64):
    if Estimator is MLPClassifier:
        X, y = make_classification(n, 8, n_classes=3, n_informative=5, random_state=0)
    else:
        X, y = make_regression(n, 8, noise=1.0, random_state=0)
        y = y / y.std()
    return X.astype(dtype), y


def test_partial_fit_takes_classes_by_keyword_or_in_scikit_learns_place():
    X, y = problem(MLPClassifier)
    by_keyword = MLPClassifier(hidden_layer_sizes=(8,), random_state=0).partial_fit(X, y, classes=[0, 1, 2])
    by_place = MLPClassifier(hidden_layer_sizes=(8,), random_state=0).partial_fit(X, y, None, [0, 1, 2])
    np.testing.assert_array_equal(by_place.model_.params, by_keyword.model_.params)
    # scikit-learn's third argument is sample_weight: classes there are refused, saying what to pass.
    with pytest.raises(ValueError, match=r"^classes must be passed .* third argument is sample_weight: pass classes="):
        MLPClassifier().partial_fit(X, y, [0, 1, 2])


@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_a_warm_started_fit_of_max_iter_1_is_one_epoch(Estimator):
    """Each such fit is one ``partial_fit`` epoch: the same weights, call by call (plain SGD, whose
    optimizer has no state for a fit to start afresh)."""
    X, y = problem(Estimator)
    kwargs = dict(hidden_layer_sizes=(8,), solver="sgd", momentum=0.0, learning_rate_init=0.01, random_state=0)
    warm = Estimator(warm_start=True, max_iter=1, **kwargs)
    streamed = Estimator(**kwargs)
    for call in range(1, 4):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            warm.fit(X, y)
        streamed.partial_fit(X, y, **({"classes": [0, 1, 2]} if Estimator is MLPClassifier else {}))
        np.testing.assert_array_equal(warm.model_.params, streamed.model_.params)
        assert (warm.n_iter_, warm.t_, len(warm.loss_curve_)) == (1, call * len(X), call)


def test_clone_and_deepcopy_carry_no_workspace_or_compiled_state():
    X, y = problem(MLPClassifier, n=400)
    fitted = MLPClassifier(hidden_layer_sizes=(64,), max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fitted.fit(X, y)
    assert not hasattr(clone(fitted), "model_")
    # Its state is its arrays (weights; Adam's two moments; weights kept for early stopping) and a few
    # names and numbers: no workspace, no kernel module.
    arrays = fitted.model_.params.nbytes * 4
    assert len(pickle.dumps(fitted)) < arrays + 10_000
    twin = copy.deepcopy(fitted)
    assert isinstance(fitted.model_.__getstate__()["_kernels"], str)
    np.testing.assert_array_equal(twin.predict_proba(X), fitted.predict_proba(X))
    before = fitted.model_.params.copy()
    twin.partial_fit(X, y)
    np.testing.assert_array_equal(fitted.model_.params, before)
    assert not np.array_equal(twin.model_.params, before)


PREDICT_ELSEWHERE = """
import sys, cloudpickle
cases = cloudpickle.loads(sys.stdin.buffer.read())
sys.stdout.buffer.write(cloudpickle.dumps([(model.model_.backend_, model.predict_proba(X)) for model, X in cases]))
"""


def test_cloudpickled_estimators_predict_bit_identically_in_another_process():
    cases = []
    for backend in BACKENDS:
        for dtype in (np.float32, np.float64):
            X, y = problem(MLPClassifier, dtype=dtype)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                cases.append((MLPClassifier(hidden_layer_sizes=(16,), max_iter=5, random_state=0,
                                            backend=backend).fit(X, y), X))
    run = subprocess.run([sys.executable, "-c", PREDICT_ELSEWHERE], input=cloudpickle.dumps(cases),
                         capture_output=True, check=True)
    for (model, X), (backend, proba) in zip(cases, cloudpickle.loads(run.stdout), strict=True):
        assert backend == model.model_.backend_
        assert proba.dtype == X.dtype
        np.testing.assert_array_equal(proba, model.predict_proba(X))


def test_the_estimators_have_no_n_jobs():
    # Threads are fastgd's to choose in each process (fastgd/_threads.py), not a parameter.
    assert "n_jobs" not in MLPClassifier().get_params() and "n_jobs" not in MLPRegressor().get_params()


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs CPU affinity (Linux) and two CPUs to hold a process to one")
@pytest.mark.parametrize("backend", COMPILED)
def test_a_process_held_to_one_cpu_fits_on_one_thread(backend, monkeypatch):
    """Held to one CPU after it started (BLAS still allowing two threads), a fit whose steps would
    repay two threads runs on the thread that fits."""
    module = fastgd.kernels._loaded[backend]
    kernel, seen = module.batch_gradient, []

    def batch_gradient(*args):
        seen.append(threading.get_ident())
        return kernel(*args)

    monkeypatch.setattr(module, "batch_gradient", batch_gradient)
    monkeypatch.setattr(_threads, "MIN_FLOPS_PER_THREAD", 1)
    X, y = make_problem("softmax", n=300, seed=0)
    cpus = os.sched_getaffinity(0)
    with threadpool_limits(2):
        fastgd.MLP([5, 9, 3], backend=backend, random_state=0).fit(X, y, epochs=1)
        assert len(set(seen)) == 2  # both CPUs: two shares on two threads
        seen.clear()
        os.sched_setaffinity(0, {min(cpus)})
        try:
            fastgd.MLP([5, 9, 3], backend=backend, random_state=0).fit(X, y, epochs=1)
        finally:
            os.sched_setaffinity(0, cpus)
    assert set(seen) <= {threading.get_ident()}
