"""Numba backend: the reference's kernels JIT-compiled, and a fused whole-epoch loop.

Same contracts as the reference (``_numpy.py``). Batches of more than
``SMALL_BATCH`` rows go through BLAS (``np.dot``); smaller ones through loops
written here, which for plain SGD also fold the gradient and the update into
one pass so that no gradient array is formed. float32 and float64 share one
source: Numba compiles a specialisation per dtype, and scalars are cast to the
array dtype (``dtype.type``) so float32 loops stay float32. Losses and sums of
squares accumulate in float64.
"""

import numpy as np
from numba import njit

from .._codes import (
    BINARY_CROSS_ENTROPY, CROSS_ENTROPY, IDENTITY, MSE, N_IN, N_OUT, RELU, SGD, SIGMOID, SOFTMAX, TANH,
)

# Contraction (FMA) and reassociation (vectorised reductions) only: no
# "nnan"/"ninf", so that a diverging loss is still seen as NaN or infinity.
_jit = njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract", "reassoc", "nsz"})

SMALL_BATCH = 16


class Workspace:
    """Flat buffers for up to ``rows`` rows: activations and deltas of every layer
    (layer ``l`` at ``offsets[l]``, row-major ``(m, n_out)``), output logits, and
    ``batch_rows`` rows to gather a mini-batch into."""

    def __init__(self, layout, dtype, rows, batch_rows=0):
        widths = layout[:, N_OUT]
        self.offsets = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64) * rows
        self.acts = np.empty(rows * int(widths.sum()), dtype)
        self.deltas = np.empty_like(self.acts)
        self.z = np.empty(rows * int(widths[-1]), dtype)
        self.x = np.empty((batch_rows, int(layout[0, N_IN])), dtype)
        self.y = np.empty((batch_rows, int(widths[-1])), dtype)
        self.row = np.empty(int(widths.max()), dtype)


def workspace(layout, dtype, rows, batch_rows=0):
    return Workspace(layout, dtype, rows, batch_rows)


# ---------------------------------------------------------------- views
@_jit
def _weights(layout, params, l):
    n_in, n_out, w = layout[l, 0], layout[l, 1], layout[l, 3]
    return params[w : w + n_in * n_out].reshape((n_in, n_out))


@_jit
def _bias(layout, params, l):
    return params[layout[l, 4] : layout[l, 4] + layout[l, 1]]


@_jit
def _rows(buffer, offset, m, n):
    return buffer[offset : offset + m * n].reshape((m, n))


# ---------------------------------------------------------------- forward
@_jit
def _activate(v, activation, one):
    """Hidden activation of one value ``v``; ``one`` is 1 in the array dtype."""
    if activation == RELU:
        return v if v > 0 else one - one
    if activation == SIGMOID:
        return one / (one + np.exp(-v))
    if activation == TANH:
        return np.tanh(v)
    return v


@_jit
def _linear(A, W, Z):
    """``Z = A @ W``: BLAS for large batches, row-by-row loops for small ones."""
    m, n_in = A.shape
    if m > SMALL_BATCH:
        np.dot(A, W, Z)
        return
    Z[:, :] = 0
    for i in range(m):
        for k in range(n_in):
            a = A[i, k]
            if a != 0:
                for j in range(W.shape[1]):
                    Z[i, j] += a * W[k, j]


@_jit
def _dense(A, W, b, activation, Z):
    """Hidden layer in place: ``Z = f(A @ W + b)``."""
    _linear(A, W, Z)
    one = Z.dtype.type(1)
    for i in range(Z.shape[0]):
        for j in range(Z.shape[1]):
            Z[i, j] = _activate(Z[i, j] + b[j], activation, one)


@_jit
def _output(A, W, b, activation, Z, out):
    """Output layer: logits ``Z = A @ W + b`` kept, activations ``out = f(Z)``."""
    _linear(A, W, Z)
    one = Z.dtype.type(1)
    for i in range(Z.shape[0]):
        for j in range(Z.shape[1]):
            Z[i, j] += b[j]
        if activation == SOFTMAX:
            top = Z[i, 0]
            for j in range(Z.shape[1]):
                top = max(top, Z[i, j])
            total = Z.dtype.type(0)
            for j in range(Z.shape[1]):
                out[i, j] = np.exp(Z[i, j] - top)
                total += out[i, j]
            for j in range(Z.shape[1]):
                out[i, j] /= total
        elif activation == SIGMOID:
            for j in range(Z.shape[1]):
                out[i, j] = one / (one + np.exp(-Z[i, j]))
        else:
            for j in range(Z.shape[1]):
                out[i, j] = Z[i, j]


@_jit
def _forward(layout, params, X, acts, offsets, z):
    """All layers for the rows of ``X``; returns the output activations (m, n_out)."""
    m, last = X.shape[0], layout.shape[0] - 1
    for l in range(last + 1):
        n_in, n_out, activation = layout[l, 0], layout[l, 1], layout[l, 2]
        W, b = _weights(layout, params, l), _bias(layout, params, l)
        out = _rows(acts, offsets[l], m, n_out)
        if l == last:
            Z = _rows(z, 0, m, n_out)
            if l == 0:
                _output(X, W, b, activation, Z, out)
            else:
                _output(_rows(acts, offsets[l - 1], m, n_in), W, b, activation, Z, out)
        elif l == 0:
            _dense(X, W, b, activation, out)
        else:
            _dense(_rows(acts, offsets[l - 1], m, n_in), W, b, activation, out)
    return _rows(acts, offsets[last], m, layout[last, 1])


# ---------------------------------------------------------------- loss
@_jit
def _loss_and_delta(Z, out, Y, activation, loss, delta):
    """Mean data loss (float64) of the batch; ``delta = dL/dZ`` for the output layer."""
    m, k = Z.shape
    dtype = Z.dtype.type
    one = dtype(1)
    scale = dtype(1.0 / m) if loss == CROSS_ENTROPY else dtype((2.0 if loss == MSE else 1.0) / (m * k))
    total = 0.0
    for i in range(m):
        if loss == CROSS_ENTROPY:  # -sum_j y log softmax(z) = lse * sum_j y - y . z
            top = Z[i, 0]
            for j in range(k):
                top = max(top, Z[i, j])
            s = 0.0
            y_sum = 0.0
            y_dot_z = 0.0
            for j in range(k):
                s += np.exp(np.float64(Z[i, j]) - top)
                y_sum += Y[i, j]
                y_dot_z += np.float64(Y[i, j]) * Z[i, j]
            total += (top + np.log(s)) * y_sum - y_dot_z
        elif loss == BINARY_CROSS_ENTROPY:  # log(1 + exp(z)) - y z
            for j in range(k):
                v = np.float64(Z[i, j])
                total += max(v, 0.0) + np.log1p(np.exp(-abs(v))) - Y[i, j] * v
        else:
            for j in range(k):
                e = np.float64(out[i, j]) - Y[i, j]
                total += e * e
        for j in range(k):
            d = (out[i, j] - Y[i, j]) * scale
            if loss == MSE and activation == SIGMOID:
                d *= out[i, j] * (one - out[i, j])
            delta[i, j] = d
    return total / m if loss == CROSS_ENTROPY else total / (m * k)


# ---------------------------------------------------------------- backward
@_jit
def _derivative(a, activation, one):
    """f'(z) from the activation ``a = f(z)``; ``one`` is 1 in the array dtype."""
    if activation == RELU:
        return one if a > 0 else one - one
    if activation == SIGMOID:
        return a * (one - a)
    if activation == TANH:
        return one - a * a
    return one


@_jit
def _delta_back(D, W, A_prev, activation, D_prev):
    """``D_prev = (D @ W.T) * f'(A_prev)``, with the current (not yet updated) ``W``."""
    m, n_out = D.shape
    n_in = W.shape[0]
    one = D.dtype.type(1)
    if m > SMALL_BATCH:
        np.dot(D, W.T, D_prev)
        for i in range(m):
            for k in range(n_in):
                D_prev[i, k] *= _derivative(A_prev[i, k], activation, one)
        return
    for i in range(m):
        for k in range(n_in):
            s = one - one
            for j in range(n_out):
                s += D[i, j] * W[k, j]
            D_prev[i, k] = s * _derivative(A_prev[i, k], activation, one)


@_jit
def _gradient(A_prev, D, W, b, dW, db, l2, lr, fused, row):
    """Weight gradient ``A_prev.T @ D + l2 W`` and bias gradient ``sum(D)``; with
    ``fused`` (plain SGD) applied at once, ``W -= lr * dW``, without storing ``dW``
    for small batches. Returns ``sum(W**2)`` of ``W`` before the step (float64)."""
    m, n_in = A_prev.shape
    n_out = D.shape[1]
    squares = 0.0
    large = m > SMALL_BATCH
    if large:
        np.dot(A_prev.T, D, dW)
    for k in range(n_in):
        if large:
            g = dW[k]
        else:
            g = row[:n_out]
            g[:] = 0
            for i in range(m):
                a = A_prev[i, k]
                if a != 0:
                    for j in range(n_out):
                        g[j] += a * D[i, j]
        for j in range(n_out):
            w = W[k, j]
            squares += np.float64(w) * w
            if fused:
                W[k, j] = w - lr * (g[j] + l2 * w)
            else:
                dW[k, j] = g[j] + l2 * w
    for j in range(n_out):
        s = D.dtype.type(0)
        for i in range(m):
            s += D[i, j]
        if fused:
            b[j] -= lr * s
        else:
            db[j] = s
    return squares


@_jit
def _step(layout, params, grads, X, Y, loss, l2, lr, fused, acts, offsets, z, deltas, row):
    """Forward, loss, backward for one batch; with ``fused`` the SGD update too.
    Returns the batch loss (data + L2 term of the weights before the step)."""
    m, last = X.shape[0], layout.shape[0] - 1
    out = _forward(layout, params, X, acts, offsets, z)
    n_out = layout[last, 1]
    D = _rows(deltas, offsets[last], m, n_out)
    value = _loss_and_delta(_rows(z, 0, m, n_out), out, Y, layout[last, 2], loss, D)
    if not np.isfinite(value):
        return value
    squares = 0.0
    for l in range(last, -1, -1):
        n_in, n_out = layout[l, 0], layout[l, 1]
        W, b = _weights(layout, params, l), _bias(layout, params, l)
        dW, db = _weights(layout, grads, l), _bias(layout, grads, l)
        D = _rows(deltas, offsets[l], m, n_out)
        if l == 0:
            squares += _gradient(X, D, W, b, dW, db, l2, lr, fused, row)
        else:
            A_prev = _rows(acts, offsets[l - 1], m, n_in)
            _delta_back(D, W, A_prev, layout[l - 1, 2], _rows(deltas, offsets[l - 1], m, n_in))
            squares += _gradient(A_prev, D, W, b, dW, db, l2, lr, fused, row)
    return value + 0.5 * l2 * squares


@_jit
def _update(params, grads, state, optimizer, hyper, lr, step):
    lr = params.dtype.type(lr)
    if optimizer == SGD:
        for p in range(params.shape[0]):
            params[p] -= lr * grads[p]


@_jit
def _train_epoch(layout, params, grads, state, X, Y, order, batch_size, loss, l2, optimizer, hyper, lrs, step,
                 acts, offsets, z, deltas, xb, yb, row):
    n = X.shape[0]
    n_batches = (n + batch_size - 1) // batch_size
    dtype = params.dtype.type
    l2 = dtype(l2)
    fused = optimizer == SGD
    total = 0.0
    for i in range(n_batches):
        lr = dtype(lrs[i])
        if n_batches == 1:
            value = _step(layout, params, grads, X, Y, loss, l2, lr, fused, acts, offsets, z, deltas, row)
        else:
            start = i * batch_size
            m = min(batch_size, n - start)
            for r in range(m):
                xb[r, :] = X[order[start + r]]
                yb[r, :] = Y[order[start + r]]
            value = _step(layout, params, grads, xb[:m], yb[:m], loss, l2, lr, fused,
                          acts, offsets, z, deltas, row)
        if not np.isfinite(value):
            return value, i
        if not fused:
            _update(params, grads, state, optimizer, hyper, lr, step + i)
        total += value
    return total / n_batches, n_batches


# ---------------------------------------------------------------- public kernels
def forward(layout, params, X, ws):
    """Output activations (m, n_out), a view into ``ws``."""
    return _forward(layout, params, X, ws.acts, ws.offsets, ws.z)


def evaluate(layout, params, X, Y, loss, ws):
    """``(mean data loss without the L2 term, output activations (m, n_out))``."""
    out = _forward(layout, params, X, ws.acts, ws.offsets, ws.z)
    m, n_out = out.shape
    delta = ws.deltas[: m * n_out].reshape(m, n_out)
    return _loss_and_delta(ws.z[: m * n_out].reshape(m, n_out), out, Y, layout[-1, 2], loss, delta), out


@_jit
def _l2_penalty(layout, params, l2):
    squares = 0.0
    for l in range(layout.shape[0]):
        for w in params[layout[l, 3] : layout[l, 4]]:
            squares += np.float64(w) * w
    return 0.5 * l2 * squares


def l2_penalty(layout, params, l2):
    """``l2 / 2 * sum(W**2)`` over every weight matrix (biases excluded)."""
    return _l2_penalty(layout, params, float(l2)) if l2 else 0.0


def backward(layout, params, X, Y, loss, l2, ws, grads):
    """Forward and backward pass: fills ``grads`` (L2 included), returns the batch loss."""
    return _step(layout, params, grads, X, Y, loss, params.dtype.type(l2), params.dtype.type(0), False,
                 ws.acts, ws.offsets, ws.z, ws.deltas, ws.row)


def update(params, grads, state, optimizer, hyper, lr, step):
    """One optimizer step on ``params`` in place; ``step`` counts from 0."""
    _update(params, grads, state, optimizer, hyper, float(lr), step)


def train_epoch(layout, params, grads, state, X, Y, order, batch_size, loss, l2,
                optimizer, hyper, lrs, step, ws):
    """One epoch in compiled code, same contract as the reference's ``train_epoch``."""
    return _train_epoch(layout, params, grads, state, X, Y, order, batch_size, loss, float(l2), optimizer,
                        hyper, lrs, step, ws.acts, ws.offsets, ws.z, ws.deltas, ws.x, ws.y, ws.row)
