"""Numerical gradient check of a model's analytic gradients (any backend)."""

import warnings

import numpy as np

from ._codes import LOSSES
from ._layout import weight_views
from ._validation import check_nonnegative, check_positive
from .kernels import step_config

DEFAULT_EPS = {"float64": 1e-6, "float32": 1e-3}


def check_gradients(net, X, y, eps: float | None = None, l2: float = 0.0) -> dict:
    """Compare the kernels' gradients with central differences of the loss.

    For each parameter array (``"W0"``, ``"b0"``, ...) returns
    ``max |numeric - analytic| / max(max |numeric|, max |analytic|)``: the
    worst error relative to the size of that array's gradient. ``eps`` is the
    difference step, by default 1e-6 for a float64 model and 1e-3 for a float32
    one: its loss is accurate to only ~1e-7, so a smaller step measures rounding
    (and a larger one the kinks of ReLU); expect errors up to ~1e-2 there, ~1e-7
    in float64. Costs two loss evaluations per parameter; the weights are left
    unchanged.
    """
    X, Y, _ = net.encode(X, y)
    eps = check_positive(DEFAULT_EPS[net.dtype.name] if eps is None else eps, "eps")
    l2 = check_nonnegative(l2, "l2")
    if net.dtype == np.float32 and eps < 1e-4:
        warnings.warn(f"eps: a float32 model's loss is accurate to about 1e-7, so differences over eps={eps:g} "
                      "are mostly rounding; leave eps=None (1e-3) or check a float64 copy of the model",
                      UserWarning, stacklevel=2)
    kernels, params = net.kernels, net.params
    ws = kernels.workspace(len(X))
    loss_code = LOSSES[net.loss]

    def loss():
        value, _ = kernels.evaluate(params, X, Y, loss_code, ws)
        return value + kernels.l2_penalty(params, l2)

    analytic = np.zeros_like(params)
    numeric = np.empty_like(params)
    with net.training.exclusive():
        kernels.backward(params, X, Y, step_config(net.loss, l2=l2), ws, analytic)
        saved = params.copy()
        try:
            for i in range(len(params)):
                params[i] = saved[i] + eps
                plus = loss()
                params[i] = saved[i] - eps
                minus = loss()
                params[i] = saved[i]
                numeric[i] = (plus - minus) / (2 * eps)
        finally:
            params[...] = saved
    if not (np.isfinite(numeric).all() and np.isfinite(analytic).all()):
        raise ValueError("X: the loss or its gradient is not finite on these rows at these weights (inputs too "
                         "large for the weights, or weights not finite); check rows on which it is finite")
    errors = {}
    for i, (n, a) in enumerate(zip(weight_views(kernels.layout, numeric), weight_views(kernels.layout, analytic))):
        scale = max(np.abs(n).max(), np.abs(a).max(), np.finfo(float).tiny)
        errors[f"{'Wb'[i % 2]}{i // 2}"] = float(np.abs(n - a).max() / scale)
    return errors
