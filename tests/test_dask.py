"""Scale-out on a real dask.distributed cluster of worker processes: a grid search through joblib,
and dask-ml's Incremental, HyperbandSearchCV, IncrementalSearchCV and ParallelPostFit."""

import warnings

import dask.array as da
import distributed
import joblib
import numpy as np
import pytest
from scipy.stats import loguniform
from sklearn.base import clone
from sklearn.datasets import make_classification, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV

import fastgd
from conftest import BACKENDS, misaligned

DISTRIBUTED_EXTRA = 'dask-ml is in the distributed extra: pip install -e ".[distributed]"'
BLOCK_ROWS = 250


def worker_backend():
    import fastgd

    return fastgd.MLP([2, 2]).backend_


def worker_threads():
    """The threads a fit of steps that would repay any number takes on this worker."""
    import numpy as np
    from fastgd import _threads

    return _threads.threads_for(np.array([[784, 256], [256, 10]]), 60_000)


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                       host="127.0.0.1")
    with cluster, distributed.Client(cluster) as client:
        yield client


def problem(Estimator, dtype, n=1000):
    """``(X, y, fit_params)`` of ``n`` rows for ``Estimator``: three classes or a scaled target."""
    if Estimator is fastgd.MLPClassifier:
        X, y = make_classification(n, 10, n_classes=3, n_informative=6, random_state=0)
        return X.astype(dtype), y, {"classes": [0, 1, 2]}
    X, y = make_regression(n, 10, noise=1.0, random_state=0)
    return X.astype(dtype), y / y.std(), {}


def blocks(X, y):
    """``X`` and ``y`` as dask arrays of ``BLOCK_ROWS`` rows a block; each block of ``X`` made on a worker
    one byte off its alignment, as blocks unpickled from network buffers may be."""
    X_blocks = da.from_array(X, chunks=(BLOCK_ROWS, X.shape[1])).map_blocks(misaligned, dtype=X.dtype)
    return X_blocks, da.from_array(y, chunks=BLOCK_ROWS)


def test_grid_search_on_a_local_cluster(client):
    X, y = make_classification(300, 8, random_state=0)
    search = GridSearchCV(fastgd.MLPClassifier(hidden_layer_sizes=(16,), learning_rate_init=0.01, max_iter=50,
                                               random_state=0),
                          {"alpha": [1e-4, 1e-2], "hidden_layer_sizes": [(8,), (16,)]}, cv=3, n_jobs=-1)
    with warnings.catch_warnings(), joblib.parallel_backend("dask"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(X, y)
    local = GridSearchCV(search.estimator, search.param_grid, cv=3, n_jobs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        local.fit(X, y)
    np.testing.assert_allclose(search.cv_results_["mean_test_score"], local.cv_results_["mean_test_score"])
    assert search.best_score_ > 0.8


def test_workers_use_the_ahead_of_time_build(client):
    # "auto" takes the ahead-of-time Cython build where it is installed: no JIT warm-up and
    # no Numba cache for the worker processes to share.
    assert set(client.run(worker_backend).values()) == {BACKENDS[0]}


def test_a_worker_of_one_thread_fits_on_one_thread(client):
    assert set(client.run(worker_threads).values()) == {1}


@pytest.mark.parametrize("Estimator, dtype", [(fastgd.MLPClassifier, np.float32), (fastgd.MLPRegressor, np.float64)])
def test_incremental_fit_equals_the_same_partial_fit_stream_run_here(client, Estimator, dtype):
    wrappers = pytest.importorskip("dask_ml.wrappers", reason=DISTRIBUTED_EXTRA)
    X, y, fit_params = problem(Estimator, dtype)
    estimator = Estimator(hidden_layer_sizes=(16,), learning_rate_init=0.01, random_state=0)
    incremental = wrappers.Incremental(estimator, shuffle_blocks=False).fit(*blocks(X, y), **fit_params)
    local = clone(estimator)
    for start in range(0, len(X), BLOCK_ROWS):
        local.partial_fit(X[start:start + BLOCK_ROWS], y[start:start + BLOCK_ROWS], **fit_params)
    fitted = incremental.estimator_
    assert fitted.model_.dtype == dtype and fitted.t_ == local.t_ == len(X)
    np.testing.assert_allclose(fitted.model_.params, local.model_.params, rtol=0, atol=1e-12)
    np.testing.assert_allclose(fitted.loss_curve_, local.loss_curve_, rtol=0, atol=1e-12)


@pytest.mark.parametrize("search", ["HyperbandSearchCV", "IncrementalSearchCV"])
def test_an_adaptive_search_trains_each_candidate_a_block_a_call(client, search):
    model_selection = pytest.importorskip("dask_ml.model_selection", reason=DISTRIBUTED_EXTRA)
    X, y, fit_params = problem(fastgd.MLPClassifier, np.float64)
    space = {"alpha": loguniform(1e-5, 1e-1), "learning_rate_init": loguniform(1e-3, 1e-1),
             "hidden_layer_sizes": [(8,), (16,), (32,)]}
    options = dict(max_iter=9) if search == "HyperbandSearchCV" else dict(n_initial_parameters=4, max_iter=6,
                                                                          decay_rate=None)
    Search = getattr(model_selection, search)
    result = Search(fastgd.MLPClassifier(random_state=0), space, random_state=0, **options)
    result.fit(*blocks(X, y), **fit_params)
    best = result.best_estimator_
    calls = result.cv_results_["partial_fit_calls"]
    assert isinstance(best, fastgd.MLPClassifier) and best.n_iter_ == 1
    assert len(best.loss_curve_) == calls[result.best_index_]  # one epoch for each partial_fit call
    assert max(calls) == options["max_iter"] and len(calls) > 1
    assert best.get_params()["hidden_layer_sizes"] in space["hidden_layer_sizes"]
    assert result.best_score_ > 0.6  # chance: 1/3


def test_parallel_post_fit_predicts_each_block_as_here(client):
    wrappers = pytest.importorskip("dask_ml.wrappers", reason=DISTRIBUTED_EXTRA)
    X, y, _ = problem(fastgd.MLPClassifier, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = wrappers.ParallelPostFit(fastgd.MLPClassifier(hidden_layer_sizes=(16,), max_iter=20,
                                                              random_state=0)).fit(X, y)
    X_blocks, _ = blocks(X, y)
    proba, labels = da.compute(model.predict_proba(X_blocks), model.predict(X_blocks))
    here = [model.estimator.predict_proba(X[start:start + BLOCK_ROWS]) for start in range(0, len(X), BLOCK_ROWS)]
    np.testing.assert_array_equal(proba, np.concatenate(here))
    np.testing.assert_array_equal(labels, model.estimator.classes_[np.argmax(proba, axis=1)])
