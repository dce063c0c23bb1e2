"""Numerical gradient check of a model's analytic gradients (any backend)."""

import warnings

import numpy as np
from tqdm.auto import tqdm

from ._codes import LOSSES
from ._layout import weight_views
from ._validation import check_int, check_nonnegative, check_positive
from .kernels import step_config

__all__ = ["check_gradients"]

DEFAULT_EPS = {"float64": 1e-6, "float32": 1e-3}


def check_gradients(net, X, y, eps: float | None = None, l2: float = 0.0, max_rows: int | None = 256,
                    max_params: int | None = 1000, random_state: int = 0) -> dict:
    """Compare the kernels' gradients with central differences of the loss.

    For each parameter array (``"W0"``, ``"b0"``, ...) returns
    ``max |numeric - analytic| / max(max |numeric|, max |analytic|)`` over the
    parameters checked: the worst error relative to the size of that array's
    gradient. ``eps`` is the difference step, by default 1e-6 for a float64
    model and 1e-3 for a float32 one: its loss is accurate to only ~1e-7, so a
    smaller step measures rounding (and a larger one the kinks of ReLU); expect
    errors up to ~1e-2 there, ~1e-7 in float64.

    Each checked parameter costs two loss evaluations over the rows, so larger
    inputs are sampled (seeded by ``random_state``): at most ``max_rows`` rows,
    and at most ``max_params`` parameters spread over the arrays in proportion
    to their sizes, at least one from each (``None``: all). A progress bar shows
    when more than 2,000 parameters are checked. The weights are left unchanged.
    """
    X, Y, _ = net.encode(X, y)
    eps = check_positive(DEFAULT_EPS[net.dtype.name] if eps is None else eps, "eps")
    l2 = check_nonnegative(l2, "l2")
    rng = np.random.RandomState(check_int(random_state, "random_state", minimum=0))
    if max_rows is not None and len(X) > check_int(max_rows, "max_rows"):
        rows = np.sort(rng.choice(len(X), max_rows, replace=False))
        X, Y = X[rows], Y[rows]
    if net.dtype == np.float32 and eps < 1e-4:
        warnings.warn(f"eps: a float32 model's loss is accurate to about 1e-7, so differences over eps={eps:g} "
                      "are mostly rounding; leave eps=None (1e-3) or check a float64 copy of the model",
                      UserWarning, stacklevel=2)
    kernels, params = net.kernels, net.params
    arrays = _parameter_indices(kernels.layout, max_params, rng)
    ws = kernels.workspace(len(X))
    loss_code = LOSSES[net.loss]

    def loss():
        value, _ = kernels.data_loss(params, X, Y, loss_code, ws)
        return value + kernels.l2_penalty(params, l2)

    analytic = np.zeros_like(params)
    numeric = np.full_like(params, np.nan)
    checked = np.concatenate(arrays)
    with net.training.exclusive():
        kernels.backward(params, X, Y, step_config(net.loss, l2=l2), ws, analytic)
        saved = params.copy()
        try:
            for i in tqdm(checked, desc="check_gradients", unit="param", leave=False, disable=len(checked) <= 2000):
                params[i] = saved[i] + eps
                plus = loss()
                params[i] = saved[i] - eps
                minus = loss()
                params[i] = saved[i]
                numeric[i] = (plus - minus) / (2 * eps)
        finally:
            params[...] = saved
    if not (np.isfinite(numeric[checked]).all() and np.isfinite(analytic).all()):
        raise ValueError("X: the loss or its gradient is not finite on these rows at these weights (inputs too "
                         "large for the weights, or weights not finite); check rows on which it is finite")
    errors = {}
    for i, (indices, whole) in enumerate(zip(arrays, weight_views(kernels.layout, analytic))):
        n, a = numeric[indices], analytic[indices]
        scale = max(np.abs(n).max(), np.abs(whole).max(), np.finfo(float).tiny)
        errors[f"{'Wb'[i % 2]}{i // 2}"] = float(np.abs(n - a).max() / scale)
    return errors


def _parameter_indices(layout, max_params, rng):
    """Indices into ``params`` to check, per array ``[W0, b0, W1, b1, ...]``: all of them, or at most
    ``max_params`` in all, in proportion to the arrays' sizes and at least one from each."""
    ranges = []
    for n_in, n_out, _, w, b, *_ in layout.tolist():
        ranges += [(w, n_in * n_out), (b, n_out)]
    total = sum(size for _, size in ranges)
    if max_params is None or total <= check_int(max_params, "max_params"):
        return [np.arange(start, start + size) for start, size in ranges]
    return [start + np.sort(rng.choice(size, max(1, min(size, round(max_params * size / total))), replace=False))
            for start, size in ranges]
