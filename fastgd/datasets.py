"""Small data sets used by the demos, tests and benchmarks."""

import numpy as np
from sklearn.datasets import make_classification
from sklearn.model_selection import train_test_split

__all__ = ["textbook", "synthetic_classification"]


def textbook():
    """The course's 3-class problem: ``X_train (1500, 10), X_test (500, 10), y_train, y_test``.

    ``make_classification`` (2,000 rows, 10 features, 6 informative,
    3 classes), standardised with ``(X - mean) / (std + 1e-8)``, then split
    25 % for testing, stratified.
    """
    X, y = make_classification(n_samples=2000, n_features=10, n_informative=6, n_classes=3,
                               n_clusters_per_class=1, random_state=0)
    X = (X - X.mean(axis=0)) / (X.std(axis=0) + 1e-8)
    return train_test_split(X, y, test_size=0.25, random_state=1, stratify=y)


def synthetic_classification(n_samples, n_features, n_classes, dtype="float32", random_state=0):
    """Gaussian features with labels from a random linear teacher: ``X (n, n_features)``, ``y (n,)``."""
    rng = np.random.RandomState(random_state)
    X = rng.standard_normal((n_samples, n_features)).astype(dtype)
    y = (X @ rng.standard_normal((n_features, n_classes)).astype(dtype)).argmax(axis=1)
    return X, y
