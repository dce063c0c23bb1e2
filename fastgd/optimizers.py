"""Optimizer specs: hyper-parameters, checked once, plus the flat state they need.

An optimizer here holds no arrays of its own: the model allocates its state
(``n_slots`` arrays shaped like ``params``) and every backend applies the
update rule named by ``code`` inside its kernels.
"""

import numbers

import numpy as np

from ._codes import SGD as _SGD


def _positive_finite(value, name):
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")
    return float(value)


class Optimizer:
    """Base of the optimizer specs: ``code``, ``n_slots`` and ``hyper``."""

    code: int
    n_slots = 0

    def __init__(self, lr: float):
        self.lr = _positive_finite(lr, "lr")

    def hyper(self) -> np.ndarray:
        """Hyper-parameters other than the learning rate, float64, in the kernels' order."""
        return np.zeros(0)

    def learning_rates(self, step: int, n_steps: int) -> np.ndarray:
        """Learning rate of each of the ``n_steps`` steps from ``step`` on, float64."""
        return np.full(n_steps, self.lr)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Plain stochastic gradient descent: ``w -= lr * g``."""

    code = _SGD

    def __init__(self, lr: float = 0.01):
        super().__init__(lr)
