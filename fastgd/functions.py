"""Optimizers on plain functions: the course's demonstrations, one call each."""

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ._validation import check_int
from .kernels import _numpy, step_config
from .optimizers import check_optimizer

__all__ = ["Trajectory", "minimize"]


@dataclass
class Trajectory:
    """Where an optimizer went: ``points`` (steps + 1, n) from ``x0`` on, the function's
    ``values`` there (steps + 1,), and the ``step_sizes`` taken (steps,) — the learning
    rates, or a line search's accepted steps."""

    points: np.ndarray
    values: np.ndarray
    step_sizes: np.ndarray


def minimize(fun: Callable[[np.ndarray], float], grad: Callable[[np.ndarray], np.ndarray], x0,
             optimizer, steps: int = 100) -> Trajectory:
    """Run ``optimizer`` for ``steps`` steps on ``fun`` (a vector -> number) from ``x0``.

    ``grad(x)`` returns the gradient of ``fun`` at ``x``, shaped like ``x``. Every
    optimizer applies the same update rule as in training (the reference kernels),
    so a learning rate that diverges here diverges there too; the trajectory is
    returned as it went, diverging or not.
    """
    x = np.array(x0, dtype=np.float64).ravel()
    if x.size == 0 or not np.all(np.isfinite(x)):
        raise ValueError(f"x0: expected a non-empty vector of finite numbers, got {x0!r}")
    check_optimizer(optimizer)
    steps = check_int(steps, "steps", minimum=0)
    state = np.zeros((optimizer.n_slots, x.size))
    config, lrs = step_config("mse", optimizer.rule, optimizer.hyper()), optimizer.learning_rates(0, steps)
    points, values = np.empty((steps + 1, x.size)), np.empty(steps + 1)
    points[0], values[0] = x, fun(x.copy())
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(steps):
            g = np.array(grad(x.copy()), dtype=np.float64).reshape(-1)
            if g.shape != x.shape:
                raise ValueError(f"grad: returned {g.size} values for a point of {x.size}")
            if optimizer.rule == "line_search":
                lrs[t] = _numpy.line_search(x, g, values[t], fun, state[0], config, lrs[t])
            else:
                _numpy.update(x, g, state, config, lrs[t], t)
            points[t + 1], values[t + 1] = x, fun(x.copy())
    return Trajectory(points, values, lrs)
