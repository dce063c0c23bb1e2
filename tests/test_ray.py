"""Scale-out on a local Ray: a grid search through Ray's joblib backend gives the search run here,
and Ray's workers fit on the one thread each task is given."""

import warnings

import joblib
import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV

import fastgd

ray = pytest.importorskip("ray", reason='Ray is in the distributed extra: pip install -e ".[distributed]"')


@pytest.fixture(scope="module")
def local_ray():
    from ray.util.joblib import register_ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    register_ray()
    try:
        yield
    finally:
        ray.shutdown()


def test_grid_search_on_ray_equals_the_search_run_here(local_ray):
    X, y = make_classification(300, 8, random_state=0)
    estimator = fastgd.MLPClassifier(hidden_layer_sizes=(16,), learning_rate_init=0.01, max_iter=50, random_state=0)
    grid = {"alpha": [1e-4, 1e-2], "hidden_layer_sizes": [(8,), (16,)]}
    searches = {}
    for backend, n_jobs in (("ray", -1), ("loky", 1)):
        with warnings.catch_warnings(), joblib.parallel_backend(backend):
            warnings.simplefilter("ignore", ConvergenceWarning)
            searches[backend] = GridSearchCV(estimator, grid, cv=3, n_jobs=n_jobs).fit(X, y)
    assert searches["ray"].best_params_ == searches["loky"].best_params_
    for key in ("mean_test_score", "split0_test_score", "split1_test_score", "split2_test_score"):
        np.testing.assert_array_equal(searches["ray"].cv_results_[key], searches["loky"].cv_results_[key])
    np.testing.assert_array_equal(searches["ray"].predict_proba(X), searches["loky"].predict_proba(X))


def test_a_ray_task_of_one_cpu_fits_on_one_thread(local_ray):
    @ray.remote(num_cpus=1)
    def fit_threads():  # defined here, so that it travels by value: Ray's workers cannot import the tests
        """The threads a fit of steps that would repay any number takes in the worker."""
        from fastgd import _threads

        return _threads.threads_for(np.array([[784, 256], [256, 10]]), 60_000)

    assert ray.get(fit_threads.remote()) == 1
