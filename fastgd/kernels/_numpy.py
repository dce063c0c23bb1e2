"""Reference backend: plain NumPy, written as the course notes write it.

Every compiled backend is checked and benchmarked against this one, so it is
meant to be read: forward, backward, update, and an epoch as a Python loop
over them. Buffers are allocated once per fit in a :class:`Workspace`.

Shapes: ``X`` (m, n_in) and ``Y`` (m, n_out) in the model dtype;
``params``, ``grads`` (P,); optimizer ``state`` (n_slots, P); ``layout`` as
in :mod:`fastgd._layout`.
"""

import numpy as np
from scipy.special import expit

from .._codes import (
    ACTIVATION, BINARY_CROSS_ENTROPY, CROSS_ENTROPY, IDENTITY, MSE, N_IN, N_OUT, RELU, SGD, SIGMOID, SOFTMAX, TANH,
)
from .._layout import weight_views


class Workspace:
    """Activations, deltas and scratch for up to ``rows`` rows per call.

    ``batch_rows`` > 0 adds buffers that a mini-batch is gathered into.
    """

    def __init__(self, layout, dtype, rows, batch_rows=0):
        self.layout = layout
        self.activations = [int(code) for code in layout[:, ACTIVATION]]
        self._views = {}
        widths = [int(n) for n in layout[:, N_OUT]]
        self.a = [np.empty((rows, n), dtype) for n in widths]  # a[l] = f(z[l])
        self.delta = [np.empty((rows, n), dtype) for n in widths]  # dL/dz[l]
        self.derivative = [np.empty((rows, n), dtype) for n in widths]  # f'(z[l])
        self.z = np.empty((rows, widths[-1]), dtype)  # output pre-activation
        self.row = np.empty((rows, 1), dtype)  # softmax: log-sum-exp of each row of z
        self.x = np.empty((batch_rows, int(layout[0, N_IN])), dtype)
        self.y = np.empty((batch_rows, widths[-1]), dtype)
        self.scratch = np.empty(int((layout[:, N_IN] * layout[:, N_OUT]).max()), dtype)  # one W's worth

    def views(self, buffer):
        """``(Ws, bs)``: per-layer views into ``buffer`` (``params`` or ``grads``), made once per buffer."""
        cached = self._views.get(id(buffer))
        if cached is None or cached[0] is not buffer:
            views = weight_views(self.layout, buffer)
            cached = self._views[id(buffer)] = (buffer, views[::2], views[1::2])
        return cached[1:]


def workspace(layout, dtype, rows, batch_rows=0):
    return Workspace(layout, dtype, rows, batch_rows)


# Activations write f(z) into ``out`` (which may be ``z``); ``row`` is (m, 1) scratch.
def _identity(z, out, row):
    if out is not z:
        np.copyto(out, z)


def _relu(z, out, row):
    np.maximum(z, 0, out=out)


def _sigmoid(z, out, row):
    expit(z, out=out)


def _tanh(z, out, row):
    np.tanh(z, out=out)


def _softmax(z, out, row):
    """Row-wise softmax; leaves ``row = log(sum(exp(z)))``, which the cross-entropy loss uses."""
    z.max(axis=1, keepdims=True, out=row)
    np.subtract(z, row, out=out)
    np.exp(out, out=out)
    total = out.sum(axis=1, keepdims=True)
    out /= total
    row += np.log(total)


ACTIVATE = {IDENTITY: _identity, RELU: _relu, SIGMOID: _sigmoid, TANH: _tanh, SOFTMAX: _softmax}


# Derivatives f'(z), written into ``out`` from the activation a = f(z).
def _identity_derivative(a, out):
    out.fill(1)


def _relu_derivative(a, out):
    np.greater(a, 0, out=out)


def _sigmoid_derivative(a, out):
    np.subtract(1, a, out=out)
    out *= a


def _tanh_derivative(a, out):
    np.square(a, out=out)
    np.subtract(1, out, out=out)


DERIVATIVE = {
    IDENTITY: _identity_derivative, RELU: _relu_derivative,
    SIGMOID: _sigmoid_derivative, TANH: _tanh_derivative,
}


def forward(layout, params, X, ws):
    """Output activations ``f(X @ W0 + b0 ...)``: (m, n_out), a view into ``ws``."""
    m = X.shape[0]
    Ws, bs = ws.views(params)
    last = len(Ws) - 1
    a = X
    for l, (W, b, activation) in enumerate(zip(Ws, bs, ws.activations)):
        z = ws.z[:m] if l == last else ws.a[l][:m]
        np.dot(a, W, out=z)
        z += b
        a = ws.a[l][:m]
        ACTIVATE[activation](z, a, ws.row[:m])
    return a


def _sum_of_squares(Ws):
    return sum(float(np.vdot(W, W)) for W in Ws)


def l2_penalty(layout, params, l2):
    """``l2 / 2 * sum(W**2)`` over every weight matrix (biases excluded)."""
    return 0.5 * l2 * _sum_of_squares(weight_views(layout, params)[::2]) if l2 else 0.0


def _data_loss(loss, z, a, Y, lse):
    """Mean loss of a batch from the output pre-activations ``z``, activations ``a`` and,
    for a softmax output, each row's log-sum-exp ``lse`` (rows of ``Y`` sum to 1)."""
    if loss == CROSS_ENTROPY:  # -mean_i sum_j y log softmax(z) = mean_i (lse_i - y_i . z_i)
        return (float(lse.sum(dtype=np.float64)) - float(np.vdot(Y, z))) / len(Y)
    if loss == BINARY_CROSS_ENTROPY:  # -mean(y log sigmoid(z) + (1 - y) log(1 - sigmoid(z)))
        return (float(np.logaddexp(0, z).sum(dtype=np.float64)) - float(np.vdot(Y, z))) / Y.size
    error = a - Y  # MSE: mean((a - y)**2)
    return float(np.vdot(error, error)) / Y.size


def evaluate(layout, params, X, Y, loss, ws):
    """``(mean data loss without the L2 term, output activations (m, n_out))`` on ``(X, Y)``."""
    m = X.shape[0]
    a = forward(layout, params, X, ws)
    return _data_loss(loss, ws.z[:m], a, Y, ws.row[:m]), a


def backward(layout, params, X, Y, loss, l2, ws, grads):
    """Forward and backward pass: fills ``grads`` (L2 included), returns the batch loss."""
    m = X.shape[0]
    Ws, _ = ws.views(params)
    dWs, dbs = ws.views(grads)
    a_out = forward(layout, params, X, ws)
    value = _data_loss(loss, ws.z[:m], a_out, Y, ws.row[:m])
    if l2:
        value += 0.5 * l2 * _sum_of_squares(Ws)

    # Output delta dL/dz: (a - y) scaled by the loss's mean, times f'(z) unless fused.
    delta = ws.delta[-1][:m]
    np.subtract(a_out, Y, out=delta)
    delta *= 1.0 / m if loss == CROSS_ENTROPY else (2.0 if loss == MSE else 1.0) / Y.size
    output = ws.activations[-1]
    if loss == MSE and output != IDENTITY:
        derivative = ws.derivative[-1][:m]
        DERIVATIVE[output](a_out, derivative)
        delta *= derivative

    for l in range(len(Ws) - 1, -1, -1):
        a_prev = X if l == 0 else ws.a[l - 1][:m]
        np.dot(a_prev.T, delta, out=dWs[l])
        if l2:
            l2_W = ws.scratch[: Ws[l].size].reshape(Ws[l].shape)
            np.multiply(Ws[l], l2, out=l2_W)
            dWs[l] += l2_W
        delta.sum(axis=0, out=dbs[l])
        if l > 0:
            delta_prev = ws.delta[l - 1][:m]
            np.dot(delta, Ws[l].T, out=delta_prev)
            derivative = ws.derivative[l - 1][:m]
            DERIVATIVE[ws.activations[l - 1]](a_prev, derivative)
            delta_prev *= derivative
            delta = delta_prev
    return value


def update(params, grads, state, optimizer, hyper, lr, step):
    """One optimizer step on ``params`` in place; ``step`` counts from 0.

    The gradients are spent: ``grads`` may be overwritten.
    """
    if optimizer == SGD:
        grads *= lr
        params -= grads
    else:
        raise ValueError(f"unknown optimizer code {optimizer}")


def train_epoch(layout, params, grads, state, X, Y, order, batch_size, loss, l2,
                optimizer, hyper, lrs, step, ws):
    """One epoch of gradient descent over the rows of ``X`` in ``order``.

    Batch ``i`` takes ``order[i*batch_size:(i+1)*batch_size]`` (the last may be
    short; one batch of every row takes ``X`` as it is) and learning rate
    ``lrs[i]``. Returns ``(mean batch loss, steps taken)``; the epoch stops
    early, before updating, at the first batch whose loss is not finite.
    """
    with np.errstate(over="ignore", invalid="ignore"):  # divergence is reported, not warned about
        return _train_epoch(layout, params, grads, state, X, Y, order, batch_size, loss, l2,
                            optimizer, hyper, lrs, step, ws)


def _train_epoch(layout, params, grads, state, X, Y, order, batch_size, loss, l2, optimizer, hyper, lrs, step, ws):
    n = X.shape[0]
    n_batches = -(-n // batch_size)
    total = 0.0
    for i in range(n_batches):
        if n_batches == 1:
            xb, yb = X, Y
        else:
            rows = order[i * batch_size : (i + 1) * batch_size]
            xb = np.take(X, rows, axis=0, out=ws.x[: len(rows)])
            yb = np.take(Y, rows, axis=0, out=ws.y[: len(rows)])
        value = backward(layout, params, xb, yb, loss, l2, ws, grads)
        if not np.isfinite(value):
            return value, i
        update(params, grads, state, optimizer, hyper, lrs[i], step + i)
        total += value
    return total / n_batches, n_batches
