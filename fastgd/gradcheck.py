"""Numerical gradient check of a model's analytic gradients (any backend)."""

import numpy as np

from ._codes import LOSSES
from ._layout import weight_views
from ._validation import check_X


def check_gradients(net, X, y, eps: float = 1e-6, l2: float = 0.0) -> dict:
    """Compare ``backward``'s gradients with central differences of the loss.

    For each parameter array (``"W0"``, ``"b0"``, ...) returns
    ``max |numeric - analytic| / max(max |numeric|, max |analytic|)``: the
    worst error relative to the size of that array's gradient. Costs two
    loss evaluations per parameter; the weights are left unchanged.
    """
    X = check_X(X, net.dtype, n_features=net.sizes[0])
    Y, _ = net._encode(y, "y", len(X), net.classes_)
    kernels, layout, params = net._kernels, net.layout, net.params
    ws = kernels.workspace(layout, net.dtype, len(X))
    code = LOSSES[net.loss]

    def loss():
        value, _ = kernels.evaluate(layout, params, X, Y, code, ws)
        return value + kernels.l2_penalty(layout, params, l2)

    analytic = np.zeros_like(params)
    kernels.backward(layout, params, X, Y, code, l2, ws, analytic)
    numeric = np.empty_like(params)
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
    errors = {}
    for i, (n, a) in enumerate(zip(weight_views(layout, numeric), weight_views(layout, analytic))):
        scale = max(np.abs(n).max(), np.abs(a).max(), np.finfo(float).tiny)
        errors[f"{'Wb'[i % 2]}{i // 2}"] = float(np.abs(n - a).max() / scale)
    return errors
