"""Reference backend: plain NumPy, written as the course notes write it.

Every compiled backend is checked and benchmarked against this one, so it is
meant to be read: forward, backward, update, and an epoch as a Python loop
over them. Buffers are allocated once per fit in a :class:`Workspace`; the
functions and their arguments are those of :class:`fastgd.kernels.protocol.Backend`.
Losses and other reductions accumulate in float64, whatever the model dtype:
this backend is the oracle.
"""

import numpy as np
import scipy.sparse
from scipy.special import erf, expit, xlogy

from .._codes import ACTIVATIONS, BAD_ROW, LOSSES, NOT_FINITE, OK, OPTIMIZERS
from .._layout import ACTIVATION, DROPOUT, N_IN, N_OUT, PARAMETER, floats, weight_views

(IDENTITY, RELU, SIGMOID, TANH, SOFTMAX, EXP, LEAKY_RELU, ELU, GELU, GELU_TANH, SILU,
 SOFTPLUS) = (ACTIVATIONS[name] for name in ("identity", "relu", "sigmoid", "tanh", "softmax", "exp", "leaky_relu",
                                             "elu", "gelu", "gelu_tanh", "silu", "softplus"))
CROSS_ENTROPY, BINARY_CROSS_ENTROPY, MSE, POISSON = (LOSSES[name] for name in ("cross_entropy", "binary_cross_entropy",
                                                                               "mse", "poisson"))
SGD, MOMENTUM, ADAM, RMSPROP, ADAGRAD, LINE_SEARCH = (OPTIMIZERS[name].code for name in (
    "sgd", "momentum", "adam", "rmsprop", "adagrad", "line_search"))
# The reference has no shuffle kernel: its orders are shuffled by NumPy's own RandomState.shuffle
# (the oracle of the compiled shuffles).
SHUFFLES = False
# Where a loss diverges or a batch weighs 0 the kernels return NaN or infinity, without a warning.
QUIET = dict(over="ignore", invalid="ignore", divide="ignore")


class Workspace:
    """Activations, deltas and scratch for up to ``rows`` rows per call, plus
    ``batch_rows`` rows that a mini-batch is gathered into; the outputs of every row whatever
    ``keep_outputs`` says. Read-only once made."""

    def __init__(self, layout, dtype, rows, batch_rows=0, sparse=False, keep_outputs=True):
        widths = [int(n) for n in layout[:, N_OUT]]
        fields = dict(
            layout=layout, dtype=np.dtype(dtype), rows=rows, batch_rows=batch_rows, sparse=sparse,
            keep_outputs=keep_outputs, activations=[int(code) for code in layout[:, ACTIVATION]],
            parameters=floats(layout, PARAMETER).tolist(), dropout=floats(layout, DROPOUT).tolist(),
            z=[np.empty((rows, n), dtype) for n in widths],  # z[l] = a[l - 1] @ W[l] + b[l]
            a=[np.empty((rows, n), dtype) for n in widths],  # a[l] = f(z[l])
            derivative=[np.empty((rows, n), dtype) for n in widths],  # f'(z[l])
            delta=[np.empty((rows, n), dtype) for n in widths],  # dL/dz[l]
            lse=np.empty(rows),  # softmax: log-sum-exp of each row of z, float64
            x=np.empty((0 if sparse else batch_rows, int(layout[0, N_IN])), dtype),  # sparse rows: not gathered
            y=np.empty((batch_rows, widths[-1]), dtype),
            w=np.empty(batch_rows),  # the gathered rows' weights, float64
            scratch=np.empty(int((layout[:, N_IN] * layout[:, N_OUT]).max()), dtype),  # one W's worth
        )
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise AttributeError("a workspace is read-only")

    def outputs(self, m):
        return self.a[-1][:m]

    def weights(self, buffer):
        """``(Ws, bs)``: per-layer views into ``buffer`` (``params``, ``grads`` or a trial point)."""
        views = weight_views(self.layout, buffer)
        return views[::2], views[1::2]


def workspace(layout, dtype, rows, batch_rows, sparse, keep_outputs):
    return Workspace(layout, dtype, rows, batch_rows, sparse, keep_outputs)


def _hyper(config):
    """The step configuration as a dict of Python numbers by name (Python numbers keep float32
    arithmetic in float32). The functions below that take ``h`` take this dict."""
    return dict(zip(config.dtype.names, config.tolist()[0]))


# ---------------------------------------------------------------- rules
# An activation is one function of ``(z, a, d, parameter)``: it writes a = f(z) into ``a`` and f'(z)
# into ``d``, as torch.nn.functional computes them; ``parameter`` is a leaky ReLU's slope or an ELU's
# alpha. Softmax is the one row-wise activation, and its derivative is the cross-entropy's business.
def _identity(z, a, d, parameter):
    np.copyto(a, z)
    d.fill(1)


def _relu(z, a, d, parameter):
    np.maximum(z, 0, out=a)
    np.greater(z, 0, out=d)


def _sigmoid(z, a, d, parameter):
    expit(z, out=a)
    np.subtract(1, a, out=d)
    d *= a


def _tanh(z, a, d, parameter):
    np.tanh(z, out=a)
    np.square(a, out=d)
    np.subtract(1, d, out=d)


def _exp(z, a, d, parameter):
    with np.errstate(over="ignore"):  # an overflowing output is a diverging fit, reported as such
        np.exp(z, out=a)
    np.copyto(d, a)


def _leaky_relu(z, a, d, parameter):
    d[...] = np.where(z > 0, 1, parameter)
    np.multiply(z, d, out=a)


def _elu(z, a, d, parameter):
    negative = z <= 0
    d[...] = np.where(negative, parameter * np.exp(np.minimum(z, 0)), 1)
    a[...] = np.where(negative, parameter * np.expm1(np.minimum(z, 0)), z)


def _gelu(z, a, d, parameter):
    cdf = 0.5 * (1 + erf(z * np.sqrt(0.5)))
    a[...] = z * cdf
    d[...] = cdf + z * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)


def _gelu_tanh(z, a, d, parameter):
    beta, kappa = np.sqrt(2 / np.pi), 0.044715
    t = np.tanh(beta * (z + kappa * z * z * z))
    a[...] = 0.5 * z * (1 + t)
    d[...] = 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * beta * (1 + 3 * kappa * z * z)


def _silu(z, a, d, parameter):
    s = expit(z)
    a[...] = z * s
    d[...] = s * (1 + z * (1 - s))


def _softplus(z, a, d, parameter):
    linear, e = z > 20, np.exp(np.minimum(z, 20))  # beta 1, threshold 20: linear above it
    a[...] = np.where(linear, z, np.log1p(e))
    d[...] = np.where(linear, 1, e / (e + 1))


ACTIVATE = {IDENTITY: _identity, RELU: _relu, SIGMOID: _sigmoid, TANH: _tanh, EXP: _exp, LEAKY_RELU: _leaky_relu,
            ELU: _elu, GELU: _gelu, GELU_TANH: _gelu_tanh, SILU: _silu, SOFTPLUS: _softplus}


def _softmax(z, out, lse):
    """Row-wise softmax; leaves ``lse = log(sum(exp(z)))`` of each row (float64), which the
    cross-entropy loss uses."""
    top = z.max(axis=1, keepdims=True)
    np.subtract(z, top, out=out)
    np.exp(out, out=out)
    total = out.sum(axis=1, keepdims=True)
    out /= total
    np.add(top[:, 0], np.log(total[:, 0], dtype=np.float64), out=lse)


# A loss is one function of the output pre-activations ``z``, activations ``a``, targets ``Y`` and (for a
# softmax output) each row's log-sum-exp ``lse``, all float64: each row's loss, summed over its outputs.
# Its output delta dL/dz is (a - y) times the loss's scale for every loss, each with its own output's
# activation (squared error also times f'(z)).
def _cross_entropy(z, a, Y, lse):  # -sum_j y log softmax(z) = lse * sum_j y - y . z
    return lse * Y.sum(axis=1) - np.einsum("ij,ij->i", Y, z)


def _binary_cross_entropy(z, a, Y, lse):  # -(y log sigmoid(z) + (1 - y) log(1 - sigmoid(z)))
    return (np.logaddexp(0, z) - Y * z).sum(axis=1)


def _mse(z, a, Y, lse):  # (a - y)**2
    return np.square(a - Y).sum(axis=1)


def _poisson(z, a, Y, lse):  # half the Poisson deviance of y against exp(z): y log y - y z - y + exp(z)
    return (xlogy(Y, Y) - Y * z - Y + np.exp(z)).sum(axis=1)


LOSS = {CROSS_ENTROPY: _cross_entropy, BINARY_CROSS_ENTROPY: _binary_cross_entropy, MSE: _mse, POISSON: _poisson}


# An optimizer is one function of ``(params, g, state, h, lr, step)``: it moves ``params`` in place along
# the gradient ``g`` (which it may overwrite) with the state arrays ``state`` (its slots, in the order of
# fastgd._codes.OPTIMIZERS), the hyper-parameters ``h`` by name, the learning rate and the step from 0.
def _sgd(params, g, state, h, lr, step):
    momentum = h["momentum"]
    if h["weight_decay"]:
        g += h["weight_decay"] * params
    if momentum and h["sutskever"]:  # the buffer holds steps: v = momentum v - lr g
        velocity = state[0]
        velocity *= momentum
        velocity -= lr * g
        if h["nesterov"]:
            params += momentum * velocity - lr * g
        else:
            params += velocity
        return
    if momentum:
        buffer = state[0]
        if step == 0:
            buffer[...] = g
        else:
            buffer *= momentum
            buffer += (1 - h["dampening"]) * g
        if h["nesterov"]:
            g += momentum * buffer
        else:
            g[...] = buffer
    params -= lr * g


def _momentum(params, g, state, h, lr, step):
    beta, velocity = h["beta"], state[0]
    velocity *= beta
    velocity += (1 - beta) * g
    params -= lr * velocity


def _adam(params, g, state, h, lr, step):
    beta1, beta2, weight_decay = h["beta1"], h["beta2"], h["weight_decay"]
    t = step + 1
    if weight_decay and h["decoupled"]:
        params *= 1 - lr * weight_decay
    elif weight_decay:
        g += weight_decay * params
    m, v = state[0], state[1]
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * g * g
    if h["amsgrad"]:
        np.maximum(state[2], v, out=state[2])
        v = state[2]
    if h["eps_hat"]:  # eps added to sqrt(v) before the bias correction, which goes into the rate
        params -= lr * np.sqrt(1 - beta2**t) / (1 - beta1**t) * m / (np.sqrt(v) + h["eps"])
    else:
        params -= lr / (1 - beta1**t) * m / (np.sqrt(v) / np.sqrt(1 - beta2**t) + h["eps"])


def _rmsprop(params, g, state, h, lr, step):
    alpha, momentum, squares = h["alpha"], h["momentum"], state[0]
    squares *= alpha
    squares += (1 - alpha) * g * g
    if h["centered"]:
        average = state[1]
        average *= alpha
        average += (1 - alpha) * g
        denominator = np.sqrt(squares - average * average) + h["eps"]
    else:
        denominator = np.sqrt(squares) + h["eps"]
    if momentum:
        buffer = state[2]
        buffer *= momentum
        buffer += g / denominator
        params -= lr * buffer
    else:
        params -= lr * g / denominator


def _adagrad(params, g, state, h, lr, step):
    squares = state[0]
    squares += g * g
    params -= lr * g / (np.sqrt(squares) + h["eps"])


UPDATE = {SGD: _sgd, MOMENTUM: _momentum, ADAM: _adam, RMSPROP: _rmsprop, ADAGRAD: _adagrad}


def _matrix(X):
    """``X`` as the reference computes with it: a dense array, or sparse rows (``fastgd.kernels.CSR``)
    as a SciPy CSR array over the same buffers."""
    if isinstance(X, np.ndarray) or scipy.sparse.issparse(X):
        return X
    return scipy.sparse.csr_array((X.data, X.indices, X.indptr), shape=X.shape)


# ---------------------------------------------------------------- dropout
# A training step drops each unit of a hidden layer with p > 0 in each row by a counter-based
# generator: a hash of the model's seed, the step, the row's place in its batch, the layer and the
# unit (splitmix64's mixing function, in uint64 arithmetic that wraps), so that every backend, and
# every split of the rows or units between threads, drops the same units.
_MIX = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(x):
    """splitmix64's mixing function of uint64 array ``x``."""
    x = (x ^ (x >> np.uint64(30))) * _MIX[0]
    x = (x ^ (x >> np.uint64(27))) * _MIX[1]
    return x ^ (x >> np.uint64(31))


def dropped(seed, step, rows, layer, units, p):
    """Which units of ``layer`` a step drops: bool ``(len(rows), units)`` for the rows at places ``rows``
    (int) of batch ``step``; a unit goes when its uniform number ``(hash >> 11) * 2**-53`` is below ``p``."""
    key = np.full(len(rows), seed, np.uint64) + np.uint64(step)
    key = _mix(_mix(_mix(key) + np.asarray(rows, np.uint64)) + np.uint64(layer))
    uniform = (_mix(key[:, None] + np.arange(units, dtype=np.uint64)) >> np.uint64(11)) * 2.0**-53
    return uniform < p


def _drop(a, d, p, layer, masks):
    """Inverted dropout of hidden layer ``layer`` in a training step: its dropped units' activations
    ``a`` and derivatives ``d`` become 0, the others are scaled by ``1 / (1 - p)`` (in the model dtype).
    ``masks``: ``(seed, step, first)``, the rows being places ``first`` on of the batch."""
    seed, step, first = masks
    gone = dropped(seed, step, np.arange(first, first + len(a)), layer, a.shape[1], p)
    scale = a.dtype.type(1 / (1 - p))
    np.copyto(a, np.where(gone, 0, a * scale))
    np.copyto(d, np.where(gone, 0, d * scale))


def forward(layout, params, X, ws, masks=None):
    """Output activations ``f(X @ W0 + b0 ...)`` into ``ws.outputs(m)``; ``masks`` (a training step's
    ``(seed, step, first)``, see ``_drop``) drops hidden units."""
    m = X.shape[0]
    Ws, bs = ws.weights(params)
    a = _matrix(X)
    for l, (W, b, activation) in enumerate(zip(Ws, bs, ws.activations)):
        z = ws.z[l][:m]
        if isinstance(a, np.ndarray):
            np.dot(a, W, out=z)
        else:  # sparse rows
            z[...] = a @ W
        z += b
        a = ws.a[l][:m]
        if activation == SOFTMAX:
            _softmax(z, a, ws.lse[:m])
        else:
            ACTIVATE[activation](z, a, ws.derivative[l][:m], ws.parameters[l])
            if masks is not None and ws.dropout[l]:
                _drop(a, ws.derivative[l][:m], ws.dropout[l], l, masks)


def _sum_of_squares(Ws):
    """``sum(W**2)`` over the matrices ``Ws``, float64."""
    return sum(float(np.vdot(W, W.astype(np.float64))) for W in Ws)


def l2_penalty(layout, params, l2):
    """``l2 / 2 * sum(W**2)`` over every weight matrix (biases excluded)."""
    return 0.5 * l2 * _sum_of_squares(weight_views(layout, params)[::2])


def _rows(weights, m):
    """What a batch of ``m`` rows with ``weights`` (empty: all 1) counts as: its total weight, a NumPy
    float64 (divided by, 0 gives NaN or infinity as in the compiled backends, not an error)."""
    return weights.sum() if len(weights) else m


def _data_loss(loss, z, a, Y, lse, weights):
    """Mean loss of a batch, in float64, from the output pre-activations ``z``, activations
    ``a`` and, for a softmax output, each row's log-sum-exp ``lse``; rows weighted by
    ``weights`` (empty: all 1), the mean taken over their total weight (and over the outputs,
    but for cross-entropy)."""
    z, a, Y = (v.astype(np.float64, copy=False) for v in (z, a, Y))
    with np.errstate(**QUIET):  # a diverging loss is reported, not warned about
        per_row = LOSS[loss](z, a, Y, lse)
        total = float(per_row @ weights) if len(weights) else float(per_row.sum())
        count = 1 if loss == CROSS_ENTROPY else Y.shape[1]
        return float(total / (count * _rows(weights, len(Y))))


def data_loss(layout, params, X, Y, weights, loss, ws, masks=None):
    """Mean data loss (no L2 term) on ``(X, Y)``, rows weighted by ``weights``; outputs in ``ws.outputs(m)``."""
    m = X.shape[0]
    forward(layout, params, X, ws, masks)
    return _data_loss(loss, ws.z[-1][:m], ws.outputs(m), Y, ws.lse[:m], weights)


def backward(layout, params, X, Y, weights, config, ws, grads):
    """Forward and backward pass: fills ``grads`` (L2 included), returns the batch loss."""
    with np.errstate(**QUIET):
        return _backward(layout, params, X, Y, weights, _hyper(config), ws, grads)


def _batch_l2(h, rows):
    """The L2 coefficient of a batch of ``rows`` (its total weight): ``l2``, or ``l2 / rows`` with
    ``l2_per_row``."""
    return float(h["l2"] / rows) if h["l2_per_row"] else h["l2"]


def _backward(layout, params, X, Y, weights, h, ws, grads, masks=None):
    m = X.shape[0]
    X = _matrix(X)
    rows = _rows(weights, m)
    loss, l2 = h["loss"], _batch_l2(h, rows)
    Ws, _ = ws.weights(params)
    dWs, dbs = ws.weights(grads)
    value = data_loss(layout, params, X, Y, weights, loss, ws, masks)
    a_out = ws.outputs(m)

    # Output delta dL/dz: (a - y) scaled by the loss's mean (and each row's weight), times f'(z) unless fused.
    delta = ws.delta[-1][:m]
    np.subtract(a_out, Y, out=delta)
    scale = 1.0 / rows if loss == CROSS_ENTROPY else (2.0 if loss == MSE else 1.0) / (rows * Y.shape[1])
    if len(weights):  # each row's scale in float64: in float32, weight and 1 / total may not exist apart
        delta *= (weights * scale)[:, None]
    else:
        delta *= scale
    if loss == MSE and ws.activations[-1] != IDENTITY:
        delta *= ws.derivative[-1][:m]

    for l in range(len(Ws) - 1, -1, -1):
        a_prev = X if l == 0 else ws.a[l - 1][:m]
        if isinstance(a_prev, np.ndarray):
            np.dot(a_prev.T, delta, out=dWs[l])
        else:  # sparse rows
            dWs[l][...] = a_prev.T @ delta
        delta.sum(axis=0, out=dbs[l])
        if l > 0:
            delta_prev = ws.delta[l - 1][:m]
            np.dot(delta, Ws[l].T, out=delta_prev)
            delta_prev *= ws.derivative[l - 1][:m]
            delta = delta_prev
    return value + _add_l2(params, grads, l2, ws)


def _add_l2(params, grads, l2, ws):
    """``grads += l2 W`` for every weight matrix ``W``; returns the L2 term ``l2 / 2 * sum(W**2)``."""
    if not l2:
        return 0.0
    Ws, _ = ws.weights(params)
    dWs, _ = ws.weights(grads)
    for W, dW in zip(Ws, dWs):
        l2_W = ws.scratch[: W.size].reshape(W.shape)
        np.multiply(W, l2, out=l2_W)
        dW += l2_W
    return 0.5 * l2 * _sum_of_squares(Ws)


def clip(grads, config):
    """Clip ``grads`` in place: each element to ``[-clip_value, clip_value]``, then the
    whole vector to L2 norm ``clip_norm`` as ``torch.nn.utils.clip_grad_norm_`` does
    (scaled by ``clip_norm / (norm + 1e-6)`` when that is below 1). 0 turns either off."""
    _clip(grads, _hyper(config))


def _clip(grads, h):
    if h["clip_value"]:
        np.clip(grads, -h["clip_value"], h["clip_value"], out=grads)
    if h["clip_norm"]:
        scale = h["clip_norm"] / (np.sqrt(float(np.vdot(grads, grads.astype(np.float64)))) + 1e-6)
        if scale < 1:
            grads *= scale


def update(params, grads, state, config, lr, step):
    """One optimizer step on ``params`` in place, ``step`` counting from 0 (the update
    rules are in :mod:`fastgd.optimizers`). The gradients are spent: ``grads`` is
    overwritten."""
    _update(params, grads, state, _hyper(config), lr, step)


def _update(params, grads, state, h, lr, step):
    if h["optimizer"] not in UPDATE:
        raise ValueError(f"config: no update rule for optimizer code {h['optimizer']}")
    UPDATE[h["optimizer"]](params, grads, state, h, lr, step)


def line_search(params, grads, value, trial_loss, trial, config, alpha):
    """Armijo backtracking step from ``alpha`` (see :class:`fastgd.BacktrackingLineSearch`):
    ``params`` moves to the accepted point; returns the accepted step.

    ``value`` is the loss at ``params``, ``trial_loss(point)`` the loss at another,
    ``trial`` a buffer like ``params``.
    """
    return _line_search(params, grads, value, trial_loss, trial, _hyper(config), alpha)


def _line_search(params, grads, value, trial_loss, trial, h, alpha):
    slope = float(np.vdot(grads, grads.astype(np.float64)))
    step = alpha
    while step >= h["min_step"]:
        np.subtract(params, step * grads, out=trial)
        if trial_loss(trial) <= value - h["c"] * step * slope:
            break
        step *= h["rho"]
    else:
        step = h["fallback_step"]
        np.subtract(params, step * grads, out=trial)
    params[...] = trial
    return step


def train_epoch(layout, params, grads, state, X, Y, weights, order, batch_size, config, lrs, step, ws):
    """One epoch of gradient descent over the rows of ``X`` in ``order``: ``(mean loss per row over the batches,
    steps taken, status)`` (the contract: :meth:`fastgd.kernels.protocol.Backend.train_epoch`)."""
    with np.errstate(**QUIET):  # divergence is reported, not warned about
        return _train_epoch(layout, params, grads, state, X, Y, weights, order, batch_size, config, lrs, step, ws)


def _train_epoch(layout, params, grads, state, X, Y, weights, order, batch_size, config, lrs, step, ws):
    h = _hyper(config)
    n = X.shape[0]
    X = _matrix(X)
    n_batches = -(-n // batch_size)
    total = 0.0
    for i in range(n_batches):
        if n_batches == 1:
            xb, yb, wb = X, Y, weights
        else:
            rows = order[i * batch_size : (i + 1) * batch_size]
            if rows.min() < 0 or rows.max() >= n:
                return np.nan, i, BAD_ROW
            xb = np.take(X, rows, axis=0, out=ws.x[: len(rows)]) if isinstance(X, np.ndarray) else X[rows]
            yb = np.take(Y, rows, axis=0, out=ws.y[: len(rows)])
            wb = np.take(weights, rows, out=ws.w[: len(rows)]) if len(weights) else weights
        masks = _masks(h, step + i, 0, ws)
        value = _backward(layout, params, xb, yb, wb, h, ws, grads, masks)
        if not np.isfinite(value):
            return value, i, NOT_FINITE
        _apply(layout, params, grads, state, xb, yb, wb, value, h, lrs, i, step, ws, masks)
        total += value * xb.shape[0]
    return total / n, n_batches, _status(params, state)


def _masks(h, step, first, ws):
    """The ``masks`` of a training step (``_drop``), or None in a network without dropout."""
    return (h["dropout_seed"], step, first) if any(ws.dropout) else None


def _apply(layout, params, grads, state, X, Y, weights, value, h, lrs, i, step, ws, masks):
    """Step ``i`` of an epoch once ``grads`` holds the gradient of the batch ``(X, Y)``, whose loss
    is ``value``: clipping, then the update (a line search writes back the step it took, its trial
    points' losses with the step's ``masks``)."""
    _clip(grads, h)
    if h["optimizer"] == LINE_SEARCH:
        def trial_loss(point):
            penalty = l2_penalty(layout, point, _batch_l2(h, _rows(weights, X.shape[0])))
            return data_loss(layout, point, X, Y, weights, h["loss"], ws, masks) + penalty

        lrs[i] = _line_search(params, grads, value, trial_loss, state[0], h, lrs[i])
    else:
        _update(params, grads, state, h, lrs[i], step + i)


def _status(params, state):
    return OK if np.isfinite(params).all() and np.isfinite(state).all() else NOT_FINITE


def batch_gradient(layout, params, grads, X, Y, weights, first, last, config, step, ws):
    """The gradient and data loss of rows ``first`` to ``last`` of the batch ``(X, Y)`` of step ``step``,
    taken over the whole batch's total weight (:meth:`fastgd.kernels.protocol.Backend.batch_gradient`)."""
    h, share = _hyper(config), slice(first, last)
    with np.errstate(**QUIET):
        part = float(_rows(weights[share], last - first) / _rows(weights, X.shape[0]))  # of the batch's weight
        if part == 0:
            grads[...] = 0
            return 0.0
        value = _backward(layout, params, _matrix(X)[share], Y[share], weights[share],
                          {**h, "l2": 0.0, "l2_per_row": False}, ws, grads, _masks(h, step, first, ws))
        grads *= part
    return value * part


def batch_step(layout, params, grads, parts, state, X, Y, weights, losses, config, lrs, step, ws):
    """The step of an epoch of one batch whose gradient came in shares
    (:meth:`fastgd.kernels.protocol.Backend.batch_step`)."""
    h = _hyper(config)
    value = 0.0
    for share_loss in losses:
        value += share_loss
    if not np.isfinite(value):
        return value, 0, NOT_FINITE
    for part in parts:
        grads += part
    with np.errstate(**QUIET):
        value += _add_l2(params, grads, _batch_l2(h, _rows(weights, X.shape[0])), ws)
        if not np.isfinite(value):
            return value, 0, NOT_FINITE
        _apply(layout, params, grads, state, X, Y, weights, value, h, lrs, 0, step, ws, _masks(h, step, 0, ws))
    return value, 1, _status(params, state)
