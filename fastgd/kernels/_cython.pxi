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

from libc.math cimport exp, fabs, isfinite, log, log1p, tanh
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

cdef enum:
    SMALL_BATCH = 16  # rows: a batch of at most this many goes backward by loops over the rows of W

CODES = {"IDENTITY": IDENTITY, "RELU": RELU, "SIGMOID": SIGMOID, "TANH": TANH, "SOFTMAX": SOFTMAX,
         "CROSS_ENTROPY": CROSS_ENTROPY, "BINARY_CROSS_ENTROPY": BINARY_CROSS_ENTROPY, "MSE": MSE, "SGD": SGD}


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
    gradient array, and for one row the delta below comes out of the same pass.
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
            row_squares = 0
            if fused and m == 1 and below >= 0:
                a = A[k]
                back = 0
                for j in range(n_out):
                    v = wk[j]
                    back += v * D[j]
                    row_squares += v * v
                    wk[j] = v - lr * (a * D[j] + l2 * v)
                deltas[offsets[l] + k] = back * _derivative(a, below)
            elif fused and m == 1:  # the first layer: no delta below
                a = A[k]
                for j in range(n_out):
                    v = wk[j]
                    row_squares += v * v
                    wk[j] = v - lr * (a * D[j] + l2 * v)
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
                    dwk = grads + layout[l, 3] + k * n_out
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


cdef void _update(floating* params, const floating* grads, Py_ssize_t size, int optimizer,
                  floating lr) noexcept nogil:
    cdef Py_ssize_t p
    if optimizer == SGD:
        for p in range(size):
            params[p] -= lr * grads[p]


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
    cdef double squares = 0
    cdef Py_ssize_t l, p
    if l2 == 0:
        return 0.0
    with nogil:
        for l in range(layout.shape[0]):
            for p in range(layout[l, 3], layout[l, 4]):
                squares += <double>params[p] * params[p]
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


def update(floating[::1] params, floating[::1] grads, state, int optimizer, hyper, double lr, step):
    """One optimizer step on ``params`` in place; ``step`` counts from 0."""
    with nogil:
        _update(&params[0], &grads[0], params.shape[0], optimizer, <floating>lr)


def train_epoch(const int64_t[:, ::1] layout, floating[::1] params, floating[::1] grads, state,
                const floating[:, ::1] X, const floating[:, ::1] Y, const int64_t[::1] order, int batch_size,
                int loss, double l2, int optimizer, hyper, const double[::1] lrs, step, ws):
    """One epoch in compiled code, same contract as the reference's ``train_epoch``."""
    cdef floating[::1] acts = ws.acts, z = ws.z, deltas = ws.deltas, row = ws.row
    cdef floating[:, ::1] xb = ws.x, yb = ws.y
    cdef double[::1] lse = ws.lse
    cdef const int64_t[::1] offsets = ws.offsets
    cdef Py_ssize_t n = X.shape[0], n_in = X.shape[1], n_out = Y.shape[1], i, r, j
    cdef Py_ssize_t n_batches = (n + batch_size - 1) // batch_size, start, m
    cdef bint fused = optimizer == SGD
    cdef double value = 0, total = 0
    cdef floating lr
    with nogil:
        for i in range(n_batches):
            lr = <floating>lrs[i]
            if n_batches == 1:
                value = _step(layout, &params[0], &grads[0], <floating*>&X[0, 0], <floating*>&Y[0, 0], n, loss,
                              <floating>l2, lr, fused, &acts[0], offsets, &z[0], &lse[0], &deltas[0], &row[0])
            else:
                start = i * batch_size
                m = min(batch_size, n - start)
                for r in range(m):
                    for j in range(n_in):
                        xb[r, j] = X[order[start + r], j]
                    for j in range(n_out):
                        yb[r, j] = Y[order[start + r], j]
                value = _step(layout, &params[0], &grads[0], &xb[0, 0], &yb[0, 0], m, loss, <floating>l2, lr,
                              fused, &acts[0], offsets, &z[0], &lse[0], &deltas[0], &row[0])
            if not isfinite(value):
                break
            if not fused:
                _update(&params[0], &grads[0], params.shape[0], optimizer, lr)
            total += value
    if not isfinite(value):
        return value, i
    return total / n_batches, n_batches
