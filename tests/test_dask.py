"""Scale-out: a grid search over fastgd estimators on a real dask.distributed cluster."""

import warnings

import distributed
import joblib
import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV

import fastgd
from conftest import BACKENDS


def worker_backend():
    import fastgd

    return fastgd.MLP([2, 2]).backend_


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                       host="127.0.0.1")
    with cluster, distributed.Client(cluster) as client:
        yield client


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
