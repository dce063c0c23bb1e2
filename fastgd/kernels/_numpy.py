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
    ACTIVATION, ADAGRAD, ADAM, BINARY_CROSS_ENTROPY, CROSS_ENTROPY, IDENTITY, LINE_SEARCH, MOMENTUM, MSE, N_IN, N_OUT,
    RELU, RMSPROP, SGD, SIGMOID, SOFTMAX, TANH,
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


def clip(grads, clip_value, clip_norm):
    """Clip ``grads`` in place: each element to ``[-clip_value, clip_value]``, then the
    whole vector to L2 norm ``clip_norm`` as ``torch.nn.utils.clip_grad_norm_`` does
    (scaled by ``clip_norm / (norm + 1e-6)`` when that is below 1). 0 turns either off."""
    if clip_value:
        np.clip(grads, -clip_value, clip_value, out=grads)
    if clip_norm:
        scale = clip_norm / (np.sqrt(float(np.vdot(grads, grads))) + 1e-6)
        if scale < 1:
            grads *= scale


def update(params, grads, state, optimizer, hyper, lr, step):
    """One optimizer step on ``params`` in place, ``step`` counting from 0 (the update
    rules are in :mod:`fastgd.optimizers`). The gradients are spent: ``grads`` is
    overwritten."""
    g = grads
    if optimizer == SGD:
        momentum, dampening, nesterov, weight_decay = hyper
        if weight_decay:
            g += weight_decay * params
        if momentum:
            buffer = state[0]
            if step == 0:
                buffer[...] = g
            else:
                buffer *= momentum
                buffer += (1 - dampening) * g
            if nesterov:
                g += momentum * buffer
            else:
                g[...] = buffer
        params -= lr * g
    elif optimizer == MOMENTUM:
        (beta,) = hyper
        velocity = state[0]
        velocity *= beta
        velocity += (1 - beta) * g
        params -= lr * velocity
    elif optimizer == ADAM:
        beta1, beta2, eps, weight_decay, amsgrad, decoupled = hyper
        t = step + 1
        if weight_decay and decoupled:
            params *= 1 - lr * weight_decay
        elif weight_decay:
            g += weight_decay * params
        m, v = state[0], state[1]
        m *= beta1
        m += (1 - beta1) * g
        v *= beta2
        v += (1 - beta2) * g * g
        if amsgrad:
            np.maximum(state[2], v, out=state[2])
            v = state[2]
        denominator = np.sqrt(v) / np.sqrt(1 - beta2**t) + eps
        params -= lr / (1 - beta1**t) * m / denominator
    elif optimizer == RMSPROP:
        alpha, eps, momentum, centered = hyper
        squares = state[0]
        squares *= alpha
        squares += (1 - alpha) * g * g
        if centered:
            average = state[1]
            average *= alpha
            average += (1 - alpha) * g
            denominator = np.sqrt(squares - average * average) + eps
        else:
            denominator = np.sqrt(squares) + eps
        if momentum:
            buffer = state[2]
            buffer *= momentum
            buffer += g / denominator
            params -= lr * buffer
        else:
            params -= lr * g / denominator
    elif optimizer == ADAGRAD:
        (eps,) = hyper
        squares = state[0]
        squares += g * g
        params -= lr * g / (np.sqrt(squares) + eps)
    else:
        raise ValueError(f"optimizer: no update rule for code {optimizer}")


def line_search(params, grads, value, trial_loss, trial, hyper, alpha):
    """Armijo backtracking step from ``alpha`` (see :class:`fastgd.BacktrackingLineSearch`):
    ``params`` moves to the accepted point; returns the accepted step.

    ``value`` is the loss at ``params``, ``trial_loss(point)`` the loss at another,
    ``trial`` a buffer like ``params``.
    """
    rho, c, min_step, fallback_step = hyper
    slope = float(np.vdot(grads, grads))
    step = alpha
    while step >= min_step:
        np.subtract(params, step * grads, out=trial)
        if trial_loss(trial) <= value - c * step * slope:
            break
        step *= rho
    else:
        step = fallback_step
        np.subtract(params, step * grads, out=trial)
    params[...] = trial
    return step


def train_epoch(layout, params, grads, state, X, Y, order, batch_size, loss, l2,
                optimizer, hyper, lrs, step, clip_value, clip_norm, ws):
    """One epoch of gradient descent over the rows of ``X`` in ``order``.

    Batch ``i`` takes ``order[i*batch_size:(i+1)*batch_size]`` (the last may be
    short; one batch of every row takes ``X`` as it is) and learning rate
    ``lrs[i]`` (float64; a line search starts from it and writes back the step it
    took). Gradients are clipped (see :func:`clip`) before each update. Returns
    ``(mean batch loss, steps taken)``; the epoch stops early, before updating,
    at the first batch whose loss is not finite.
    """
    with np.errstate(over="ignore", invalid="ignore"):  # divergence is reported, not warned about
        return _train_epoch(layout, params, grads, state, X, Y, order, batch_size, loss, l2,
                            optimizer, hyper, lrs, step, clip_value, clip_norm, ws)


def _train_epoch(layout, params, grads, state, X, Y, order, batch_size, loss, l2, optimizer, hyper, lrs, step,
                 clip_value, clip_norm, ws):
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
        clip(grads, clip_value, clip_norm)
        if optimizer == LINE_SEARCH:
            def trial_loss(point):
                return evaluate(layout, point, xb, yb, loss, ws)[0] + l2_penalty(layout, point, l2)

            lrs[i] = line_search(params, grads, value, trial_loss, state[0], hyper, lrs[i])
        else:
            update(params, grads, state, optimizer, hyper, lrs[i], step + i)
        total += value
    return total / n_batches, n_batches
