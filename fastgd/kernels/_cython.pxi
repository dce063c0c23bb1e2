# The Cython kernels, included by each build of the extension (_cython.pyx,
# _cython_avx2.pyx): one source, compiled once per instruction set.
#
# Cython backend: the kernels compiled ahead of time, with a whole epoch in one call.
#
# Same contracts and numerics as the reference (``_numpy.py``) and the Numba
# backend, over the same flat buffers (``_workspace.Workspace``). Matrix
# products go through BLAS (``scipy.linalg.cython_blas``); bias + activation,
# softmax + log-sum-exp, loss + output delta, and gradient + L2 + SGD step are
# each one pass. One source for float32 and float64 (the fused type
# ``floating``); every loop runs without the GIL. Losses accumulate in float64.

import numpy as np

from libc.math cimport exp, fabs, isfinite, log, log1p, sqrt, tanh
from libc.stdint cimport int64_t
from scipy.linalg.cython_blas cimport dgemm, sgemm

from ._workspace import Workspace

ctypedef fused floating:
    float
    double

# The codes of fastgd._codes (a test checks that they agree).
cdef enum Activation:
    IDENTITY = 0
    RELU = 1
    SIGMOID = 2
    TANH = 3
    SOFTMAX = 4

cdef enum Loss:
    CROSS_ENTROPY = 0
    BINARY_CROSS_ENTROPY = 1
    MSE = 2

cdef enum Optimizer:
    SGD = 0
    MOMENTUM = 1
    ADAM = 2
    RMSPROP = 3
    ADAGRAD = 4
    LINE_SEARCH = 5

cdef enum:
    SMALL_BATCH = 16  # rows: a batch of at most this many goes backward by loops over the rows of W

CODES = {"IDENTITY": IDENTITY, "RELU": RELU, "SIGMOID": SIGMOID, "TANH": TANH, "SOFTMAX": SOFTMAX,
         "CROSS_ENTROPY": CROSS_ENTROPY, "BINARY_CROSS_ENTROPY": BINARY_CROSS_ENTROPY, "MSE": MSE, "SGD": SGD,
         "MOMENTUM": MOMENTUM, "ADAM": ADAM, "RMSPROP": RMSPROP, "ADAGRAD": ADAGRAD, "LINE_SEARCH": LINE_SEARCH}


# ---------------------------------------------------------------- BLAS on row-major matrices
cdef inline void _gemm(char transa, char transb, int m, int n, int k, floating* a, int lda,
                       floating* b, int ldb, floating* c, int ldc) noexcept nogil:
    """Column-major ``c = op(a) @ op(b)``, ``c`` of shape (m, n)."""
    cdef floating one = 1, zero = 0
    if floating is float:
        sgemm(&transa, &transb, &m, &n, &k, &one, a, &lda, b, &ldb, &zero, c, &ldc)
    else:
        dgemm(&transa, &transb, &m, &n, &k, &one, a, &lda, b, &ldb, &zero, c, &ldc)


cdef inline void _matmul(floating* A, int m, int k, floating* B, int n, floating* C) noexcept nogil:
    """Row-major ``C (m, n) = A (m, k) @ B (k, n)``."""
    _gemm(c'N', c'N', n, m, k, B, n, A, k, C, n)


cdef inline void _matmul_tn(floating* A, int m, int k, floating* D, int n, floating* C) noexcept nogil:
    """Row-major ``C (k, n) = A.T @ D`` for ``A (m, k)``, ``D (m, n)``."""
    _gemm(c'N', c'T', n, k, m, D, n, A, k, C, n)


cdef inline void _matmul_nt(floating* D, int m, int n, floating* W, int k, floating* R) noexcept nogil:
    """Row-major ``R (m, k) = D @ W.T`` for ``D (m, n)``, ``W (k, n)``."""
    _gemm(c'T', c'N', k, m, n, W, n, D, n, R, k)


# ---------------------------------------------------------------- element-wise, one row at a time
cdef inline void _activate_row(floating* z, const floating* b, Py_ssize_t n, int activation) noexcept nogil:
    """Hidden activation in place: ``z = f(z + b)``."""
    cdef Py_ssize_t j
    cdef floating v
    if activation == RELU:
        for j in range(n):
            v = z[j] + b[j]
            z[j] = v if v > 0 else 0
    elif activation == SIGMOID:
        for j in range(n):
            z[j] = 1 / (1 + exp(-(z[j] + b[j])))
    elif activation == TANH:
        for j in range(n):
            z[j] = tanh(z[j] + b[j])
    else:
        for j in range(n):
            z[j] += b[j]


cdef inline floating _derivative(floating a, int activation) noexcept nogil:
    """f'(z) from the activation ``a = f(z)``."""
    if activation == RELU:
        return 1 if a > 0 else 0
    if activation == SIGMOID:
        return a * (1 - a)
    if activation == TANH:
        return 1 - a * a
    return 1


cdef inline double _output_row(floating* z, const floating* b, floating* out, Py_ssize_t n,
                               int activation) noexcept nogil:
    """Output layer of one row: logits ``z += b``, ``out = f(z)``; returns log-sum-exp(z) for softmax."""
    cdef Py_ssize_t j
    cdef floating top, total = 0
    for j in range(n):
        z[j] += b[j]
    if activation == SOFTMAX:
        top = z[0]
        for j in range(1, n):
            if z[j] > top:
                top = z[j]
        for j in range(n):
            out[j] = exp(z[j] - top)
            total += out[j]
        for j in range(n):
            out[j] /= total
        return <double>top + log(<double>total)
    if activation == SIGMOID:
        for j in range(n):
            out[j] = 1 / (1 + exp(-z[j]))
    else:
        for j in range(n):
            out[j] = z[j]
    return 0.0


cdef inline double _loss_row(const floating* z, const floating* out, const floating* y, double lse, Py_ssize_t n,
                             int activation, int loss, floating scale, floating* delta) noexcept nogil:
    """Loss of one row (float64, summed over its outputs); ``delta = dL/dz``."""
    cdef Py_ssize_t j
    cdef double total = 0, y_sum = 0, y_dot_z = 0, v, e
    cdef floating d
    if loss == CROSS_ENTROPY:  # -sum_j y log softmax(z) = lse(z) sum_j y - y . z
        for j in range(n):
            y_sum += y[j]
            y_dot_z += <double>y[j] * z[j]
        total = lse * y_sum - y_dot_z
    elif loss == BINARY_CROSS_ENTROPY:  # log(1 + exp(z)) - y z
        for j in range(n):
            v = z[j]
            total += (v if v > 0 else 0) + log1p(exp(-fabs(v))) - y[j] * v
    else:
        for j in range(n):
            e = <double>out[j] - y[j]
            total += e * e
    for j in range(n):
        d = (out[j] - y[j]) * scale
        if loss == MSE and activation == SIGMOID:
            d *= out[j] * (1 - out[j])
        delta[j] = d
    return total


# ---------------------------------------------------------------- passes over a batch
cdef void _forward(const int64_t[:, ::1] layout, floating* params, floating* X, int m, floating* acts,
                   const int64_t[::1] offsets, floating* z, double* lse) noexcept nogil:
    """Forward pass of the ``m`` rows of ``X``; outputs in the last block of ``acts``."""
    cdef Py_ssize_t l, i, last = layout.shape[0] - 1
    cdef int n_in, n_out, activation
    cdef floating* A
    cdef floating* Z
    cdef floating* bias
    for l in range(last + 1):
        n_in, n_out, activation = layout[l, 0], layout[l, 1], layout[l, 2]
        bias = params + layout[l, 4]
        A = X if l == 0 else acts + offsets[l]
        Z = z if l == last else acts + offsets[l + 1]
        _matmul(A, m, n_in, params + layout[l, 3], n_out, Z)
        for i in range(m):
            if l == last:
                lse[i] = _output_row(Z + i * n_out, bias, acts + offsets[l + 1] + i * n_out, n_out, activation)
            else:
                _activate_row(Z + i * n_out, bias, n_out, activation)


cdef double _loss(const int64_t[:, ::1] layout, floating* Y, int m, floating* acts, const int64_t[::1] offsets,
                  floating* z, double* lse, floating* deltas, int loss) noexcept nogil:
    """Mean data loss (float64) of the last forward pass; output deltas into ``deltas``."""
    cdef Py_ssize_t i, last = layout.shape[0] - 1
    cdef int k = layout[last, 1], activation = layout[last, 2]
    cdef double count = m if loss == CROSS_ENTROPY else m * k
    cdef floating scale = (2.0 if loss == MSE else 1.0) / count
    cdef double total = 0
    cdef floating* out = acts + offsets[last + 1]
    cdef floating* delta = deltas + offsets[last + 1]
    for i in range(m):
        total += _loss_row(z + i * k, out + i * k, Y + i * k, lse[i], k, activation, loss, scale, delta + i * k)
    return total / count


cdef inline void _bias_step(floating* b, floating* db, const floating* D, int m, Py_ssize_t n, floating lr,
                            bint fused) noexcept nogil:
    """``db = sum of the m rows of D``; ``fused``: ``b -= lr db``."""
    cdef Py_ssize_t i, j
    for j in range(n):
        db[j] = D[j]
    for i in range(1, m):
        for j in range(n):
            db[j] += D[i * n + j]
    if fused:
        for j in range(n):
            b[j] -= lr * db[j]


cdef double _backward(const int64_t[:, ::1] layout, floating* params, floating* grads, floating* X, int m,
                      floating* acts, const int64_t[::1] offsets, floating* deltas, floating l2, floating lr,
                      bint fused) noexcept nogil:
    """Backward pass; ``grads = dL/dparams`` (L2 included), or with ``fused`` the SGD step
    taken at once. Returns ``sum(W**2)`` before the step (float64)."""
    cdef Py_ssize_t l, i, k, j, n_in, n_out
    cdef int below
    cdef floating* W
    cdef floating* dW
    cdef floating* D
    cdef floating* D_prev
    cdef floating* A_prev
    cdef floating v, row_squares
    cdef double squares = 0
    for l in range(layout.shape[0] - 1, -1, -1):
        n_in, n_out = layout[l, 0], layout[l, 1]
        W, dW = params + layout[l, 3], grads + layout[l, 3]
        D = deltas + offsets[l + 1]
        A_prev = X if l == 0 else acts + offsets[l]
        if l > 0:  # delta of the layer below, with W before the step
            below = layout[l - 1, 2]
            D_prev = deltas + offsets[l]
            _matmul_nt(D, m, n_out, W, n_in, D_prev)
            for i in range(m * n_in):
                D_prev[i] *= _derivative(A_prev[i], below)
        _matmul_tn(A_prev, m, n_in, D, n_out, dW)
        # Sums of squares per row of W in the array dtype, rows added up in float64.
        for k in range(n_in):
            row_squares = 0
            if fused:
                for j in range(k * n_out, (k + 1) * n_out):
                    v = W[j]
                    row_squares += v * v
                    W[j] = v - lr * (dW[j] + l2 * v)
            else:
                for j in range(k * n_out, (k + 1) * n_out):
                    v = W[j]
                    row_squares += v * v
                    dW[j] += l2 * v
            squares += row_squares
        _bias_step(params + layout[l, 4], grads + layout[l, 4], D, m, n_out, lr, fused)
    return squares


cdef double _backward_rows(const int64_t[:, ::1] layout, floating* params, floating* grads, int m,
                           floating* acts, const int64_t[::1] offsets, floating* deltas, floating l2, floating lr,
                           bint fused, floating* g) noexcept nogil:
    """Backward pass of ``m <= SMALL_BATCH`` rows (input in block 0 of ``acts``) by loops over
    the rows of ``W``; with ``fused`` (plain SGD) the step is taken row by row, with no
    gradient array. For one row, the delta below comes out of the same pass over ``W``.
    Returns ``sum(W**2)`` before the step (float64)."""
    cdef Py_ssize_t l, i, k, j, n_in, n_out
    cdef int below
    cdef floating* A
    cdef floating* D
    cdef floating* d
    cdef floating* wk
    cdef floating* dwk
    cdef floating a, v, back, row_squares
    cdef double squares = 0
    for l in range(layout.shape[0] - 1, -1, -1):
        n_in, n_out = layout[l, 0], layout[l, 1]
        below = layout[l - 1, 2] if l > 0 else -1  # activation of the layer below; -1: the input
        A, D = acts + offsets[l], deltas + offsets[l + 1]
        for k in range(n_in):
            wk = params + layout[l, 3] + k * n_out
            dwk = grads + layout[l, 3] + k * n_out
            row_squares = 0
            if m == 1 and below >= 0:
                a = A[k]
                back = 0
                if fused:
                    for j in range(n_out):
                        v = wk[j]
                        back += v * D[j]
                        row_squares += v * v
                        wk[j] = v - lr * (a * D[j] + l2 * v)
                else:
                    for j in range(n_out):
                        v = wk[j]
                        back += v * D[j]
                        row_squares += v * v
                        dwk[j] = a * D[j] + l2 * v
                deltas[offsets[l] + k] = back * _derivative(a, below)
            elif m == 1:  # the first layer: no delta below
                a = A[k]
                if fused:
                    for j in range(n_out):
                        v = wk[j]
                        row_squares += v * v
                        wk[j] = v - lr * (a * D[j] + l2 * v)
                else:
                    for j in range(n_out):
                        v = wk[j]
                        row_squares += v * v
                        dwk[j] = a * D[j] + l2 * v
            else:
                for j in range(n_out):
                    g[j] = 0
                for i in range(m):
                    a = A[i * n_in + k]
                    d = D + i * n_out
                    if below >= 0:
                        back = 0
                        for j in range(n_out):
                            back += wk[j] * d[j]
                        deltas[offsets[l] + i * n_in + k] = back * _derivative(a, below)
                    for j in range(n_out):
                        g[j] += a * d[j]
                if fused:
                    for j in range(n_out):
                        v = wk[j]
                        row_squares += v * v
                        wk[j] = v - lr * (g[j] + l2 * v)
                else:
                    for j in range(n_out):
                        v = wk[j]
                        row_squares += v * v
                        dwk[j] = g[j] + l2 * v
            squares += row_squares
        _bias_step(params + layout[l, 4], grads + layout[l, 4], D, m, n_out, lr, fused)
    return squares


cdef double _step(const int64_t[:, ::1] layout, floating* params, floating* grads, floating* X, floating* Y,
                  int m, int loss, floating l2, floating lr, bint fused, floating* acts,
                  const int64_t[::1] offsets, floating* z, double* lse, floating* deltas,
                  floating* row) noexcept nogil:
    """Forward, loss and backward of one batch (with ``fused``, the SGD step too); returns
    the batch loss: data loss + L2 term of the weights before the step."""
    cdef Py_ssize_t i
    cdef double value, squares
    _forward(layout, params, X, m, acts, offsets, z, lse)
    value = _loss(layout, Y, m, acts, offsets, z, lse, deltas, loss)
    if not isfinite(value):
        return value
    if m <= SMALL_BATCH:
        for i in range(m * layout[0, 0]):  # the loops read the input from block 0
            acts[i] = X[i]
        squares = _backward_rows(layout, params, grads, m, acts, offsets, deltas, l2, lr, fused, row)
    else:
        squares = _backward(layout, params, grads, X, m, acts, offsets, deltas, l2, lr, fused)
    return value + 0.5 * l2 * squares


cdef void _clip(floating* g, Py_ssize_t n, double clip_value, double clip_norm) noexcept nogil:
    """Element-wise clip to ``clip_value``, then global-norm clip to ``clip_norm`` (0: off)."""
    cdef Py_ssize_t p
    cdef floating bound = <floating>clip_value, scale
    cdef double squares = 0, ratio
    if clip_value > 0:
        for p in range(n):
            g[p] = min(max(g[p], -bound), bound)
    if clip_norm > 0:
        for p in range(n):
            squares += <double>g[p] * g[p]
        ratio = clip_norm / (sqrt(squares) + 1e-6)
        if ratio < 1:
            scale = <floating>ratio
            for p in range(n):
                g[p] *= scale


cdef void _update(floating* params, const floating* grads, floating* state, Py_ssize_t n, int optimizer,
                  const double* hyper, double lr, Py_ssize_t step) noexcept nogil:
    """One optimizer step in place (rules in ``fastgd.optimizers``); ``state`` holds the
    optimizer's slots one after another, ``n`` values each; ``step`` counts from 0."""
    cdef Py_ssize_t p
    cdef floating rate = <floating>lr, g, b, w, v_hat, denominator
    cdef floating h0 = <floating>hyper[0], h1, h2, h3, decay, coupled, step_size, inverse_root
    cdef floating* s0 = state
    cdef floating* s1 = state + n
    cdef floating* s2 = state + 2 * n
    cdef bint flag
    if optimizer == SGD:  # momentum, dampening, nesterov, weight_decay
        h1, flag, h3 = <floating>hyper[1], hyper[2] != 0, <floating>hyper[3]
        if h0 == 0:
            for p in range(n):
                params[p] -= rate * (grads[p] + h3 * params[p])
        else:
            for p in range(n):
                g = grads[p] + h3 * params[p]
                b = g if step == 0 else h0 * s0[p] + (1 - h1) * g
                s0[p] = b
                params[p] -= rate * (g + h0 * b if flag else b)
    elif optimizer == MOMENTUM:  # beta
        for p in range(n):
            s0[p] = h0 * s0[p] + (1 - h0) * grads[p]
            params[p] -= rate * s0[p]
    elif optimizer == ADAM:  # beta1, beta2, eps, weight_decay, amsgrad, decoupled
        h1, h2, flag = <floating>hyper[1], <floating>hyper[2], hyper[4] != 0
        step_size = <floating>(lr / (1 - hyper[0] ** (step + 1)))
        inverse_root = <floating>(1 / sqrt(1 - hyper[1] ** (step + 1)))  # a product in the loop, not a division
        decay = <floating>(1 - lr * hyper[3]) if hyper[5] != 0 else 1
        coupled = 0 if hyper[5] != 0 else <floating>hyper[3]
        for p in range(n):
            w = params[p]
            g = grads[p] + coupled * w
            s0[p] = h0 * s0[p] + (1 - h0) * g
            s1[p] = h1 * s1[p] + (1 - h1) * g * g
            v_hat = s1[p]
            if flag:
                s2[p] = max(s2[p], v_hat)
                v_hat = s2[p]
            params[p] = w * decay - step_size * s0[p] / (<floating>sqrt(v_hat) * inverse_root + h2)
    elif optimizer == RMSPROP:  # alpha, eps, momentum, centered
        h1, h2, flag = <floating>hyper[1], <floating>hyper[2], hyper[3] != 0
        for p in range(n):
            g = grads[p]
            s0[p] = h0 * s0[p] + (1 - h0) * g * g
            if flag:
                s1[p] = h0 * s1[p] + (1 - h0) * g
                denominator = <floating>sqrt(s0[p] - s1[p] * s1[p]) + h1
            else:
                denominator = <floating>sqrt(s0[p]) + h1
            if h2 != 0:
                s2[p] = h2 * s2[p] + g / denominator
                params[p] -= rate * s2[p]
            else:
                params[p] -= rate * g / denominator
    elif optimizer == ADAGRAD:  # eps
        for p in range(n):
            g = grads[p]
            s0[p] += g * g
            params[p] -= rate * g / (<floating>sqrt(s0[p]) + h0)


cdef double _sum_of_squares(const int64_t[:, ::1] layout, const floating* params) noexcept nogil:
    """``sum(W**2)`` over every weight matrix (float64)."""
    cdef double squares = 0
    cdef Py_ssize_t l, p
    for l in range(layout.shape[0]):
        for p in range(layout[l, 3], layout[l, 4]):
            squares += <double>params[p] * params[p]
    return squares


cdef double _line_search(const int64_t[:, ::1] layout, floating* params, const floating* grads, floating* trial,
                         floating* X, floating* Y, int m, double value, int loss, double l2, const double* hyper,
                         double alpha, floating* acts, const int64_t[::1] offsets, floating* z, double* lse,
                         floating* deltas) noexcept nogil:
    """Armijo backtracking from ``alpha`` (``fastgd.BacktrackingLineSearch``); ``params``
    moves to the accepted point. Returns the accepted step."""
    cdef Py_ssize_t p, n = layout[layout.shape[0] - 1, 4] + layout[layout.shape[0] - 1, 1]
    cdef double rho = hyper[0], c = hyper[1], min_step = hyper[2], step = alpha, slope = 0, trial_value
    cdef floating rate
    for p in range(n):
        slope += <double>grads[p] * grads[p]
    while step >= min_step:
        rate = <floating>step
        for p in range(n):
            trial[p] = params[p] - rate * grads[p]
        _forward(layout, trial, X, m, acts, offsets, z, lse)
        trial_value = _loss(layout, Y, m, acts, offsets, z, lse, deltas, loss)
        if l2 != 0:
            trial_value += 0.5 * l2 * _sum_of_squares(layout, trial)
        if trial_value <= value - c * step * slope:
            for p in range(n):
                params[p] = trial[p]
            return step
        step *= rho
    rate = <floating>hyper[3]
    for p in range(n):
        params[p] -= rate * grads[p]
    return hyper[3]


cdef double _train_step(const int64_t[:, ::1] layout, floating* params, floating* grads, floating* state,
                        floating* X, floating* Y, int m, int loss, double l2, int optimizer, const double* hyper,
                        double* lr, Py_ssize_t step, double clip_value, double clip_norm, bint fused,
                        floating* acts, const int64_t[::1] offsets, floating* z, double* lse, floating* deltas,
                        floating* row) noexcept nogil:
    """One step of an epoch on the batch ``(X, Y)`` with learning rate ``*lr`` (a line search
    writes back the step it took); returns the batch loss (not finite: no step taken)."""
    cdef Py_ssize_t n = layout[layout.shape[0] - 1, 4] + layout[layout.shape[0] - 1, 1]
    cdef double value = _step(layout, params, grads, X, Y, m, loss, <floating>l2, <floating>lr[0], fused, acts,
                              offsets, z, lse, deltas, row)
    if fused or not isfinite(value):
        return value
    _clip(grads, n, clip_value, clip_norm)
    if optimizer == LINE_SEARCH:
        lr[0] = _line_search(layout, params, grads, state, X, Y, m, value, loss, l2, hyper, lr[0], acts, offsets,
                             z, lse, deltas)
    else:
        _update(params, grads, state, n, optimizer, hyper, lr[0], step)
    return value


# ---------------------------------------------------------------- public kernels
def workspace(layout, dtype, rows, batch_rows=0):
    return Workspace(layout, dtype, rows, batch_rows, input_rows=min(rows, SMALL_BATCH))


def forward(const int64_t[:, ::1] layout, floating[::1] params, const floating[:, ::1] X, ws):
    """Output activations (m, n_out), a view into ``ws``."""
    cdef floating[::1] acts = ws.acts, z = ws.z
    cdef double[::1] lse = ws.lse
    cdef const int64_t[::1] offsets = ws.offsets
    cdef int m = X.shape[0]
    with nogil:
        _forward(layout, &params[0], <floating*>&X[0, 0], m, &acts[0], offsets, &z[0], &lse[0])
    return _outputs(layout, ws, m)


def _outputs(layout, ws, m):
    """The output block of ``ws.acts`` as an (m, n_out) array."""
    last = layout.shape[0] - 1
    start, n = ws.offsets[last + 1], layout[last, 1]
    return ws.acts[start : start + m * n].reshape(m, n)


def evaluate(const int64_t[:, ::1] layout, floating[::1] params, const floating[:, ::1] X,
             const floating[:, ::1] Y, int loss, ws):
    """``(mean data loss without the L2 term, output activations (m, n_out))``."""
    cdef floating[::1] acts = ws.acts, z = ws.z, deltas = ws.deltas
    cdef double[::1] lse = ws.lse
    cdef const int64_t[::1] offsets = ws.offsets
    cdef int m = X.shape[0]
    cdef double value
    with nogil:
        _forward(layout, &params[0], <floating*>&X[0, 0], m, &acts[0], offsets, &z[0], &lse[0])
        value = _loss(layout, <floating*>&Y[0, 0], m, &acts[0], offsets, &z[0], &lse[0], &deltas[0], loss)
    return value, _outputs(layout, ws, m)


def l2_penalty(const int64_t[:, ::1] layout, floating[::1] params, double l2):
    """``l2 / 2 * sum(W**2)`` over every weight matrix (biases excluded)."""
    cdef double squares
    if l2 == 0:
        return 0.0
    with nogil:
        squares = _sum_of_squares(layout, &params[0])
    return 0.5 * l2 * squares


def backward(const int64_t[:, ::1] layout, floating[::1] params, const floating[:, ::1] X,
             const floating[:, ::1] Y, int loss, double l2, ws, floating[::1] grads):
    """Forward and backward pass: fills ``grads`` (L2 included), returns the batch loss."""
    cdef floating[::1] acts = ws.acts, z = ws.z, deltas = ws.deltas, row = ws.row
    cdef double[::1] lse = ws.lse
    cdef const int64_t[::1] offsets = ws.offsets
    cdef int m = X.shape[0]
    cdef double value
    with nogil:
        value = _step(layout, &params[0], &grads[0], <floating*>&X[0, 0], <floating*>&Y[0, 0], m, loss,
                      <floating>l2, 0, False, &acts[0], offsets, &z[0], &lse[0], &deltas[0], &row[0])
    return value


cdef floating* _slots(floating[:, ::1] state) noexcept:
    """The optimizer state's first slot (the others follow it), or NULL when it has none."""
    return &state[0, 0] if state.shape[0] > 0 else NULL


def clip(floating[::1] grads, double clip_value, double clip_norm):
    """Clip ``grads`` in place, as the reference's ``clip``."""
    with nogil:
        _clip(&grads[0], grads.shape[0], clip_value, clip_norm)


def update(floating[::1] params, floating[::1] grads, floating[:, ::1] state, int optimizer,
           const double[::1] hyper, double lr, Py_ssize_t step):
    """One optimizer step on ``params`` in place; ``step`` counts from 0."""
    cdef const double* h = &hyper[0] if hyper.shape[0] > 0 else NULL
    cdef floating* slots = _slots(state)
    with nogil:
        _update(&params[0], &grads[0], slots, params.shape[0], optimizer, h, lr, step)


def train_epoch(const int64_t[:, ::1] layout, floating[::1] params, floating[::1] grads, floating[:, ::1] state,
                const floating[:, ::1] X, const floating[:, ::1] Y, const int64_t[::1] order, int batch_size,
                int loss, double l2, int optimizer, const double[::1] hyper, double[::1] lrs, Py_ssize_t step,
                double clip_value, double clip_norm, ws):
    """One epoch in compiled code, same contract as the reference's ``train_epoch``."""
    cdef floating[::1] acts = ws.acts, z = ws.z, deltas = ws.deltas, row = ws.row
    cdef floating[:, ::1] xb = ws.x, yb = ws.y
    cdef double[::1] lse = ws.lse
    cdef const int64_t[::1] offsets = ws.offsets
    cdef Py_ssize_t n = X.shape[0], n_in = X.shape[1], n_out = Y.shape[1], i, r, j
    cdef Py_ssize_t n_batches = (n + batch_size - 1) // batch_size, start, m
    cdef const double* h = &hyper[0] if hyper.shape[0] > 0 else NULL
    cdef floating* slots = _slots(state)
    # Plain SGD without clipping takes its step inside the backward pass.
    cdef bint fused = optimizer == SGD and h[0] == 0 and h[3] == 0 and clip_value == 0 and clip_norm == 0
    cdef double value = 0, total = 0
    with nogil:
        for i in range(n_batches):
            if n_batches == 1:
                value = _train_step(layout, &params[0], &grads[0], slots, <floating*>&X[0, 0], <floating*>&Y[0, 0],
                                    n, loss, l2, optimizer, h, &lrs[i], step + i, clip_value, clip_norm, fused,
                                    &acts[0], offsets, &z[0], &lse[0], &deltas[0], &row[0])
            else:
                start = i * batch_size
                m = min(batch_size, n - start)
                for r in range(m):
                    for j in range(n_in):
                        xb[r, j] = X[order[start + r], j]
                    for j in range(n_out):
                        yb[r, j] = Y[order[start + r], j]
                value = _train_step(layout, &params[0], &grads[0], slots, &xb[0, 0], &yb[0, 0], m, loss, l2,
                                    optimizer, h, &lrs[i], step + i, clip_value, clip_norm, fused,
                                    &acts[0], offsets, &z[0], &lse[0], &deltas[0], &row[0])
            if not isfinite(value):
                break
            total += value
    if not isfinite(value):
        return value, i
    return total / n_batches, n_batches
