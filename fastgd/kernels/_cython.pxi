# The Cython kernels, included by each build of the extension (_cython.pyx,
# _cython_avx2.pyx, _cython_avx512.pyx): one source, compiled once per instruction set.
#
# Cython backend: the kernels compiled ahead of time, with a whole epoch in one call.
#
# The functions and arguments of fastgd.kernels.protocol.Backend, with the
# numerics of the reference (``_numpy.py``) and the Numba backend, over the
# same flat buffers (``_workspace.Workspace``). Matrix products go through
# register-blocked tiles of their own in the AVX2 and AVX-512 builds and BLAS
# (``scipy.linalg.cython_blas``) in the baseline build, matrix-vector products
# through BLAS in every build; bias + activation, softmax +
# log-sum-exp, loss + output delta, and gradient + L2 + SGD step are each one
# pass. Each activation, loss and optimizer update is one function of the
# rules section; the forward pass leaves f'(z) of every hidden unit in
# ``derivatives``, next to f(z) in ``acts``, and the backward pass multiplies
# the deltas by it. One source for float32 and float64 (the fused type
# ``floating``); every loop runs without the GIL. Losses accumulate in float64.

import numpy as np

from libc.math cimport M_2_SQRTPI, M_SQRT1_2, M_SQRT2, NAN, erf, exp, expm1, fabs, isfinite, log, log1p, sqrt, tanh
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.stdio cimport fprintf, stderr
from libc.stdlib cimport abort
from libc.string cimport memcpy
from scipy.linalg.cython_blas cimport dgemm, dgemv, sgemm, sgemv

from ._workspace import Workspace

ctypedef fused floating:
    float
    double

# FASTGD_BOUNDS_CHECK=1 at build time (setup.py) makes every block a kernel reads or writes
# checked against its buffer's length (see _at); off, the checks compile to nothing.
cdef extern from *:
    """
    #ifndef FASTGD_BOUNDS_CHECK
    #define FASTGD_BOUNDS_CHECK 0
    #endif
    """
    const bint BOUNDS_CHECK "FASTGD_BOUNDS_CHECK"

# The codes of fastgd._codes (a test checks that they agree).
cdef enum Activation:
    IDENTITY = 0
    RELU = 1
    SIGMOID = 2
    TANH = 3
    SOFTMAX = 4
    EXP = 5
    LEAKY_RELU = 6
    ELU = 7
    GELU = 8
    GELU_TANH = 9
    SILU = 10
    SOFTPLUS = 11

cdef enum Loss:
    CROSS_ENTROPY = 0
    BINARY_CROSS_ENTROPY = 1
    MSE = 2
    POISSON = 3

cdef enum Optimizer:
    SGD = 0
    MOMENTUM = 1
    ADAM = 2
    RMSPROP = 3
    ADAGRAD = 4
    LINE_SEARCH = 5

cdef enum Status:
    OK = 0
    NOT_FINITE = 1
    BAD_ROW = 2

cdef enum:
    MT_WORDS = 624  # an MT19937's key; the position of the next draw follows it in a generator
    MT_SHIFT = 397
    SMALL_BATCH = 16  # rows: a batch of at most this many goes backward by loops over the rows of W
    BLOCK_ROWS = 256  # rows: a larger batch goes through BLAS in blocks of this many, which stay in cache

# The step configuration, field for field the record fastgd.kernels.STEP (NumPy checks the
# types and offsets when the record is passed in; a test checks the names).
cdef packed struct Step:
    int64_t loss
    int64_t optimizer
    uint64_t dropout_seed
    double l2
    double l2_per_row
    double clip_value
    double clip_norm
    double momentum
    double dampening
    double nesterov
    double weight_decay
    double sutskever
    double beta
    double beta1
    double beta2
    double eps
    double amsgrad
    double decoupled
    double eps_hat
    double alpha
    double centered
    double rho
    double c
    double min_step
    double fallback_step

# Sparse rows (fastgd.kernels.CSR, checked when made): values (of the model dtype), column
# indices, row pointers, and the rows of the matrix to take (NULL: row i is row i). A kernel's
# input is dense rows X, or, where its ``sparse`` is not NULL, these.
cdef struct Sparse:
    const void* data
    const int64_t* indices
    const int64_t* indptr
    const int64_t* rows

# The dropout masks of a training pass (fastgd.kernels._numpy.dropped): the seed, the optimizer step,
# and the place in its batch of the pass's row 0. A pass that drops nothing takes NULL.
cdef struct Masks:
    uint64_t seed
    uint64_t step
    Py_ssize_t first

SHUFFLES = True  # it has a ``shuffle`` kernel (fastgd.kernels.protocol.Backend)
STEP_FIELDS = ("loss", "optimizer", "dropout_seed", "l2", "l2_per_row", "clip_value", "clip_norm", "momentum",
               "dampening", "nesterov", "weight_decay", "sutskever", "beta", "beta1", "beta2", "eps", "amsgrad",
               "decoupled", "eps_hat", "alpha", "centered", "rho", "c", "min_step", "fallback_step")
CODES = {"activations": {"identity": IDENTITY, "relu": RELU, "sigmoid": SIGMOID, "tanh": TANH, "softmax": SOFTMAX,
                         "exp": EXP, "leaky_relu": LEAKY_RELU, "elu": ELU, "gelu": GELU, "gelu_tanh": GELU_TANH,
                         "silu": SILU, "softplus": SOFTPLUS},
         "losses": {"cross_entropy": CROSS_ENTROPY, "binary_cross_entropy": BINARY_CROSS_ENTROPY, "mse": MSE,
                    "poisson": POISSON},
         "optimizers": {"sgd": SGD, "momentum": MOMENTUM, "adam": ADAM, "rmsprop": RMSPROP, "adagrad": ADAGRAD,
                        "line_search": LINE_SEARCH},
         "status": {"OK": OK, "NOT_FINITE": NOT_FINITE, "BAD_ROW": BAD_ROW}}


# ---------------------------------------------------------------- blocks of buffers
cdef inline floating* _at(const floating[::1] buffer, Py_ssize_t offset, Py_ssize_t n,
                          const char* what) noexcept nogil:
    """The block of ``n`` values at ``offset`` of ``buffer``, as a pointer: every pointer the kernels
    follow comes from here. The bounds-checked build stops the process, saying which block of which
    buffer, when the block does not lie inside the buffer."""
    if BOUNDS_CHECK and (offset < 0 or n < 0 or offset + n > buffer.shape[0]):
        fprintf(stderr, b"fastgd bounds check: %s needs [%zd, %zd) of a buffer of %zd values\n", what, offset,
                offset + n, buffer.shape[0])
        abort()
    return <floating*>&buffer[offset] if n > 0 else NULL


cdef inline const double* _weights(const double[::1] weights, Py_ssize_t m) noexcept nogil:
    """The weights of ``m`` rows, as a pointer checked as :func:`_at` checks; NULL where none are
    given (``weights`` empty): every row weighs 1."""
    if weights.shape[0] == 0:
        return NULL
    if BOUNDS_CHECK and m > weights.shape[0]:
        fprintf(stderr, b"fastgd bounds check: weights of %zd rows; the buffer has %zd\n", m, weights.shape[0])
        abort()
    return &weights[0]


cdef inline double _rows(const double* w, Py_ssize_t m) noexcept nogil:
    """What ``m`` rows weighing ``w`` (NULL: 1 each) count as: their total weight."""
    cdef Py_ssize_t i
    cdef double total = 0
    if w == NULL:
        return m
    for i in range(m):
        total += w[i]
    return total


cdef inline floating* _slot(floating[:, ::1] state, Py_ssize_t k, Py_ssize_t n) noexcept nogil:
    """Row ``k`` of the optimizer state (``n`` values), checked as :func:`_at` checks."""
    if BOUNDS_CHECK and (k >= state.shape[0] or n > state.shape[1]):
        fprintf(stderr, b"fastgd bounds check: optimizer state slot %zd of %zd values; the state has %zd of %zd\n",
                k, n, state.shape[0], state.shape[1])
        abort()
    return &state[k, 0]


# ---------------------------------------------------------------- products
# Row-major products by register-blocked tiles, in the AVX2 and AVX-512 builds (BLAS in the
# baseline build). BLAS packs both operands of every call and tunes for large matrices; for a
# network's products (k of 64 to a few hundred) these tiles run at the large GEMM's rate: C in
# tiles of FASTGD_TILE_ROWS rows by two vectors of columns, held in registers over up to
# FASTGD_TILE_DEPTH terms, B packed a panel of two vectors' columns at a time. Each element of C is
# summed in the order of t whatever tile holds it, so that a product split between threads adds up
# as the whole does.
cdef extern from *:
    """
    #if defined(__AVX512F__)
    #define FASTGD_TILES 1
    #define FASTGD_TILE_VECTOR 64
    #define FASTGD_TILE_ROWS 8
    #elif defined(__AVX2__)
    #define FASTGD_TILES 1
    #define FASTGD_TILE_VECTOR 32
    #define FASTGD_TILE_ROWS 6
    #else
    #define FASTGD_TILES 0
    #define FASTGD_TILE_VECTOR 16
    #define FASTGD_TILE_ROWS 6
    #endif
    #define FASTGD_TILE_DEPTH 128
    /* The tile of C at (i, j): ROWS of its rows kept (rows past them read A's last), cols of its
       columns, over `depth` terms from t0; with add, C += the tile, else C = the tile. */
    #define FASTGD_TILE(V, T, LANES, ROWS)                                                        \\
        {                                                                                         \\
            V acc[FASTGD_TILE_ROWS][2], b0, b1, x;                                                \\
            T out[FASTGD_TILE_ROWS][2 * LANES];                                                   \\
            const T* ar[FASTGD_TILE_ROWS];                                                        \\
            for (r = 0; r < FASTGD_TILE_ROWS; r++) {                                              \\
                acc[r][0] = acc[r][1] = zero;                                                     \\
                ar[r] = a + (i + (r < ROWS ? r : ROWS - 1)) * a_row + t0 * a_col;                 \\
            }                                                                                     \\
            for (t = 0; t < depth; t++) {                                                         \\
                b0 = *(const V*)(panel + 2 * LANES * t), b1 = *(const V*)(panel + 2 * LANES * t + LANES); \\
                for (r = 0; r < FASTGD_TILE_ROWS; r++) {                                          \\
                    x = zero + ar[r][t * a_col];                                                  \\
                    acc[r][0] += x * b0, acc[r][1] += x * b1;                                     \\
                }                                                                                 \\
            }                                                                                     \\
            if (ROWS == FASTGD_TILE_ROWS && cols == 2 * LANES) {                                  \\
                for (r = 0; r < FASTGD_TILE_ROWS; r++) {                                          \\
                    V* row = (V*)(c + (i + r) * ldc + j);                                         \\
                    if (add) acc[r][0] += row[0], acc[r][1] += *(V*)((T*)row + LANES);            \\
                    row[0] = acc[r][0], *(V*)((T*)row + LANES) = acc[r][1];                       \\
                }                                                                                 \\
            } else {                                                                              \\
                for (r = 0; r < FASTGD_TILE_ROWS; r++)                                            \\
                    *(V*)out[r] = acc[r][0], *(V*)(out[r] + LANES) = acc[r][1];                   \\
                for (r = 0; r < ROWS; r++)                                                        \\
                    for (w = 0; w < cols; w++)                                                    \\
                        c[(i + r) * ldc + j + w] = out[r][w] + (add ? c[(i + r) * ldc + j + w] : 0); \\
            }                                                                                     \\
        }
    /* Row-major C (m, n), rows ldc apart, = A @ B, or C += A @ B with add; A's element (r, t) at
       a[r * a_row + t * a_col], B's (t, j) at b[t * b_row + j * b_col]. */
    #define FASTGD_PRODUCT(T, NAME)                                                               \\
    typedef T NAME##_vector __attribute__((vector_size(FASTGD_TILE_VECTOR), aligned(sizeof(T)))); \\
    static void NAME(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const T* a, Py_ssize_t a_row,      \\
                     Py_ssize_t a_col, const T* b, Py_ssize_t b_row, Py_ssize_t b_col, int add_to, \\
                     T* c, Py_ssize_t ldc) {                                                      \\
        enum { LANES = FASTGD_TILE_VECTOR / sizeof(T) };                                          \\
        const NAME##_vector zero = {0};                                                           \\
        T panel[FASTGD_TILE_DEPTH * 2 * LANES] __attribute__((aligned(64)));                      \\
        Py_ssize_t t0, t, depth, i, j, r, w, cols, rows;                                          \\
        int add;                                                                                  \\
        for (t0 = 0; t0 < k; t0 += FASTGD_TILE_DEPTH) {                                           \\
            depth = k - t0 < FASTGD_TILE_DEPTH ? k - t0 : FASTGD_TILE_DEPTH;                      \\
            add = add_to || t0 > 0;                                                               \\
            for (j = 0; j < n; j += 2 * LANES) {                                                  \\
                cols = n - j < 2 * LANES ? n - j : 2 * LANES;                                     \\
                for (t = 0; t < depth; t++)                                                       \\
                    for (w = 0; w < 2 * LANES; w++)                                               \\
                        panel[2 * LANES * t + w] = w < cols ? b[(t0 + t) * b_row + (j + w) * b_col] : 0; \\
                for (i = 0; i + FASTGD_TILE_ROWS <= m; i += FASTGD_TILE_ROWS)                     \\
                    FASTGD_TILE(NAME##_vector, T, LANES, FASTGD_TILE_ROWS)                        \\
                if (i < m) {                                                                      \\
                    rows = m - i;                                                                 \\
                    FASTGD_TILE(NAME##_vector, T, LANES, rows)                                    \\
                }                                                                                 \\
            }                                                                                     \\
        }                                                                                         \\
    }
    FASTGD_PRODUCT(float, fastgd_product_float)
    FASTGD_PRODUCT(double, fastgd_product_double)
    """
    const bint TILES "FASTGD_TILES"
    const Py_ssize_t TILE_VECTOR "FASTGD_TILE_VECTOR"
    const Py_ssize_t TILE_ROWS "FASTGD_TILE_ROWS"
    void _product_float "fastgd_product_float"(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const float* a,
                                               Py_ssize_t a_row, Py_ssize_t a_col, const float* b, Py_ssize_t b_row,
                                               Py_ssize_t b_col, int add, float* c, Py_ssize_t ldc) noexcept nogil
    void _product_double "fastgd_product_double"(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const double* a,
                                                 Py_ssize_t a_row, Py_ssize_t a_col, const double* b,
                                                 Py_ssize_t b_row, Py_ssize_t b_col, int add, double* c,
                                                 Py_ssize_t ldc) noexcept nogil


cdef inline bint _tiled(Py_ssize_t rows, Py_ssize_t columns, Py_ssize_t k, Py_ssize_t itemsize) noexcept nogil:
    """Whether a row-major product of ``rows`` x ``columns`` over ``k`` terms goes by the tiles: at
    least a panel's columns, four tiles of rows to share each packed panel, and 16 terms; a smaller
    one costs BLAS little more than the call."""
    return columns >= 2 * TILE_VECTOR // itemsize and rows >= 4 * TILE_ROWS and k >= 16


# ---------------------------------------------------------------- BLAS on row-major matrices
cdef inline void _gemm(char transa, char transb, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, floating* a,
                       Py_ssize_t lda, floating* b, Py_ssize_t ldb, floating beta, floating* c,
                       Py_ssize_t ldc) noexcept nogil:
    """Column-major ``c = op(a) @ op(b) + beta c``, ``c`` of shape (m, n), each matrix with its
    leading dimension. An outer product (``k == 1``) goes by a loop and a product with a side of one
    by gemv: gemm would pack its operands whole (and clear ``c``); else the tiles where they pay
    (``_tiled``), or gemm; with ``k == 0``, gemm clears ``c`` (gemv would return at once). BLAS
    takes each dimension as a C int: the checked entry keeps widths and rows below 2**31 (the
    bounds-checked build stops the process on one that is not)."""
    cdef int rows = <int>m, columns = <int>n, inner = <int>k, ld_a = <int>lda, ld_b = <int>ldb, ld_c = <int>ldc
    cdef floating one = 1
    cdef Py_ssize_t i, j, step_a = lda if transa == c'T' else 1, step_b = ldb if transb == c'N' else 1
    if BOUNDS_CHECK and (m != rows or n != columns or k != inner):
        fprintf(stderr, b"fastgd bounds check: a product of %zd x %zd by %zd x %zd is past BLAS's int\n", m, k, k, n)
        abort()
    if k == 1:
        for j in range(n):
            for i in range(m):
                c[i + j * ldc] = a[i * step_a] * b[j * step_b] + (beta * c[i + j * ldc] if beta != 0 else 0)
    elif m == 1 and k > 1:  # c (1, n) = op(a) (1, k) @ op(b): op(b).T @ a, a vector either way
        _gemv(c'T' if transb == c'N' else c'N', inner if transb == c'N' else columns,
              columns if transb == c'N' else inner, b, ld_b, a, <int>(lda if transa == c'N' else 1), beta, c, ld_c)
    elif n == 1 and k > 1:  # c (m, 1) = op(a) @ b, b a vector either way
        _gemv(transa, rows if transa == c'N' else inner, inner if transa == c'N' else rows, a, ld_a, b,
              <int>(1 if transb == c'N' else ldb), beta, c, 1)
    elif TILES and _tiled(n, m, k, sizeof(floating)) and (beta == 0 or beta == 1):  # c.T = op(b).T @ op(a).T
        if floating is float:
            _product_float(n, m, k, b, ldb if transb == c'N' else 1, 1 if transb == c'N' else ldb, a,
                           lda if transa == c'N' else 1, 1 if transa == c'N' else lda, beta != 0, c, ldc)
        else:
            _product_double(n, m, k, b, ldb if transb == c'N' else 1, 1 if transb == c'N' else ldb, a,
                            lda if transa == c'N' else 1, 1 if transa == c'N' else lda, beta != 0, c, ldc)
    elif floating is float:
        sgemm(&transa, &transb, &rows, &columns, &inner, &one, a, &ld_a, b, &ld_b, &beta, c, &ld_c)
    else:
        dgemm(&transa, &transb, &rows, &columns, &inner, &one, a, &ld_a, b, &ld_b, &beta, c, &ld_c)


cdef inline void _gemv(char trans, int m, int n, floating* a, int lda, floating* x, int incx, floating beta,
                       floating* y, int incy) noexcept nogil:
    """Column-major ``y = op(a) @ x + beta y`` for ``a`` of shape (m, n) as stored, ``x`` and ``y`` strided."""
    cdef floating one = 1
    if floating is float:
        sgemv(&trans, &m, &n, &one, a, &lda, x, &incx, &beta, y, &incy)
    else:
        dgemv(&trans, &m, &n, &one, a, &lda, x, &incx, &beta, y, &incy)


cdef inline void _matmul(floating* A, Py_ssize_t m, Py_ssize_t k, floating* B, Py_ssize_t n,
                         floating* C) noexcept nogil:
    """Row-major ``C (m, n) = A (m, k) @ B (k, n)``."""
    _gemm(c'N', c'N', n, m, k, B, n, A, k, 0, C, n)


cdef inline void _matmul_tn(floating* A, Py_ssize_t m, Py_ssize_t k, floating* D, Py_ssize_t n, floating beta,
                            floating* C) noexcept nogil:
    """Row-major ``C (k, n) = A.T @ D + beta C`` for ``A (m, k)``, ``D (m, n)``."""
    _gemm(c'N', c'T', n, k, m, D, n, A, k, beta, C, n)


cdef inline void _matmul_nt(floating* D, Py_ssize_t m, Py_ssize_t n, floating* W, Py_ssize_t k,
                            floating* R) noexcept nogil:
    """Row-major ``R (m, k) = D @ W.T`` for ``D (m, n)``, ``W (k, n)``."""
    _gemm(c'T', c'N', k, m, n, W, n, D, n, 0, R, k)


cdef inline void _sparse_product(const Sparse* X, Py_ssize_t start, Py_ssize_t m, const floating* W,
                                 Py_ssize_t n_out, floating* Z) noexcept nogil:
    """Row-major ``Z (m, n_out) = X[start:start + m] @ W`` for sparse rows ``X``."""
    cdef const floating* data = <const floating*>X.data
    cdef const floating* w
    cdef Py_ssize_t i, j, p, r
    cdef floating v
    for i in range(m):
        r = X.rows[start + i] if X.rows != NULL else start + i
        for j in range(n_out):
            Z[i * n_out + j] = 0
        for p in range(X.indptr[r], X.indptr[r + 1]):
            v, w = data[p], W + X.indices[p] * n_out
            for j in range(n_out):
                Z[i * n_out + j] += v * w[j]


cdef inline void _sparse_gradient(const Sparse* X, Py_ssize_t start, Py_ssize_t m, Py_ssize_t n_in,
                                  const floating* D, Py_ssize_t n_out, bint accumulate, floating* dW) noexcept nogil:
    """Row-major ``dW (n_in, n_out) = X[start:start + m].T @ D`` for sparse rows ``X`` (``accumulate``: ``+=``)."""
    cdef const floating* data = <const floating*>X.data
    cdef floating* g
    cdef Py_ssize_t i, j, p, r
    cdef floating v
    if not accumulate:
        for j in range(n_in * n_out):
            dW[j] = 0
    for i in range(m):
        r = X.rows[start + i] if X.rows != NULL else start + i
        for p in range(X.indptr[r], X.indptr[r + 1]):
            v, g = data[p], dW + X.indices[p] * n_out
            for j in range(n_out):
                g[j] += v * D[i * n_out + j]


# ---------------------------------------------------------------- rules
# An activation is one function of ``z`` that returns a = f(z) and writes f'(z) into ``d[0]``, as
# torch.nn.functional computes both (to the rounding); ``p`` is a leaky ReLU's negative slope or an
# ELU's alpha, unused by the others. Softmax is the one row-wise activation (:func:`_output_row`),
# its derivative the cross-entropy's business.
cdef inline floating _identity(floating z, floating p, floating* d) noexcept nogil:
    d[0] = 1
    return z


cdef inline floating _relu(floating z, floating p, floating* d) noexcept nogil:
    """``max(z, 0)``; a NaN gives 0."""
    d[0] = 1 if z > 0 else 0
    return z if z > 0 else 0


cdef inline floating _sigmoid(floating z, floating p, floating* d) noexcept nogil:
    cdef floating s = 1 / (1 + exp(-z))
    d[0] = s * (1 - s)
    return s


cdef inline floating _tanh(floating z, floating p, floating* d) noexcept nogil:
    cdef floating t = tanh(z)
    d[0] = 1 - t * t
    return t


cdef inline floating _exp(floating z, floating p, floating* d) noexcept nogil:
    cdef floating e = exp(z)
    d[0] = e
    return e


cdef inline floating _leaky_relu(floating z, floating p, floating* d) noexcept nogil:
    d[0] = 1 if z > 0 else p
    return z if z > 0 else z * p


cdef inline floating _elu(floating z, floating p, floating* d) noexcept nogil:
    if z > 0:
        d[0] = 1
        return z
    d[0] = p * exp(z)
    return p * expm1(z)


cdef inline floating _gelu(floating z, floating p, floating* d) noexcept nogil:
    """``z Phi(z)``, ``Phi`` the standard normal distribution function."""
    cdef floating cdf = 0.5 * (1 + erf(z * M_SQRT1_2))
    d[0] = cdf + z * exp(-0.5 * z * z) * (0.5 * M_2_SQRTPI * M_SQRT1_2)  # the density: times 1 / sqrt(2 pi)
    return z * cdf


cdef inline floating _gelu_tanh(floating z, floating p, floating* d) noexcept nogil:
    """The tanh approximation of :func:`_gelu`."""
    cdef double beta = 0.5 * M_2_SQRTPI * M_SQRT2, kappa = 0.044715  # beta = sqrt(2 / pi)
    cdef floating t = tanh(beta * (z + kappa * z * z * z))
    d[0] = 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * beta * (1 + 3 * kappa * z * z)
    return 0.5 * z * (1 + t)


cdef inline floating _silu(floating z, floating p, floating* d) noexcept nogil:
    cdef floating s = 1 / (1 + exp(-z))
    d[0] = s * (1 + z * (1 - s))
    return z * s


cdef inline floating _softplus(floating z, floating p, floating* d) noexcept nogil:
    """``log(1 + exp(z))`` (beta 1), linear above the threshold 20."""
    cdef floating e
    if z > 20:
        d[0] = 1
        return z
    e = exp(z)
    d[0] = e / (e + 1)
    return log1p(e)


# Inverted dropout of a hidden row: each unit's uniform number is a hash of its row's key and its index
# (splitmix64's mixing function, uint64 arithmetic that wraps); a dropped unit's activation and
# derivative become 0, the others' are scaled by 1 / (1 - p).
cdef inline uint64_t _mix(uint64_t x) noexcept nogil:
    """splitmix64's mixing function."""
    x = (x ^ (x >> 30)) * <uint64_t>0xBF58476D1CE4E5B9ULL
    x = (x ^ (x >> 27)) * <uint64_t>0x94D049BB133111EBULL
    return x ^ (x >> 31)


cdef inline uint64_t _row_key(const Masks* masks, Py_ssize_t place, Py_ssize_t l) noexcept nogil:
    """The key of the masks of layer ``l`` in the row at ``place`` of its batch."""
    return _mix(_mix(_mix(masks.seed + masks.step) + <uint64_t>place) + <uint64_t>l)


cdef inline void _drop_row(floating* a, floating* d, Py_ssize_t n, double p, floating scale,
                           uint64_t key) noexcept nogil:
    """Dropout of the ``n`` units of a row, activations ``a`` and derivatives ``d``, at rate ``p``
    (``scale`` = 1 / (1 - p) in the array dtype); unit ``j`` goes when ``(mix(key + j) >> 11) 2**-53 < p``."""
    cdef Py_ssize_t j
    for j in range(n):
        if <double>(_mix(key + <uint64_t>j) >> 11) * (1.0 / 9007199254740992.0) < p:
            a[j] = 0
            d[j] = 0
        else:
            a[j] *= scale
            d[j] *= scale


# A loss is one function of a row's logits ``z``, outputs ``out``, targets ``y`` and, for softmax
# outputs, ``lse = log(sum(exp(z)))``: its value summed over the ``n`` outputs, in float64.
cdef inline double _cross_entropy(const floating* z, const floating* out, const floating* y, double lse,
                                  Py_ssize_t n) noexcept nogil:
    """``-sum_j y log softmax(z) = lse(z) sum_j y - y . z``"""
    cdef Py_ssize_t j
    cdef double y_sum = 0, y_dot_z = 0
    for j in range(n):
        y_sum += y[j]
        y_dot_z += <double>y[j] * z[j]
    return lse * y_sum - y_dot_z


cdef inline double _binary_cross_entropy(const floating* z, const floating* out, const floating* y, double lse,
                                         Py_ssize_t n) noexcept nogil:
    """``sum_j log(1 + exp(z)) - y z``"""
    cdef Py_ssize_t j
    cdef double total = 0, v
    for j in range(n):
        v = z[j]
        total += (v if v > 0 else 0) + log1p(exp(-fabs(v))) - y[j] * v
    return total


cdef inline double _mse(const floating* z, const floating* out, const floating* y, double lse,
                        Py_ssize_t n) noexcept nogil:
    """``sum_j (out - y)**2``"""
    cdef Py_ssize_t j
    cdef double total = 0, e
    for j in range(n):
        e = <double>out[j] - y[j]
        total += e * e
    return total


cdef inline double _poisson(const floating* z, const floating* out, const floating* y, double lse,
                            Py_ssize_t n) noexcept nogil:
    """``sum_j y log y - y z - y + exp(z)``"""
    cdef Py_ssize_t j
    cdef double total = 0, v, e
    for j in range(n):
        v, e = z[j], y[j]
        total += (e * log(e) if e > 0 else 0) - e * v - e + exp(v)
    return total


# An optimizer is one function that steps the ``n`` parameters ``params`` by their gradients
# ``grads`` with learning rate ``lr`` (rules in ``fastgd.optimizers``), ``state`` holding its slots,
# a row of ``n`` values each; ``step`` counts from 0. Each complement 1 - x of a hyper-parameter is
# taken in double and rounded once: 1 - float(0.999) is 5e-5 off.
cdef inline void _sgd(floating* params, const floating* grads, floating[:, ::1] state, const Step* c, double lr,
                      Py_ssize_t step, Py_ssize_t n) noexcept nogil:
    """SGD with momentum (dampened, Nesterov's, or Sutskever's: the buffer holds the steps) and weight decay."""
    cdef Py_ssize_t p
    cdef floating rate = <floating>lr, g, b, momentum = <floating>c.momentum, undamped = <floating>(1 - c.dampening)
    cdef floating weight_decay = <floating>c.weight_decay
    cdef floating* s0
    cdef bint nesterov = c.nesterov != 0
    if momentum == 0:
        for p in range(n):
            params[p] -= rate * (grads[p] + weight_decay * params[p])
    elif c.sutskever != 0:  # v = momentum v - lr g
        s0 = _slot(state, 0, n)
        for p in range(n):
            g = grads[p] + weight_decay * params[p]
            b = momentum * s0[p] - rate * g
            s0[p] = b
            params[p] += momentum * b - rate * g if nesterov else b
    else:
        s0 = _slot(state, 0, n)
        for p in range(n):
            g = grads[p] + weight_decay * params[p]
            b = g if step == 0 else momentum * s0[p] + undamped * g
            s0[p] = b
            params[p] -= rate * (g + momentum * b if nesterov else b)


cdef inline void _momentum(floating* params, const floating* grads, floating[:, ::1] state, const Step* c,
                           double lr, Py_ssize_t step, Py_ssize_t n) noexcept nogil:
    """An exponential average of the gradients, ``v = beta v + (1 - beta) g``, as the step."""
    cdef Py_ssize_t p
    cdef floating rate = <floating>lr, beta = <floating>c.beta, rest = <floating>(1 - c.beta)
    cdef floating* s0 = _slot(state, 0, n)
    for p in range(n):
        s0[p] = beta * s0[p] + rest * grads[p]
        params[p] -= rate * s0[p]


cdef inline void _adam(floating* params, const floating* grads, floating[:, ::1] state, const Step* c, double lr,
                       Py_ssize_t step, Py_ssize_t n) noexcept nogil:
    """Adam: AMSGrad's running maximum, decoupled weight decay (AdamW), and ``eps_hat`` (eps added to
    sqrt(v) before the bias correction, which goes into the rate) as ``c`` says."""
    cdef Py_ssize_t p
    cdef floating beta1 = <floating>c.beta1, beta2 = <floating>c.beta2, eps = <floating>c.eps
    cdef floating rest1 = <floating>(1 - c.beta1), rest2 = <floating>(1 - c.beta2), w, g, moment, v_hat
    cdef floating step_size = <floating>(lr / (1 - c.beta1 ** (step + 1)))
    cdef floating inverse_root = <floating>(1 / sqrt(1 - c.beta2 ** (step + 1)))  # the loop multiplies, not divides
    cdef floating decay = <floating>(1 - lr * c.weight_decay) if c.decoupled != 0 else 1
    cdef floating coupled = 0 if c.decoupled != 0 else <floating>c.weight_decay
    cdef bint amsgrad = c.amsgrad != 0
    cdef floating* s0 = _slot(state, 0, n)
    cdef floating* s1 = _slot(state, 1, n)
    cdef floating* s2 = _slot(state, 2, n) if amsgrad else NULL
    if c.eps_hat != 0:
        step_size = <floating>(lr * sqrt(1 - c.beta2 ** (step + 1)) / (1 - c.beta1 ** (step + 1)))
        inverse_root = 1
    for p in range(n):  # the values stored are kept: read back, they were not always forwarded (3x slower)
        w = params[p]
        g = grads[p] + coupled * w
        moment = beta1 * s0[p] + rest1 * g
        s0[p] = moment
        v_hat = beta2 * s1[p] + rest2 * g * g
        s1[p] = v_hat
        if amsgrad:
            v_hat = max(s2[p], v_hat)
            s2[p] = v_hat
        params[p] = w * decay - step_size * moment / (<floating>sqrt(v_hat) * inverse_root + eps)


cdef inline void _rmsprop(floating* params, const floating* grads, floating[:, ::1] state, const Step* c,
                          double lr, Py_ssize_t step, Py_ssize_t n) noexcept nogil:
    """RMSprop, centered or not, with momentum or not."""
    cdef Py_ssize_t p
    cdef floating rate = <floating>lr, alpha = <floating>c.alpha, eps = <floating>c.eps
    cdef floating momentum = <floating>c.momentum, rest = <floating>(1 - c.alpha), g, denominator
    cdef bint centered = c.centered != 0
    cdef floating* s0 = _slot(state, 0, n)
    cdef floating* s1 = _slot(state, 1, n) if centered else NULL
    cdef floating* s2 = _slot(state, 2, n) if momentum != 0 else NULL
    for p in range(n):
        g = grads[p]
        s0[p] = alpha * s0[p] + rest * g * g
        if centered:
            s1[p] = alpha * s1[p] + rest * g
            denominator = <floating>sqrt(s0[p] - s1[p] * s1[p]) + eps
        else:
            denominator = <floating>sqrt(s0[p]) + eps
        if momentum != 0:
            s2[p] = momentum * s2[p] + g / denominator
            params[p] -= rate * s2[p]
        else:
            params[p] -= rate * g / denominator


cdef inline void _adagrad(floating* params, const floating* grads, floating[:, ::1] state, const Step* c,
                          double lr, Py_ssize_t step, Py_ssize_t n) noexcept nogil:
    """Adagrad: each step over the root of the sum of the squares of its parameter's gradients."""
    cdef Py_ssize_t p
    cdef floating rate = <floating>lr, eps = <floating>c.eps, g
    cdef floating* s0 = _slot(state, 0, n)
    for p in range(n):
        g = grads[p]
        s0[p] += g * g
        params[p] -= rate * g / (<floating>sqrt(s0[p]) + eps)


# ---------------------------------------------------------------- element-wise, one row at a time
cdef inline double _parameter(const int64_t[:, ::1] layout, Py_ssize_t l) noexcept nogil:
    """The activation parameter of layer ``l``: the float64 whose bits its column 5 holds."""
    cdef double value
    memcpy(&value, &layout[l, 5], sizeof(double))
    return value


cdef inline double _dropout(const int64_t[:, ::1] layout, Py_ssize_t l) noexcept nogil:
    """The dropout rate of layer ``l``: the float64 whose bits its column 6 holds."""
    cdef double value
    memcpy(&value, &layout[l, 6], sizeof(double))
    return value


cdef inline Masks _masks(const Step* c, Py_ssize_t step, Py_ssize_t first) noexcept nogil:
    """The masks of optimizer step ``step`` for rows from place ``first`` of their batch."""
    cdef Masks masks
    masks.seed, masks.step, masks.first = c.dropout_seed, <uint64_t>step, first
    return masks


cdef inline void _activate(floating* z, const floating* b, floating* d, Py_ssize_t m, Py_ssize_t n,
                           Py_ssize_t stride, Py_ssize_t d_stride, int activation, floating p) noexcept nogil:
    """Hidden activation of ``m`` rows of ``n`` units in place, rows ``stride`` apart: ``z = f(z + b)``, and
    ``d = f'(z + b)``, rows ``d_stride`` apart (0: every row's into the first); ``p`` the activation's
    parameter. One loop per activation, the test outside it (vectorised)."""
    cdef Py_ssize_t i, j
    if activation == RELU:
        for i in range(m):
            for j in range(n):
                z[i * stride + j] = _relu(z[i * stride + j] + b[j], p, d + i * d_stride + j)
    elif activation == SIGMOID:
        for i in range(m):
            for j in range(n):
                z[i * stride + j] = _sigmoid(z[i * stride + j] + b[j], p, d + i * d_stride + j)
    elif activation == TANH:
        for i in range(m):
            for j in range(n):
                z[i * stride + j] = _tanh(z[i * stride + j] + b[j], p, d + i * d_stride + j)
    elif activation == LEAKY_RELU:
        for i in range(m):
            for j in range(n):
                z[i * stride + j] = _leaky_relu(z[i * stride + j] + b[j], p, d + i * d_stride + j)
    elif activation == ELU:
        for i in range(m):
            for j in range(n):
                z[i * stride + j] = _elu(z[i * stride + j] + b[j], p, d + i * d_stride + j)
    elif activation == GELU:
        for i in range(m):
            for j in range(n):
                z[i * stride + j] = _gelu(z[i * stride + j] + b[j], p, d + i * d_stride + j)
    elif activation == GELU_TANH:
        for i in range(m):
            for j in range(n):
                z[i * stride + j] = _gelu_tanh(z[i * stride + j] + b[j], p, d + i * d_stride + j)
    elif activation == SILU:
        for i in range(m):
            for j in range(n):
                z[i * stride + j] = _silu(z[i * stride + j] + b[j], p, d + i * d_stride + j)
    elif activation == SOFTPLUS:
        for i in range(m):
            for j in range(n):
                z[i * stride + j] = _softplus(z[i * stride + j] + b[j], p, d + i * d_stride + j)
    else:  # IDENTITY
        for i in range(m):
            for j in range(n):
                z[i * stride + j] = _identity(z[i * stride + j] + b[j], p, d + i * d_stride + j)


cdef inline void _times(floating* delta, const floating* d, Py_ssize_t n) noexcept nogil:
    """``delta *= d``: a delta times the derivatives the forward pass left."""
    cdef Py_ssize_t j
    for j in range(n):
        delta[j] *= d[j]


cdef inline double _output_row(floating* z, const floating* b, floating* out, Py_ssize_t n,
                               int activation) noexcept nogil:
    """Output layer of one row: logits ``z += b``, ``out = f(z)``; returns log-sum-exp(z) for softmax."""
    cdef Py_ssize_t j
    cdef floating top, total = 0, unused
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
            out[j] = _sigmoid(z[j], 0, &unused)
    elif activation == EXP:
        for j in range(n):
            out[j] = _exp(z[j], 0, &unused)
    else:
        for j in range(n):
            out[j] = z[j]
    return 0.0


cdef inline double _loss_row(const floating* z, const floating* out, const floating* y, double lse, Py_ssize_t n,
                             int activation, int loss, floating scale, floating* delta) noexcept nogil:
    """Loss of one row (float64, summed over its outputs); ``delta = dL/dz``."""
    cdef Py_ssize_t j
    cdef double total
    cdef floating d
    if loss == CROSS_ENTROPY:
        total = _cross_entropy(z, out, y, lse, n)
    elif loss == BINARY_CROSS_ENTROPY:
        total = _binary_cross_entropy(z, out, y, lse, n)
    elif loss == POISSON:
        total = _poisson(z, out, y, lse, n)
    else:
        total = _mse(z, out, y, lse, n)
    for j in range(n):
        d = (out[j] - y[j]) * scale
        if loss == MSE and activation == SIGMOID:  # times the sigmoid's derivative, as _sigmoid gives it
            d *= out[j] * (1 - out[j])
        delta[j] = d
    return total


# ---------------------------------------------------------------- passes over a batch
cdef void _forward_block(const int64_t[:, ::1] layout, const floating[::1] params, const floating[::1] X,
                         const Sparse* sparse, Py_ssize_t start, Py_ssize_t m, Py_ssize_t slot,
                         floating[::1] acts, floating[::1] derivatives, const int64_t[::1] offsets, floating[::1] z,
                         double[::1] lse, bint keep, const Masks* masks) noexcept nogil:
    """Forward pass of the ``m`` rows from row ``start`` of ``X`` (or ``sparse``): hidden
    activations and their derivatives from the start of their blocks, outputs, logits and
    log-sum-exp at row ``slot``. Without ``keep`` (no backward pass follows), every row's
    derivatives go to the first row of their block, and the rest of it is not touched. With
    ``masks`` (a training pass) hidden units drop, row ``i`` at place ``masks.first + start + i``."""
    cdef Py_ssize_t l, i, last = layout.shape[0] - 1, first, n_in, n_out, kept = m if keep else 1
    cdef int activation
    cdef floating p, scale = 1
    cdef double rate
    cdef bint drop
    cdef floating* A
    cdef floating* Z
    cdef floating* out
    cdef floating* bias
    cdef floating* d = NULL
    cdef double* row_lse = _at(lse, slot, m, b"lse")
    for l in range(last + 1):
        n_in, n_out, activation, p = layout[l, 0], layout[l, 1], layout[l, 2], <floating>_parameter(layout, l)
        rate = _dropout(layout, l)
        drop = masks != NULL and rate > 0
        if drop:
            scale = <floating>(1 / (1 - rate))
        bias = _at(params, layout[l, 4], n_out, b"b")
        first = slot * n_out if l == last else 0
        out = _at(acts, offsets[l + 1] + first, m * n_out, b"activations")
        Z = _at(z, first, m * n_out, b"logits") if l == last else out
        if l < last:
            d = _at(derivatives, offsets[l + 1], kept * n_out, b"derivatives")
        if l == 0 and sparse != NULL:
            _sparse_product(sparse, start, m, _at(params, layout[l, 3], n_in * n_out, b"W"), n_out, Z)
        else:
            A = _at(X, start * n_in, m * n_in, b"X") if l == 0 else _at(acts, offsets[l], m * n_in, b"activations")
            _matmul(A, m, n_in, _at(params, layout[l, 3], n_in * n_out, b"W"), n_out, Z)
        if l == last:
            for i in range(m):
                row_lse[i] = _output_row(Z + i * n_out, bias, out + i * n_out, n_out, activation)
            continue
        _activate(Z, bias, d, m, n_out, n_out, n_out if keep else 0, activation, p)
        for i in range(m if drop else 0):
            _drop_row(Z + i * n_out, d + (i * n_out if keep else 0), n_out, rate, scale,
                      _row_key(masks, masks.first + start + i, l))


cdef inline void _add_product(floating* product, const floating* a, const floating* W, Py_ssize_t n_in,
                              Py_ssize_t n_out) noexcept nogil:
    """``product += a @ W`` (``W`` row-major ``(n_in, n_out)``) by four rows of ``W`` per pass
    over ``product``; for one output, a dot product down the column."""
    cdef Py_ssize_t k = 0, j
    cdef floating a0, a1, a2, a3, total = 0
    if n_out == 1:
        for k in range(n_in):
            total += a[k] * W[k]
        product[0] += total
        return
    while k + 4 <= n_in:
        a0, a1, a2, a3 = a[k], a[k + 1], a[k + 2], a[k + 3]
        for j in range(n_out):
            product[j] += (a0 * W[k * n_out + j] + a1 * W[(k + 1) * n_out + j] + a2 * W[(k + 2) * n_out + j]
                           + a3 * W[(k + 3) * n_out + j])
        k += 4
    for k in range(k, n_in):
        a0 = a[k]
        for j in range(n_out):
            product[j] += a0 * W[k * n_out + j]


cdef void _forward_row(const int64_t[:, ::1] layout, const floating[::1] params, floating[::1] acts,
                       floating[::1] derivatives, const int64_t[::1] offsets, floating[::1] z, double[::1] lse,
                       Py_ssize_t first, const Masks* masks) noexcept nogil:
    """Forward pass of one row from layer ``first`` on (its input in block ``first`` of ``acts``),
    by loops over the rows of ``W`` (a BLAS call costs more than the product of one row); with
    ``masks``, hidden units drop (the row at place ``masks.first``)."""
    cdef Py_ssize_t l, k, j, n_in, n_out, last = layout.shape[0] - 1
    cdef double rate
    cdef const floating* A
    cdef const floating* W
    cdef floating* out
    cdef floating* product
    for l in range(first, last + 1):
        n_in, n_out = layout[l, 0], layout[l, 1]
        A, W = _at(acts, offsets[l], n_in, b"activations"), _at(params, layout[l, 3], n_in * n_out, b"W")
        out = _at(acts, offsets[l + 1], n_out, b"activations")
        product = _at(z, 0, n_out, b"logits") if l == last else out
        for j in range(n_out):
            product[j] = 0
        _add_product(product, A, W, n_in, n_out)
        if l == last:
            _at(lse, 0, 1, b"lse")[0] = _output_row(product, _at(params, layout[l, 4], n_out, b"b"), out, n_out,
                                                    layout[l, 2])
        else:
            _activate(product, _at(params, layout[l, 4], n_out, b"b"),
                      _at(derivatives, offsets[l + 1], n_out, b"derivatives"), 1, n_out, n_out, 0, layout[l, 2],
                      <floating>_parameter(layout, l))
            rate = _dropout(layout, l)
            if masks != NULL and rate > 0:
                _drop_row(product, _at(derivatives, offsets[l + 1], n_out, b"derivatives"), n_out, rate,
                          <floating>(1 / (1 - rate)), _row_key(masks, masks.first, l))


cdef void _forward(const int64_t[:, ::1] layout, const floating[::1] params, const floating[::1] X,
                   const Sparse* sparse, Py_ssize_t m, floating[::1] acts, floating[::1] derivatives,
                   const int64_t[::1] offsets, floating[::1] z, double[::1] lse, bint keep,
                   const Masks* masks) noexcept nogil:
    """Forward pass of the ``m`` rows of ``X`` (or ``sparse``) in blocks of ``BLOCK_ROWS``;
    outputs in the last block of ``acts``; ``keep`` and ``masks`` as :func:`_forward_block` takes them."""
    cdef Py_ssize_t block, start
    for block in range((m + BLOCK_ROWS - 1) // BLOCK_ROWS):
        start = block * BLOCK_ROWS
        _forward_block(layout, params, X, sparse, start, min(BLOCK_ROWS, m - start), start, acts, derivatives,
                       offsets, z, lse, keep, masks)


cdef inline double _count(const int64_t[:, ::1] layout, double rows, int loss) noexcept nogil:
    """What the loss of rows of total weight ``rows`` is divided by: that weight, times the outputs
    for losses that are means over every element."""
    return rows * (1 if loss == CROSS_ENTROPY else layout[layout.shape[0] - 1, 1])


cdef inline double _loss_base(const int64_t[:, ::1] layout, const double* w, Py_ssize_t m, int loss) noexcept nogil:
    """:func:`_count` of ``m`` rows weighted by ``w`` (NULL: 1 each)."""
    return _count(layout, _rows(w, m), loss)


cdef double _loss_rows(const int64_t[:, ::1] layout, const floating[::1] Y, const double* w, Py_ssize_t start,
                       Py_ssize_t m, Py_ssize_t slot, double count, floating[::1] acts, const int64_t[::1] offsets,
                       floating[::1] z, double[::1] lse, floating[::1] deltas, int loss) noexcept nogil:
    """Weighted sum (float64) of the losses of rows ``start`` to ``start + m`` of ``Y``, whose outputs the
    last forward pass left at row ``slot``, over ``count`` (``_loss_base`` of the whole batch); their
    output deltas into ``deltas``."""
    cdef Py_ssize_t i, last = layout.shape[0] - 1, k = layout[last, 1]
    cdef int activation = layout[last, 2]
    cdef double base = (2.0 if loss == MSE else 1.0) / count, value
    cdef floating scale = <floating>base
    cdef double total = 0
    cdef floating* out = _at(acts, offsets[last + 1] + slot * k, m * k, b"activations")
    cdef floating* delta = _at(deltas, offsets[last + 1] + slot * k, m * k, b"deltas")
    cdef floating* logits = _at(z, slot * k, m * k, b"logits")
    cdef floating* targets = _at(Y, start * k, m * k, b"Y")
    cdef double* row_lse = _at(lse, slot, m, b"lse")
    for i in range(m):
        if w != NULL:
            scale = <floating>(base * w[start + i])
        value = _loss_row(logits + i * k, out + i * k, targets + i * k, row_lse[i], k, activation, loss, scale,
                          delta + i * k)
        total += value * w[start + i] if w != NULL else value
    return total / count


cdef double _loss(const int64_t[:, ::1] layout, const floating[::1] Y, const double* w, Py_ssize_t m,
                  floating[::1] acts, const int64_t[::1] offsets, floating[::1] z, double[::1] lse,
                  floating[::1] deltas, int loss) noexcept nogil:
    """Mean data loss (float64) of the last forward pass, rows weighted by ``w`` (NULL: 1 each) and the
    mean taken over their total weight; output deltas into ``deltas``."""
    return _loss_rows(layout, Y, w, 0, m, 0, _loss_base(layout, w, m, loss), acts, offsets, z, lse, deltas, loss)


cdef void _backward_block(const int64_t[:, ::1] layout, floating[::1] params, floating[::1] grads,
                          const floating[::1] X, const Sparse* sparse, Py_ssize_t start, Py_ssize_t m,
                          Py_ssize_t slot, floating[::1] acts, floating[::1] derivatives, const int64_t[::1] offsets,
                          floating[::1] deltas, bint accumulate) noexcept nogil:
    """Backward pass of the block of ``m`` rows from row ``start`` that ``_forward_block`` left (output
    deltas set at row ``slot``): ``grads`` of the data loss, added to what they hold with ``accumulate``."""
    cdef Py_ssize_t l, i, n_in, n_out, j, last = layout.shape[0] - 1
    cdef floating* W
    cdef floating* dW
    cdef floating* db
    cdef floating* D
    cdef floating* D_prev
    cdef floating* A_prev
    cdef floating beta = 1 if accumulate else 0
    for l in range(last, -1, -1):
        n_in, n_out = layout[l, 0], layout[l, 1]
        W, dW = _at(params, layout[l, 3], n_in * n_out, b"W"), _at(grads, layout[l, 3], n_in * n_out, b"dW")
        D = _at(deltas, offsets[l + 1] + (slot * n_out if l == last else 0), m * n_out, b"deltas")
        if l > 0:  # delta of the layer below, with W before the step
            A_prev = _at(acts, offsets[l], m * n_in, b"activations")
            D_prev = _at(deltas, offsets[l], m * n_in, b"deltas")
            _matmul_nt(D, m, n_out, W, n_in, D_prev)
            _times(D_prev, _at(derivatives, offsets[l], m * n_in, b"derivatives"), m * n_in)
            _matmul_tn(A_prev, m, n_in, D, n_out, beta, dW)
        elif sparse != NULL:
            _sparse_gradient(sparse, start, m, n_in, D, n_out, accumulate, dW)
        else:
            _matmul_tn(_at(X, start * n_in, m * n_in, b"X"), m, n_in, D, n_out, beta, dW)
        db = _at(grads, layout[l, 4], n_out, b"db")
        if not accumulate:
            for j in range(n_out):
                db[j] = 0
        for i in range(m):
            for j in range(n_out):
                db[j] += D[i * n_out + j]


cdef double _finish(const int64_t[:, ::1] layout, floating[::1] params, floating[::1] grads, floating l2, floating lr,
                    bint fused) noexcept nogil:
    """After the backward passes: ``grads += l2 W``, or with ``fused`` the SGD step
    ``params -= lr (grads + l2 W)``. Returns ``sum(W**2)`` before the step (float64)."""
    cdef Py_ssize_t l, k, j, n_in, n_out
    cdef floating* W
    cdef floating* dW
    cdef floating* b
    cdef floating* db
    cdef floating v, row_squares
    cdef double squares = 0
    for l in range(layout.shape[0]):
        n_in, n_out = layout[l, 0], layout[l, 1]
        W, dW = _at(params, layout[l, 3], n_in * n_out, b"W"), _at(grads, layout[l, 3], n_in * n_out, b"dW")
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
        if fused:
            b, db = _at(params, layout[l, 4], n_out, b"b"), _at(grads, layout[l, 4], n_out, b"db")
            for j in range(n_out):
                b[j] -= lr * db[j]
    return squares


cdef inline void _bias_step(floating* b, floating* db, const floating* D, Py_ssize_t m, Py_ssize_t n, floating lr,
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


cdef inline double _column_step(floating* w, floating* dw, const floating* a, floating d, floating* a_delta,
                                const floating* a_derivative, Py_ssize_t n, floating l2, floating lr,
                                bint fused) noexcept nogil:
    """``_backward_rows`` for one row and a layer of one output (``W`` a column ``w`` of ``n``),
    vectorised over the column: ``dw = a d + l2 w`` (``fused``: ``w -= lr (a d + l2 w)``) and, with
    ``a_delta``, the delta below ``w d f'(z)``, ``a_derivative`` holding f'(z) of ``a = f(z)``.
    Returns ``sum(w**2)`` before the step, summed in the array dtype."""
    cdef Py_ssize_t k
    cdef floating squares = 0
    if a_delta != NULL:
        for k in range(n):
            a_delta[k] = w[k] * d * a_derivative[k]
    for k in range(n):
        squares += w[k] * w[k]
    if fused:
        for k in range(n):
            w[k] -= lr * (a[k] * d + l2 * w[k])
    else:
        for k in range(n):
            dw[k] = a[k] * d + l2 * w[k]
    return squares


cdef inline floating _sgd_back_row(floating* w, const floating* d, Py_ssize_t n, floating a, floating l2,
                                   floating lr, floating* squares) noexcept nogil:
    """``w -= lr (a d + l2 w)`` for one row of ``W``; returns ``w . d`` before the step (the delta
    below) and adds ``sum(w**2)`` to ``squares``."""
    cdef Py_ssize_t j
    cdef floating v, back = 0, total = 0
    for j in range(n):
        v = w[j]
        back += v * d[j]
        total += v * v
        w[j] = v - lr * (a * d[j] + l2 * v)
    squares[0] += total
    return back


cdef inline floating _gradient_back_row(const floating* w, floating* dw, const floating* d, Py_ssize_t n, floating a,
                                        floating l2, floating* squares) noexcept nogil:
    """``dw = a d + l2 w`` for one row of ``W``; returns ``w . d`` (the delta below) and adds ``sum(w**2)``
    to ``squares``."""
    cdef Py_ssize_t j
    cdef floating v, back = 0, total = 0
    for j in range(n):
        v = w[j]
        back += v * d[j]
        total += v * v
        dw[j] = a * d[j] + l2 * v
    squares[0] += total
    return back


cdef double _backward_rows(const int64_t[:, ::1] layout, floating[::1] params, floating[::1] grads, Py_ssize_t m,
                           floating[::1] acts, floating[::1] derivatives, const int64_t[::1] offsets,
                           floating[::1] deltas, floating l2, floating lr, bint fused, floating[::1] row,
                           Py_ssize_t lowest) noexcept nogil:
    """Backward pass of ``m <= SMALL_BATCH`` rows (input in block 0 of ``acts``) by loops over
    the rows of ``W``; with ``fused`` (plain SGD) the step is taken row by row, with no
    gradient array. For one row, the delta below comes out of the same pass over ``W``. The
    weights of layers below ``lowest`` are left as they are (their biases step).
    Returns ``sum(W**2)`` of the layers from ``lowest`` before the step (float64)."""
    cdef Py_ssize_t l, i, k, j, n_in, n_out
    cdef bint below, column
    cdef floating* A
    cdef floating* A_delta = NULL
    cdef floating* A_derivative = NULL
    cdef floating* D
    cdef floating* d
    cdef floating* W
    cdef floating* dW
    cdef floating* wk
    cdef floating* dwk
    cdef floating* g
    cdef floating a, v, back, row_squares
    cdef double squares = 0
    for l in range(layout.shape[0] - 1, -1, -1):
        n_in, n_out = layout[l, 0], layout[l, 1]
        below = l > 0  # a layer below, whose delta this one gives (else the input)
        A, D = _at(acts, offsets[l], m * n_in, b"activations"), _at(deltas, offsets[l + 1], m * n_out, b"deltas")
        if below:
            A_delta = _at(deltas, offsets[l], m * n_in, b"deltas")
            A_derivative = _at(derivatives, offsets[l], m * n_in, b"derivatives")
        else:
            A_delta = A_derivative = NULL
        W, dW = _at(params, layout[l, 3], n_in * n_out, b"W"), _at(grads, layout[l, 3], n_in * n_out, b"dW")
        g = _at(row, 0, n_out, b"row")
        column = m == 1 and n_out == 1
        if column and l >= lowest:
            squares += _column_step(W, dW, A, D[0], A_delta, A_derivative, n_in, l2, lr, fused)
        for k in range(n_in if l >= lowest and not column else 0):
            wk, dwk = W + k * n_out, dW + k * n_out
            row_squares = 0
            if m == 1 and below:
                if fused:
                    back = _sgd_back_row(wk, D, n_out, A[k], l2, lr, &row_squares)
                else:
                    back = _gradient_back_row(wk, dwk, D, n_out, A[k], l2, &row_squares)
                A_delta[k] = back * A_derivative[k]
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
                    if below:
                        back = 0
                        for j in range(n_out):
                            back += wk[j] * d[j]
                        A_delta[i * n_in + k] = back * A_derivative[i * n_in + k]
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
        _bias_step(_at(params, layout[l, 4], n_out, b"b"), _at(grads, layout[l, 4], n_out, b"db"), D, m, n_out, lr,
                   fused)
    return squares


cdef double _gradient_blocks(const int64_t[:, ::1] layout, floating[::1] params, floating[::1] grads,
                            const floating[::1] X, const Sparse* sparse, const floating[::1] Y, const double* w,
                            Py_ssize_t m, double count, int loss, floating[::1] acts, floating[::1] derivatives,
                            const int64_t[::1] offsets, floating[::1] z, double[::1] lse, floating[::1] deltas,
                            const Masks* masks, bint backward=True) noexcept nogil:
    """``grads`` of the data loss of the ``m`` rows ``(X, Y)`` (weighted by ``w``, NULL: 1 each) taken
    over ``count`` (``_loss_base`` of their batch), in blocks of ``BLOCK_ROWS`` rows, each block's
    outputs at the start of theirs; returns that loss (float64; not finite: stopped there, ``grads``
    unfinished). Without ``backward``, the loss only: ``grads`` is not touched. ``masks``: the
    dropout of a training step (NULL: none), ``X``'s row 0 at place ``masks.first``."""
    cdef Py_ssize_t block, start, r
    cdef double value = 0
    for block in range((m + BLOCK_ROWS - 1) // BLOCK_ROWS):
        start = block * BLOCK_ROWS
        r = min(BLOCK_ROWS, m - start)
        _forward_block(layout, params, X, sparse, start, r, 0, acts, derivatives, offsets, z, lse, backward, masks)
        value += _loss_rows(layout, Y, w, start, r, 0, count, acts, offsets, z, lse, deltas, loss)
        if not isfinite(value):
            return value
        if backward:
            _backward_block(layout, params, grads, X, sparse, start, r, 0, acts, derivatives, offsets, deltas,
                            start > 0)
    return value


cdef double _step(const int64_t[:, ::1] layout, floating[::1] params, floating[::1] grads, const floating[::1] X,
                  const Sparse* sparse, const floating[::1] Y, const double* w, Py_ssize_t m, int loss, floating l2,
                  floating lr, bint fused, floating[::1] acts, floating[::1] derivatives, const int64_t[::1] offsets,
                  floating[::1] z, double[::1] lse, floating[::1] deltas, floating[::1] row,
                  const Masks* masks) noexcept nogil:
    """Forward, loss and backward of one batch (with ``fused``, the SGD step too), hidden units
    dropping as ``masks`` says (NULL: none); returns the batch loss: data loss + L2 term of the
    weights before the step."""
    cdef Py_ssize_t i, p, r, n_in = layout[0, 0], n = m * n_in
    cdef double value, squares
    cdef const floating* x
    cdef const floating* data
    cdef floating* inputs
    if m > SMALL_BATCH:  # through BLAS, in blocks of rows; one step after the last
        value = _gradient_blocks(layout, params, grads, X, sparse, Y, w, m, _loss_base(layout, w, m, loss), loss,
                                 acts, derivatives, offsets, z, lse, deltas, masks)
        if not isfinite(value):
            return value
        squares = _finish(layout, params, grads, l2, lr, fused)
        return value + 0.5 * l2 * squares if l2 != 0 else value
    inputs = _at(acts, offsets[0], n, b"input block")  # the loops read the input from block 0
    if sparse == NULL:
        x = _at(X, 0, n, b"X")
        for i in range(n):
            inputs[i] = x[i]
    else:
        data = <const floating*>sparse.data
        for i in range(n):
            inputs[i] = 0
        for i in range(m):
            r = sparse.rows[i] if sparse.rows != NULL else i
            for p in range(sparse.indptr[r], sparse.indptr[r + 1]):
                inputs[i * n_in + sparse.indices[p]] += data[p]
    if m == 1:
        _forward_row(layout, params, acts, derivatives, offsets, z, lse, 0, masks)
    else:
        _forward(layout, params, X, sparse, m, acts, derivatives, offsets, z, lse, True, masks)
    value = _loss(layout, Y, w, m, acts, offsets, z, lse, deltas, loss)
    if not isfinite(value):
        return value
    squares = _backward_rows(layout, params, grads, m, acts, derivatives, offsets, deltas, l2, lr, fused, row, 0)
    return value + 0.5 * l2 * squares if l2 != 0 else value


cdef inline double _squares(const floating* values, Py_ssize_t n) noexcept nogil:
    """``sum(values[:n]**2)`` (float64; none for ``n <= 0``)."""
    cdef Py_ssize_t p
    cdef double squares = 0
    for p in range(n):
        squares += <double>values[p] * values[p]
    return squares


cdef inline void _clip_elements(floating* g, Py_ssize_t n, const Step* c) noexcept nogil:
    """Element-wise clip of ``g[:n]`` to ``clip_value`` (0: off)."""
    cdef Py_ssize_t p
    cdef floating bound = <floating>c.clip_value
    if c.clip_value > 0:
        for p in range(n):
            g[p] = min(max(g[p], -bound), bound)


cdef double _clip_values(floating[::1] grads, const Step* c, Py_ssize_t low, Py_ssize_t high) noexcept nogil:
    """:func:`_clip`'s element-wise clip of ``grads[low:high]``; returns their sum of squares (float64)
    where a norm clip follows (else 0)."""
    cdef floating* g = _at(grads, low, high - low, b"grads")
    _clip_elements(g, high - low, c)
    return _squares(g, high - low) if c.clip_norm > 0 else 0


cdef void _scale_to_norm(floating[::1] grads, const Step* c, double squares, Py_ssize_t low,
                         Py_ssize_t high) noexcept nogil:
    """:func:`_clip`'s norm clip of ``grads[low:high]``, ``squares`` the sum of squares of all ``grads``."""
    cdef Py_ssize_t p
    cdef floating* g = _at(grads, low, high - low, b"grads")
    cdef double ratio
    cdef floating scale
    if c.clip_norm > 0:
        ratio = c.clip_norm / (sqrt(squares) + 1e-6)
        if ratio < 1:
            scale = <floating>ratio
            for p in range(high - low):
                g[p] *= scale


cdef void _clip(floating[::1] grads, const Step* c) noexcept nogil:
    """Element-wise clip to ``clip_value``, then global-norm clip to ``clip_norm`` (0: off)."""
    _scale_to_norm(grads, c, _clip_values(grads, c, 0, grads.shape[0]), 0, grads.shape[0])


cdef void _update(floating[::1] parameters, const floating[::1] gradients, floating[:, ::1] state, const Step* c,
                  double lr, Py_ssize_t step) noexcept nogil:
    """One optimizer step in place, by the rule of ``c.optimizer`` (the rules section); ``step`` counts from 0."""
    cdef Py_ssize_t n = parameters.shape[0]
    cdef floating* params = _at(parameters, 0, n, b"params")
    cdef const floating* grads = _at(gradients, 0, n, b"grads")
    if c.optimizer == SGD:
        _sgd(params, grads, state, c, lr, step, n)
    elif c.optimizer == MOMENTUM:
        _momentum(params, grads, state, c, lr, step, n)
    elif c.optimizer == ADAM:
        _adam(params, grads, state, c, lr, step, n)
    elif c.optimizer == RMSPROP:
        _rmsprop(params, grads, state, c, lr, step, n)
    elif c.optimizer == ADAGRAD:
        _adagrad(params, grads, state, c, lr, step, n)


cdef double _sum_of_squares(const int64_t[:, ::1] layout, const floating[::1] params) noexcept nogil:
    """``sum(W**2)`` over every weight matrix (float64)."""
    cdef double squares = 0
    cdef Py_ssize_t l, size
    for l in range(layout.shape[0]):
        size = layout[l, 0] * layout[l, 1]
        squares += _squares(_at(params, layout[l, 3], size, b"W"), size)
    return squares


cdef double _line_search(const int64_t[:, ::1] layout, floating[::1] parameters, const floating[::1] gradients,
                         floating[::1] point, const floating[::1] X, const Sparse* sparse, const floating[::1] Y,
                         const double* w, Py_ssize_t m, double value, const Step* c, double l2, double alpha,
                         floating[::1] acts, floating[::1] derivatives, const int64_t[::1] offsets, floating[::1] z,
                         double[::1] lse, floating[::1] deltas, const Masks* masks) noexcept nogil:
    """Armijo backtracking from ``alpha`` (``fastgd.BacktrackingLineSearch``); ``parameters``
    move to the accepted point (tried in ``point``, with the step's dropout ``masks``). Returns the
    accepted step."""
    cdef Py_ssize_t p, n = parameters.shape[0]
    cdef floating* params = _at(parameters, 0, n, b"params")
    cdef const floating* grads = _at(gradients, 0, n, b"grads")
    cdef floating* trial = _at(point, 0, n, b"trial point")
    cdef double step = alpha, slope = 0, trial_value, count = _loss_base(layout, w, m, c.loss)
    cdef floating rate
    for p in range(n):
        slope += <double>grads[p] * grads[p]
    while step >= c.min_step:
        rate = <floating>step
        for p in range(n):
            trial[p] = params[p] - rate * grads[p]
        trial_value = _gradient_blocks(layout, point, point, X, sparse, Y, w, m, count, c.loss, acts, derivatives,
                                       offsets, z, lse, deltas, masks, False)
        if l2 != 0:
            trial_value += 0.5 * l2 * _sum_of_squares(layout, point)
        if trial_value <= value - c.c * step * slope:
            for p in range(n):
                params[p] = trial[p]
            return step
        step *= c.rho
    rate = <floating>c.fallback_step
    for p in range(n):
        params[p] -= rate * grads[p]
    return c.fallback_step


cdef inline double _batch_l2(const Step* c, double rows) noexcept nogil:
    """The L2 coefficient of a batch of ``rows`` (its total weight): ``l2``, or ``l2 / rows`` with ``l2_per_row``."""
    return c.l2 / rows if c.l2_per_row != 0 else c.l2


cdef double _train_step(const int64_t[:, ::1] layout, floating[::1] params, floating[::1] grads,
                        floating[:, ::1] state, const floating[::1] X, const Sparse* sparse, const floating[::1] Y,
                        const double* w, Py_ssize_t m, const Step* c, double* lr, Py_ssize_t step, bint fused,
                        floating[::1] acts, floating[::1] derivatives, const int64_t[::1] offsets, floating[::1] z,
                        double[::1] lse, floating[::1] deltas, floating[::1] row) noexcept nogil:
    """One step of an epoch on the batch ``(X, Y)`` with learning rate ``*lr`` (a line search
    writes back the step it took); returns the batch loss (not finite: no step taken)."""
    cdef double l2 = _batch_l2(c, _rows(w, m))
    cdef Masks masks = _masks(c, step, 0)
    cdef double value = _step(layout, params, grads, X, sparse, Y, w, m, c.loss, <floating>l2, <floating>lr[0], fused,
                              acts, derivatives, offsets, z, lse, deltas, row, &masks)
    if not fused and isfinite(value):
        _apply(layout, params, grads, state, X, sparse, Y, w, m, value, c, l2, lr, step, acts, derivatives, offsets,
               z, lse, deltas)
    return value


cdef void _apply(const int64_t[:, ::1] layout, floating[::1] params, floating[::1] grads, floating[:, ::1] state,
                 const floating[::1] X, const Sparse* sparse, const floating[::1] Y, const double* w, Py_ssize_t m,
                 double value, const Step* c, double l2, double* lr, Py_ssize_t step, floating[::1] acts,
                 floating[::1] derivatives, const int64_t[::1] offsets, floating[::1] z, double[::1] lse,
                 floating[::1] deltas) noexcept nogil:
    """A step once ``grads`` holds the gradient of the batch ``(X, Y)``, whose loss is ``value``:
    clipping, then the update with learning rate ``*lr`` (a line search writes back the step it took,
    its trial points dropping the units of optimizer step ``step``)."""
    cdef Masks masks
    _clip(grads, c)
    if c.optimizer == LINE_SEARCH:
        masks = _masks(c, step, 0)
        lr[0] = _line_search(layout, params, grads, state[0], X, sparse, Y, w, m, value, c, l2, lr[0], acts,
                             derivatives, offsets, z, lse, deltas, &masks)
    else:
        _update(params, grads, state, c, lr[0], step)


cdef inline bint _fused(const Step* c) noexcept nogil:
    """Whether plain SGD without clipping takes its step inside the backward pass."""
    return (c.optimizer == SGD and c.momentum == 0 and c.weight_decay == 0 and c.clip_value == 0
            and c.clip_norm == 0)


# The rank-1 SGD step of a block of W, four rows at a time: the four rows' vectors loaded, stepped,
# then stored, the deltas and the product read and written once for the four. Row by row, the
# product's stores and the next row's loads of W met at addresses 4 KB apart often enough (W3's
# rows are 4 KB long) that loads waited on unrelated stores: the same epoch ran up to 2x slower in
# one process than in the next, by where its buffers lay.
cdef extern from *:
    """
    #if defined(__AVX512F__)
    #define FASTGD_VECTOR 64
    #elif defined(__AVX__)
    #define FASTGD_VECTOR 32
    #else
    #define FASTGD_VECTOR 16
    #endif
    /* Rows k to k + G - 1 of W: each element v = w - lr * (a[k] * d + l2 * w), the product
       p += x[k] * v in row order (with x), the squares of the rows before the step into squares. */
    #define FASTGD_RANK1_ROWS(V, T, G)                                                        \\
        for (g = 0; g < G; g++) {                                                             \\
            s[g] = zero, ak[g] = a[k + g], xk[g] = x ? x[k + g] : 0, row[g] = W + (k + g) * width; \\
            row_squares[g] = 0;                                                               \\
        }                                                                                     \\
        for (j = 0; j + lanes <= width; j += lanes) {                                         \\
            dj = *(const V*)(d + j);                                                          \\
            pj = x ? *(const V*)(product + j) : dj;                                           \\
            for (g = 0; g < G; g++) v[g] = *(const V*)(row[g] + j);                           \\
            for (g = 0; g < G; g++) {                                                         \\
                s[g] += v[g] * v[g];                                                          \\
                v[g] = v[g] - lr * (ak[g] * dj + l2 * v[g]);                                  \\
                pj += xk[g] * v[g];                                                           \\
            }                                                                                 \\
            for (g = 0; g < G; g++) *(V*)(row[g] + j) = v[g];                                 \\
            if (x) *(V*)(product + j) = pj;                                                   \\
        }                                                                                     \\
        for (; j < width; j++) {                                                              \\
            for (g = 0; g < G; g++) {                                                         \\
                value = row[g][j];                                                            \\
                row_squares[g] += value * value;                                              \\
                value = value - lr * (ak[g] * d[j] + l2 * value);                             \\
                row[g][j] = value;                                                            \\
                if (x) product[j] += xk[g] * value;                                           \\
            }                                                                                 \\
        }                                                                                     \\
        for (g = 0; g < G; g++) {                                                             \\
            for (i = 0; i < lanes; i++) row_squares[g] += s[g][i];                            \\
            squares += row_squares[g];                                                        \\
        }
    #define FASTGD_RANK1_STEP(T, NAME)                                                        \\
    typedef T NAME##_vector __attribute__((vector_size(FASTGD_VECTOR), aligned(sizeof(T)))); \\
    static double NAME(T* W, Py_ssize_t rows, Py_ssize_t width, const T* a, const T* d, const T* x, \\
                       T* product, T l2, T lr) {                                              \\
        const Py_ssize_t lanes = FASTGD_VECTOR / sizeof(T);                                   \\
        const NAME##_vector zero = {0};                                                       \\
        NAME##_vector v[4], s[4], dj, pj;                                                     \\
        T ak[4], xk[4], row_squares[4], value;                                                \\
        T* row[4];                                                                            \\
        Py_ssize_t k = 0, j, g, i;                                                            \\
        double squares = 0;                                                                   \\
        for (; k + 4 <= rows; k += 4) {                                                       \\
            FASTGD_RANK1_ROWS(NAME##_vector, T, 4)                                            \\
        }                                                                                     \\
        for (; k < rows; k++) {                                                               \\
            FASTGD_RANK1_ROWS(NAME##_vector, T, 1)                                            \\
        }                                                                                     \\
        return squares;                                                                       \\
    }
    FASTGD_RANK1_STEP(float, fastgd_rank1_step_float)
    FASTGD_RANK1_STEP(double, fastgd_rank1_step_double)
    """
    double _rank1_step_float "fastgd_rank1_step_float"(float* W, Py_ssize_t rows, Py_ssize_t width, const float* a,
                                                       const float* d, const float* x, float* product, float l2,
                                                       float lr) noexcept nogil
    double _rank1_step_double "fastgd_rank1_step_double"(double* W, Py_ssize_t rows, Py_ssize_t width,
                                                         const double* a, const double* d, const double* x,
                                                         double* product, double l2, double lr) noexcept nogil


cdef inline double _rank1_step(floating* W, Py_ssize_t rows, Py_ssize_t width, const floating* a,
                               const floating* d, const floating* x, floating* product, floating l2,
                               floating lr) noexcept nogil:
    """The SGD step ``W -= lr * (outer(a, d) + l2 * W)`` of a row-major ``(rows, width)`` block; with
    ``x`` (else NULL), in the same pass ``product += x @ W`` (W stepped). Returns ``sum(W**2)`` before
    the step (float64)."""
    if floating is float:
        return _rank1_step_float(W, rows, width, a, d, x, product, l2, lr)
    else:
        return _rank1_step_double(W, rows, width, a, d, x, product, l2, lr)


cdef double _first_layer_step(const int64_t[:, ::1] layout, floating[::1] params, const floating* x,
                              floating[::1] acts, floating[::1] derivatives, const int64_t[::1] offsets,
                              const floating[::1] deltas, floating l2, floating lr,
                              const Masks* masks) noexcept nogil:
    """The SGD step of ``W0`` left by the last row (its input in block 0 of ``acts``, its deltas
    in block 1 of ``deltas``); with ``x`` (the next row's input, else NULL), in the same pass the
    first layer's forward pass of ``x`` (activations and derivatives, its units dropping as ``masks``,
    the next step's, says), which then becomes block 0. Returns ``sum(W0**2)`` before the step (float64)."""
    cdef double rate = _dropout(layout, 0), squares
    cdef Py_ssize_t k, j, n_in = layout[0, 0], n_out = layout[0, 1]
    cdef floating* A = _at(acts, offsets[0], n_in, b"input block")
    cdef floating* product = _at(acts, offsets[1], n_out, b"activations")
    for j in range(n_out if x != NULL else 0):
        product[j] = 0
    squares = _rank1_step(_at(params, layout[0, 3], n_in * n_out, b"W"), n_in, n_out, A,
                          _at(deltas, offsets[1], n_out, b"deltas"), x, product, l2, lr)
    if x != NULL:
        _activate(product, _at(params, layout[0, 4], n_out, b"b"), _at(derivatives, offsets[1], n_out,
                  b"derivatives"), 1, n_out, n_out, 0, layout[0, 2], <floating>_parameter(layout, 0))
        if masks != NULL and rate > 0:
            _drop_row(product, _at(derivatives, offsets[1], n_out, b"derivatives"), n_out, rate,
                      <floating>(1 / (1 - rate)), _row_key(masks, masks.first, 0))
        for k in range(n_in):
            A[k] = x[k]
    return squares


cdef inline void _one_row(const floating* X, const Sparse* sparse, const floating[::1] Y, const double* w,
                          Py_ssize_t source, Py_ssize_t n_in, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t k,
                          floating* x, floating* target, double* weight) noexcept nogil:
    """Row ``source``: its input into ``x`` (dense: only its columns ``lo`` to ``hi``; sparse: every
    column), its targets into ``target``, its weight (with ``w``) into ``weight``."""
    cdef Py_ssize_t j, p, r
    cdef const floating* data = <const floating*>sparse.data if sparse != NULL else NULL
    cdef const floating* source_y = _at(Y, source * k, k, b"Y")
    for j in range(k):
        target[j] = source_y[j]
    if w != NULL:
        weight[0] = w[source]
    if sparse == NULL:
        for j in range(lo, hi):
            x[j] = X[source * n_in + j]
    else:
        for j in range(n_in):
            x[j] = 0
        r = sparse.rows[source] if sparse.rows != NULL else source
        for p in range(sparse.indptr[r], sparse.indptr[r + 1]):
            x[sparse.indices[p]] += data[p]


cdef int _stochastic_epoch(const int64_t[:, ::1] layout, floating[::1] params, floating[::1] grads,
                           const floating* X, const Sparse* sparse, const floating[::1] Y, const double* w,
                           const int64_t[::1] order, const Step* c, const double[::1] lrs, floating[::1] acts,
                           floating[::1] derivatives, const int64_t[::1] offsets, floating[::1] z, double[::1] lse,
                           floating[::1] deltas, floating[::1] yb, double[::1] wb, floating[::1] row,
                           Py_ssize_t step, double* loss, Py_ssize_t* steps) noexcept nogil:
    """An epoch of plain SGD on one row per step from optimizer step ``step``, in which each step's
    update of ``W0`` is taken in the next step's forward pass, which reads the same rows of ``W0``:
    one pass over ``W0`` per step instead of two. Returns the status; ``loss`` and ``steps`` as
    ``train_epoch`` returns them."""
    cdef Masks masks
    cdef Py_ssize_t i, j, source, n = order.shape[0], n_in = layout[0, 0], k = layout[layout.shape[0] - 1, 1]
    cdef floating* x = _at(row, 0, n_in, b"row")  # the row's input, until its forward pass copies it to block 0
    cdef floating* inputs = _at(acts, offsets[0], n_in, b"input block")
    cdef floating* target = _at(yb, 0, k, b"gathered Y")
    cdef double* weight = <double*>_weights(wb, 1) if w != NULL else NULL
    cdef double total = 0, value, squares
    cdef floating l2 = 0, lr = 0
    for i in range(n):
        source = order[i]
        if source < 0 or source >= n:
            steps[0], loss[0] = i, NAN
            return BAD_ROW
        _one_row(X, sparse, Y, w, source, n_in, 0, n_in, k, x, target, weight)
        squares = 0
        masks = _masks(c, step + i, 0)
        if i == 0:
            for j in range(n_in):
                inputs[j] = x[j]
            _forward_row(layout, params, acts, derivatives, offsets, z, lse, 0, &masks)
        else:  # the step of the row before (the rest of its L2 term), then this row
            squares = _first_layer_step(layout, params, x, acts, derivatives, offsets, deltas, l2, lr, &masks)
            _forward_row(layout, params, acts, derivatives, offsets, z, lse, 1, &masks)
        value = _loss(layout, yb, weight, 1, acts, offsets, z, lse, deltas, c.loss)
        if not isfinite(value) or (l2 != 0 and not isfinite(squares)):
            steps[0], loss[0] = i, NAN
            return NOT_FINITE
        if l2 != 0:
            total += 0.5 * l2 * squares
        l2, lr = <floating>_batch_l2(c, _rows(weight, 1)), <floating>lrs[i]
        squares = _backward_rows(layout, params, grads, 1, acts, derivatives, offsets, deltas, l2, lr, True, row, 1)
        total += value + 0.5 * l2 * squares if l2 != 0 else value
    squares = _first_layer_step(layout, params, <const floating*>NULL, acts, derivatives, offsets, deltas, l2, lr,
                                NULL)
    steps[0], loss[0] = n, NAN
    if l2 != 0:
        if not isfinite(squares):
            return NOT_FINITE
        total += 0.5 * l2 * squares
    loss[0] = total / n
    return OK if _finite(params) else NOT_FINITE


# ---------------------------------------------------------------- the epoch's shuffle: NumPy's RandomState.shuffle
cdef void _twist(uint32_t* key) noexcept nogil:
    """The next key of an MT19937 (624 words), in place, as NumPy makes it."""
    cdef Py_ssize_t i
    cdef uint32_t y
    for i in range(MT_WORDS):
        y = (key[i] & 0x80000000u) | (key[i + 1 if i + 1 < MT_WORDS else 0] & 0x7fffffffu)
        key[i] = key[i + MT_SHIFT if i + MT_SHIFT < MT_WORDS else i + MT_SHIFT - MT_WORDS] ^ (y >> 1) ^ (
            (y & 1u) * 0x9908b0dfu)


cdef void _shuffle(int64_t[::1] order, uint32_t[::1] generator) noexcept nogil:
    """Shuffle ``order`` in place as ``RandomState.shuffle`` does, advancing the MT19937 state
    ``generator`` (key, then position)."""
    cdef uint32_t* key = &generator[0]
    cdef Py_ssize_t i, position = generator[MT_WORDS]
    cdef uint32_t mask, y
    cdef int64_t j
    for i in range(order.shape[0] - 1, 0, -1):
        mask = <uint32_t>i
        mask |= mask >> 1
        mask |= mask >> 2
        mask |= mask >> 4
        mask |= mask >> 8
        mask |= mask >> 16
        while True:  # 32 random bits masked to those of i, until they are at most i
            if position >= MT_WORDS:
                _twist(key)
                position = 0
            y = key[position]
            position += 1
            y ^= y >> 11
            y ^= (y << 7) & 0x9d2c5680u
            y ^= (y << 15) & 0xefc60000u
            j = (y ^ (y >> 18)) & mask
            if j <= i:
                break
        order[i], order[j] = order[j], order[i]
    generator[MT_WORDS] = <uint32_t>position


cdef bint _finite(const floating[::1] values) noexcept nogil:
    """Whether every value is finite (tested one by one: reassociation folds x - x to 0)."""
    cdef Py_ssize_t p, n = values.shape[0]
    cdef const floating* v = _at(values, 0, n, b"values")
    for p in range(n):
        if not isfinite(v[p]):
            return False
    return True


# ---------------------------------------------------------------- one batch in shares of its rows, on threads
cdef int _batch_step(const int64_t[:, ::1] layout, floating[::1] params, floating[::1] grads,
                     const floating[:, ::1] parts, floating[:, ::1] state, const floating[::1] X, const Sparse* sparse,
                     const floating[::1] Y, const double* w, Py_ssize_t m, const double[::1] losses, const Step* c,
                     double* lr, Py_ssize_t step, floating[::1] acts, floating[::1] derivatives,
                     const int64_t[::1] offsets, floating[::1] z, double[::1] lse, floating[::1] deltas,
                     double* value) noexcept nogil:
    """The step of an epoch of one batch from the gradients of its shares (``Backend.batch_step``):
    the batch loss into ``*value``; returns the status."""
    cdef Py_ssize_t k, p, n = params.shape[0]
    cdef floating* g = _at(grads, 0, n, b"grads")
    cdef const floating* part
    cdef bint fused = _fused(c)
    cdef double l2 = _batch_l2(c, _rows(w, m)), squares
    value[0] = 0
    for k in range(losses.shape[0]):
        value[0] += losses[k]
    if not isfinite(value[0]):
        return NOT_FINITE
    for k in range(parts.shape[0]):
        part = &parts[k, 0]
        for p in range(n):
            g[p] += part[p]
    squares = _finish(layout, params, grads, <floating>l2, <floating>lr[0], fused)
    if l2 != 0:
        value[0] += 0.5 * <floating>l2 * squares
    if not isfinite(value[0]):
        return NOT_FINITE
    if not fused:
        _apply(layout, params, grads, state, X, sparse, Y, w, m, value[0], c, l2, lr, step, acts, derivatives,
               offsets, z, lse, deltas)
    if not _finite(params):
        return NOT_FINITE
    for k in range(state.shape[0]):
        if not _finite(state[k]):
            return NOT_FINITE
    return OK


# ---------------------------------------------------------------- an epoch of mini-batches on several threads
# The threads of one epoch meet three times a step: each announces in its own cache line of ``sync``
# how many meetings it has reached, and waits until every thread has reached as many (spinning a
# few tens of microseconds, then sleeping until the late thread wakes it, so that a thread that
# lost its core is not kept from it by the ones waiting for it). Line ``threads`` of ``sync`` says
# the epoch was abandoned (a thread could not start); a waiting thread then gives up.
cdef extern from *:
    """
    #include <limits.h>
    #if defined(__x86_64__) || defined(__i386__)
    #include <immintrin.h>
    #define FASTGD_PAUSE() _mm_pause()
    #else
    #define FASTGD_PAUSE() ((void)0)
    #endif
    #define FASTGD_LINE 8
    #define FASTGD_SPINS 2048
    #ifdef __linux__
    #include <linux/futex.h>
    #include <sys/syscall.h>
    #include <time.h>
    #include <unistd.h>
    /* The 32 bits of a meeting count that change first, which a sleeping thread watches. */
    static int32_t* fastgd_word(int64_t* count) {
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        return (int32_t*)count + 1;
    #else
        return (int32_t*)count;
    #endif
    }
    static void fastgd_sleep(int64_t* count, int64_t seen) {
        struct timespec at_most = {0, 1000000};  /* 1 ms: then it looks again (an abandoned epoch) */
        syscall(SYS_futex, fastgd_word(count), FUTEX_WAIT_PRIVATE, (int32_t)seen, &at_most, NULL, 0);
    }
    static void fastgd_wake(int64_t* count) {
        syscall(SYS_futex, fastgd_word(count), FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
    }
    #else
    #ifdef _WIN32
    #include <windows.h>
    #define FASTGD_YIELD() SwitchToThread()
    #else
    #include <sched.h>
    #define FASTGD_YIELD() sched_yield()
    #endif
    static void fastgd_sleep(int64_t* count, int64_t seen) { FASTGD_YIELD(); }
    static void fastgd_wake(int64_t* count) {}
    #endif
    /* Thread t reaches meeting `count`: it says so in its line of `sync` (word 0: its count; word 1:
       whether a thread sleeps waiting for it), then waits for every thread to have reached it:
       spinning a while, then sleeping until woken (or a millisecond has passed). 0: abandoned. */
    static int fastgd_meet(int64_t* sync, Py_ssize_t t, Py_ssize_t threads, int64_t count) {
        Py_ssize_t k;
        long spins = 0;
        int64_t seen;
        __atomic_store_n(&sync[FASTGD_LINE * t], count, __ATOMIC_SEQ_CST);
        if (__atomic_exchange_n(&sync[FASTGD_LINE * t + 1], 0, __ATOMIC_SEQ_CST)) fastgd_wake(&sync[FASTGD_LINE * t]);
        for (k = 0; k < threads; k++) {
            while ((seen = __atomic_load_n(&sync[FASTGD_LINE * k], __ATOMIC_ACQUIRE)) < count) {
                if (__atomic_load_n(&sync[FASTGD_LINE * threads], __ATOMIC_ACQUIRE)) return 0;
                if (++spins < FASTGD_SPINS) {
                    FASTGD_PAUSE();
                    continue;
                }
                __atomic_store_n(&sync[FASTGD_LINE * k + 1], 1, __ATOMIC_SEQ_CST);
                seen = __atomic_load_n(&sync[FASTGD_LINE * k], __ATOMIC_SEQ_CST);
                if (seen < count) fastgd_sleep(&sync[FASTGD_LINE * k], seen);
            }
        }
        return 1;
    }
    /* The epoch is given up: the threads stop waiting. */
    static void fastgd_abandon(int64_t* sync, Py_ssize_t threads) {
        __atomic_store_n(&sync[FASTGD_LINE * threads], 1, __ATOMIC_SEQ_CST);
    }
    """
    enum: SYNC_LINE "FASTGD_LINE"
    bint _meet "fastgd_meet"(int64_t* sync, Py_ssize_t t, Py_ssize_t threads, int64_t count) noexcept nogil
    void _abandon "fastgd_abandon"(int64_t* sync, Py_ssize_t threads) noexcept nogil


cdef double _finish_range(const int64_t[:, ::1] layout, floating[::1] params, floating[::1] grads,
                          const floating[:, ::1] parts, floating l2, floating lr, bint fused, Py_ssize_t low,
                          Py_ssize_t high) noexcept nogil:
    """:func:`_finish` on the parameters ``low`` to ``high`` only, of the gradient ``grads`` plus the
    rows of ``parts`` (the other shares'), added in the same pass: returns their part of
    ``sum(W**2)`` (float64). Without ``fused``, ``grads`` takes the sum and the L2 term."""
    cdef Py_ssize_t l, j, k, first, last, last_part = parts.shape[0] - 1
    cdef floating* W = _at(params, 0, params.shape[0], b"params")
    cdef floating* dW = _at(grads, 0, grads.shape[0], b"grads")
    cdef const floating* other = &parts[last_part, 0]
    cdef floating v
    cdef double squares = 0
    for k in range(last_part):  # three threads and more: the shares but the last added first
        for j in range(low, high):
            dW[j] += parts[k, j]
    for l in range(layout.shape[0]):
        first, last = max(low, layout[l, 3]), min(high, layout[l, 4])  # W
        for j in range(first, last):
            v = W[j]
            squares += <double>v * v
            if fused:
                W[j] = v - lr * ((dW[j] + other[j]) + l2 * v)
            else:
                dW[j] = (dW[j] + other[j]) + l2 * v
        first, last = max(low, layout[l, 4]), min(high, layout[l, 4] + layout[l, 1])  # b
        for j in range(first, last):
            if fused:
                W[j] -= lr * (dW[j] + other[j])
            else:
                dW[j] += other[j]
    return squares


cdef double _range_squares(const int64_t[:, ::1] layout, const floating[::1] values, Py_ssize_t low,
                           Py_ssize_t high) noexcept nogil:
    """``sum(W**2)`` over the weights among ``values[low:high]``."""
    cdef Py_ssize_t l, first
    cdef const floating* v = _at(values, 0, values.shape[0], b"values")
    cdef double squares = 0
    for l in range(layout.shape[0]):
        first = max(low, layout[l, 3])
        squares += _squares(v + first, min(high, layout[l, 4]) - first)
    return squares


cdef double _share_search(const int64_t[:, ::1] layout, floating[::1] params, const floating[::1] grads,
                          floating[::1] trial, const floating[::1] X, const Sparse* sparse, const floating[::1] Y,
                          const double* w, Py_ssize_t m, double count, double value, const Step* c, double l2,
                          double alpha, floating[::1] acts, floating[::1] derivatives, const int64_t[::1] offsets,
                          floating[::1] z, double[::1] lse, floating[::1] deltas, const Masks* masks,
                          Py_ssize_t low, Py_ssize_t high, Py_ssize_t t, Py_ssize_t threads, int64_t* sync,
                          int64_t* meeting, double* partials) noexcept nogil:
    """Thread ``t``'s part of a mini-batch step by Armijo backtracking from ``alpha`` (``_line_search``),
    ``value`` the batch's loss: each trial point on its range ``low`` to ``high`` of the parameters (in
    ``trial``), then the loss of its share of the batch's rows (``m`` of them, ``X``, ``Y``, ``w``; over
    ``count``) there; the sums over threads in thread order (``_sum_over_threads`` in ``partials``).
    Returns the step taken; ``*meeting``: the meetings reached, 0 if the epoch was abandoned."""
    cdef Py_ssize_t p, n = high - low
    cdef floating* own = _at(params, low, n, b"params")
    cdef const floating* g = _at(grads, low, n, b"grads")
    cdef floating* point = _at(trial, low, n, b"trial point")
    cdef double step = alpha, slope = 0, part, trial_value
    cdef floating rate
    for p in range(n):
        slope += <double>g[p] * g[p]
    slope = _sum_over_threads(slope, partials, t, threads, sync, meeting)
    while meeting[0] != 0 and step >= c.min_step:
        rate = <floating>step
        for p in range(n):
            point[p] = own[p] - rate * g[p]
        meeting[0] += 1  # every part of the trial point in place
        if not _meet(sync, t, threads, meeting[0]):
            meeting[0] = 0
            return step
        part = 0
        if m > 0:
            part = _gradient_blocks(layout, trial, trial, X, sparse, Y, w, m, count, c.loss, acts, derivatives,
                                    offsets, z, lse, deltas, masks, False)
        if l2 != 0:
            part += 0.5 * l2 * _range_squares(layout, trial, low, high)
        trial_value = _sum_over_threads(part, partials, t, threads, sync, meeting)
        if trial_value <= value - c.c * step * slope:
            for p in range(n):
                own[p] = point[p]
            return step
        step *= c.rho
    if meeting[0] == 0:
        return step
    rate = <floating>c.fallback_step
    for p in range(n):
        own[p] -= rate * g[p]
    return c.fallback_step


cdef int _share_epoch(const int64_t[:, ::1] layout, floating[::1] params, floating[::1] grads,
                      floating[::1] own, floating[:, ::1] parts, floating[:, ::1] state, const floating[::1] X,
                      const Sparse* sparse, const floating[::1] Y, const double* w, const int64_t[::1] order,
                      Py_ssize_t batch_size,
                      const Step* c, double[::1] lrs, Py_ssize_t step, floating[::1] acts,
                      floating[::1] derivatives, const int64_t[::1] offsets, floating[::1] z, double[::1] lse,
                      floating[::1] deltas,
                      floating[::1] xb, floating[::1] yb, double[::1] wb, floating[::1] own_params,
                      floating[::1] own_grads, floating[:, ::1] own_state, Py_ssize_t low, Py_ssize_t high,
                      Py_ssize_t t, Py_ssize_t threads, int64_t* sync, double* losses, double* partials,
                      double* result) noexcept nogil:
    """Thread ``t``'s part of an epoch of mini-batches on ``threads`` threads: of batch ``i`` (rows
    ``order[i*batch_size:(i+1)*batch_size]``, gathered; a single batch's where they are, in their
    order), rows ``m*t//threads`` to ``m*(t+1)//threads``, whose
    gradient (over the batch's total weight) goes into ``own`` (thread 0: ``grads``; thread ``t``:
    ``parts[t - 1]``), its loss into ``losses[t]``; then the step on its range ``low`` to ``high`` of
    the parameters (``own_params``, ``own_grads`` and ``own_state`` are that range), its sums into
    ``partials[t]`` and ``partials[threads + t]`` (a line search's into ``partials[2 threads:]``).
    Thread 0 writes the epoch's ``(loss, steps)`` into ``result``. Returns the status (the same in every
    thread)."""
    cdef Py_ssize_t n = order.shape[0], n_in = layout[0, 0], n_out = layout[layout.shape[0] - 1, 1]
    cdef Py_ssize_t n_batches = (n + batch_size - 1) // batch_size, P = params.shape[0]
    cdef Py_ssize_t i, k, p, r, j, start, m, first, rows, source
    cdef int64_t meeting = 0
    cdef int status = OK
    cdef bint fused = _fused(c)
    cdef double total_weight, count, value = 0, total = 0, squares, norm, l2, taken
    cdef floating* gathered_x = NULL
    cdef floating* gathered_y
    cdef double* gathered_w = NULL
    cdef const floating[::1] share_x = xb, share_y
    cdef const double* share_w
    cdef Sparse batch
    cdef const Sparse* rows_in = NULL
    cdef Py_ssize_t steps = 0
    cdef Masks masks
    for i in range(n_batches):
        start = i * batch_size
        m = min(batch_size, n - start)
        first = m * t // threads
        rows = m * (t + 1) // threads - first
        if n_batches == 1:  # a single batch takes X as it is: each thread its rows where they are
            total_weight = _rows(w, n)
            share_y, share_w = Y[first * n_out : (first + rows) * n_out], w + first if w != NULL else NULL
            if sparse == NULL:
                share_x = X[first * n_in : (first + rows) * n_in]
            else:
                batch = sparse[0]
                batch.indptr += first  # the share's rows from its first
                rows_in = &batch
        else:
            # Every thread reads the whole batch's rows: each finds a bad row, and the total weight, alike.
            total_weight = 0
            for r in range(m):
                source = order[start + r]
                if source < 0 or source >= n:
                    status = BAD_ROW
                    break
                if w != NULL:
                    total_weight += w[source]
            if status != OK:
                break
            if w == NULL:
                total_weight = m
            gathered_y = _at(yb, 0, rows * n_out, b"gathered Y")
            if sparse == NULL:
                gathered_x = _at(xb, 0, rows * n_in, b"gathered X")
            if w != NULL:
                gathered_w = <double*>_weights(wb, rows)
            for r in range(rows):
                source = order[start + first + r]
                if sparse == NULL:
                    for j in range(n_in):
                        gathered_x[r * n_in + j] = X[source * n_in + j]
                for j in range(n_out):
                    gathered_y[r * n_out + j] = Y[source * n_out + j]
                if w != NULL:
                    gathered_w[r] = w[source]
            if sparse != NULL:
                batch = sparse[0]
                batch.rows = &order[start + first]  # sparse rows are read where they are, in the batch's order
                rows_in = &batch
            share_y, share_w = yb, gathered_w
        count = _count(layout, total_weight, c.loss)
        masks = _masks(c, step + i, first)
        if rows > 0:
            losses[t] = _gradient_blocks(layout, params, own, share_x, rows_in, share_y, share_w, rows, count, c.loss,
                                         acts, derivatives, offsets, z, lse, deltas, &masks)
        else:
            losses[t] = 0
            for p in range(P):
                own[p] = 0
        meeting += 1
        if not _meet(sync, t, threads, meeting):
            break
        # The step, each thread on its range of the parameters: the shares added, the L2 term (or
        # plain SGD's step), clipping and the update; sums over the ranges taken in thread order.
        value = 0
        for k in range(threads):
            value += losses[k]
        if not isfinite(value):
            status = NOT_FINITE
            break
        l2 = _batch_l2(c, total_weight)
        partials[t] = _finish_range(layout, params, grads, parts, <floating>l2, <floating>lrs[i], fused, low, high)
        partials[threads + t] = _clip_values(grads, c, low, high)
        meeting += 1
        if not _meet(sync, t, threads, meeting):
            break
        squares = norm = 0
        for k in range(threads):
            squares += partials[k]
            norm += partials[threads + k]
        if l2 != 0:
            value += 0.5 * <floating>l2 * squares
        if not isfinite(value):
            status = NOT_FINITE
            break
        if not fused:
            _scale_to_norm(grads, c, norm, low, high)
        if c.optimizer == LINE_SEARCH:
            taken = _share_search(layout, params, grads, state[0], share_x, rows_in, share_y, share_w, rows, count,
                                  value, c, l2, lrs[i], acts, derivatives, offsets, z, lse, deltas, &masks, low, high,
                                  t, threads, sync, &meeting, partials + 2 * threads)
            if meeting == 0:
                break
            if t == 0:
                lrs[i] = taken
        elif not fused:
            _update(own_params, own_grads, own_state, c, lrs[i], step + i)
        if t == 0:
            total += value * m
        steps += 1
        meeting += 1
        if not _meet(sync, t, threads, meeting):
            break
    if t == 0:
        result[0], result[1] = (total / n if steps == n_batches else value), steps
        if status == OK and not _finite(params):
            status = NOT_FINITE
        for k in range(state.shape[0]):
            if status == OK and not _finite(state[k]):
                status = NOT_FINITE
    return status


# ---------------------------------------------------------------- one-row steps, each layer split between threads
# ``train_epoch_units`` (the Numba backend's ``_units_epoch`` says how): the last layer and every second one
# below it split by their inputs (rows of W, partial products added in thread order), the others by their
# units (columns of W and of the bias); each thread trains a packed copy of its part (``own``).
cdef inline bint _by_inputs(const int64_t[:, ::1] layout, Py_ssize_t l) noexcept nogil:
    """Whether layer ``l`` is split by its inputs (rows of W) rather than by its units (columns)."""
    return (layout.shape[0] - 1 - l) % 2 == 0


cdef void _packing(const int64_t[:, ::1] layout, Py_ssize_t t, Py_ssize_t threads, int64_t* packing) noexcept nogil:
    """Thread ``t``'s part of each layer ``l`` into row ``l`` of ``packing`` (``(L, 4)``): its rows (split
    by inputs) or units ``lo`` to ``hi``, and where in ``own`` its weights (``(hi - lo, n_out)`` or
    ``(n_in, hi - lo)``) and its biases (all of them, or its units') start."""
    cdef Py_ssize_t l, n, start = 0
    cdef bint inputs
    for l in range(layout.shape[0]):
        inputs = _by_inputs(layout, l)
        n = layout[l, 0] if inputs else layout[l, 1]
        packing[4 * l], packing[4 * l + 1], packing[4 * l + 2] = n * t // threads, n * (t + 1) // threads, start
        start += (packing[4 * l + 1] - packing[4 * l]) * (layout[l, 1] if inputs else layout[l, 0])
        packing[4 * l + 3] = start
        start += layout[l, 1] if inputs else packing[4 * l + 1] - packing[4 * l]


cdef void _pack(const int64_t[:, ::1] layout, floating[::1] params, floating[::1] own, const int64_t* packing,
                bint unpack, bint biases) noexcept nogil:
    """Copy each layer's part (``packing``) from ``params`` into ``own``, or with ``unpack`` back; without
    ``biases``, not the biases of layers split by inputs (every thread has them all)."""
    cdef Py_ssize_t l, k, j, n_in, n_out, lo, hi, rows, width, first, count
    cdef bint inputs
    cdef floating* W
    cdef floating* part
    cdef floating* source
    for l in range(layout.shape[0]):
        n_in, n_out, lo, hi = layout[l, 0], layout[l, 1], packing[4 * l], packing[4 * l + 1]
        inputs = _by_inputs(layout, l)
        rows, width = hi - lo if inputs else n_in, n_out if inputs else hi - lo
        W, part = _at(params, layout[l, 3], n_in * n_out, b"W"), _at(own, packing[4 * l + 2], rows * width, b"own")
        for k in range(rows):
            source = W + (lo + k) * n_out if inputs else W + k * n_out + lo
            for j in range(width):
                if unpack:
                    source[j] = part[k * width + j]
                else:
                    part[k * width + j] = source[j]
        if inputs and not biases:
            continue
        first, count = layout[l, 4] + (0 if inputs else lo), n_out if inputs else hi - lo
        source, part = _at(params, first, count, b"b"), _at(own, packing[4 * l + 3], count, b"own")
        for j in range(count):
            if unpack:
                source[j] = part[j]
            else:
                part[j] = source[j]


cdef inline void _sum_parts(const floating* exchange, Py_ssize_t width, Py_ssize_t threads, Py_ssize_t start,
                            floating* target, Py_ssize_t n) noexcept nogil:
    """``target`` = the threads' parts at ``start`` of their rows (``width`` apart) of ``exchange``,
    added in thread order."""
    cdef Py_ssize_t k, j
    for j in range(n):
        target[j] = exchange[start + j]
    for k in range(1, threads):
        for j in range(n):
            target[j] += exchange[k * width + start + j]


cdef double _units_first_step(const int64_t[:, ::1] layout, floating[::1] own, const int64_t* packing,
                              const floating* x, const floating* previous, const floating* deltas,
                              floating* product, floating l2, floating lr) noexcept nogil:
    """The last row's SGD step of a thread's part of ``W0`` (its inputs ``previous``, the deltas of the
    first layer's units ``deltas``); with ``x`` (else NULL), in the same pass that part's product of
    ``x`` into ``product``. Returns the part's ``sum(W0**2)`` before the step."""
    cdef Py_ssize_t n_in = layout[0, 0], n_out = layout[0, 1], lo = packing[0], hi = packing[1]
    cdef bint inputs = _by_inputs(layout, 0)
    cdef Py_ssize_t rows = hi - lo if inputs else n_in, width = n_out if inputs else hi - lo
    if inputs:
        previous, x = previous + lo, x + lo if x != NULL else NULL
    else:
        deltas = deltas + lo
    return _rank1_step(_at(own, packing[2], rows * width, b"own"), rows, width, previous, deltas, x, product, l2, lr)


cdef int64_t _units_forward(const int64_t[:, ::1] layout, floating[::1] own, const int64_t* packing,
                            const floating* x, floating[::1] acts, floating[::1] derivatives,
                            const int64_t[::1] offsets, floating[::1] z, double[::1] lse, floating[::1] deltas,
                            floating* exchange, Py_ssize_t width, Py_ssize_t t, Py_ssize_t threads, int64_t* sync,
                            int64_t meeting, floating l2, floating lr, bint deferred, const Masks* masks,
                            double* squares) noexcept nogil:
    """Thread ``t``'s forward pass of the row ``x``, after (``deferred``) the last row's step of its part
    of ``W0`` in the same pass (its ``sum(W0**2)`` into ``squares``); ``x`` then becomes block 0.
    ``exchange``: the step's rows of the threads' parts, ``width`` apart. Returns the meetings
    reached, 0 if the epoch was abandoned."""
    cdef Py_ssize_t l, j, n_in, n_out, lo, hi, last = layout.shape[0] - 1
    cdef bint inputs
    cdef double rate
    cdef const floating* a
    cdef floating* product
    cdef floating* d
    cdef floating* inputs_block = _at(acts, offsets[0], layout[0, 0], b"input block")
    for l in range(last + 1):
        n_in, n_out, lo, hi = layout[l, 0], layout[l, 1], packing[4 * l], packing[4 * l + 1]
        inputs = _by_inputs(layout, l)
        a = x if l == 0 else _at(acts, offsets[l], n_in, b"activations")
        if inputs:
            product = exchange + t * width + offsets[l + 1]
        else:
            product = _at(acts, offsets[l + 1] + lo, hi - lo, b"activations")
        for j in range(n_out if inputs else hi - lo):
            product[j] = 0
        if l == 0 and deferred:
            squares[0] += _units_first_step(layout, own, packing, x, inputs_block,
                                            _at(deltas, offsets[1], n_out, b"deltas"), product, l2, lr)
        elif inputs:
            _add_product(product, a + lo, _at(own, packing[4 * l + 2], (hi - lo) * n_out, b"own"), hi - lo, n_out)
        else:
            _add_product(product, a, _at(own, packing[4 * l + 2], n_in * (hi - lo), b"own"), n_in, hi - lo)
        if l == 0:
            for j in range(n_in):
                inputs_block[j] = x[j]
        if inputs:
            meeting += 1
            if not _meet(sync, t, threads, meeting):
                return 0
            product = _at(z, 0, n_out, b"logits") if l == last else _at(acts, offsets[l + 1], n_out, b"activations")
            _sum_parts(exchange, width, threads, offsets[l + 1], product, n_out)
            lo, hi = 0, n_out
        if l == last:
            _at(lse, 0, 1, b"lse")[0] = _output_row(product, _at(own, packing[4 * l + 3], n_out, b"own"),
                                                    _at(acts, offsets[l + 1], n_out, b"activations"), n_out,
                                                    layout[l, 2])
            continue
        d = _at(derivatives, offsets[l + 1] + lo, hi - lo, b"derivatives")
        _activate(product, _at(own, packing[4 * l + 3], hi - lo, b"own"), d, 1, hi - lo, hi - lo, 0, layout[l, 2],
                  <floating>_parameter(layout, l))
        rate = _dropout(layout, l)
        if masks != NULL and rate > 0:
            _drop_row(product, d, hi - lo, rate, <floating>(1 / (1 - rate)),
                      _row_key(masks, masks.first, l) + <uint64_t>lo)
    return meeting


cdef int64_t _units_backward(const int64_t[:, ::1] layout, floating[::1] own, floating[::1] grads,
                             const int64_t* packing, floating[::1] acts, floating[::1] derivatives,
                             const int64_t[::1] offsets, floating[::1] deltas, floating* exchange, Py_ssize_t width,
                             Py_ssize_t t, Py_ssize_t threads, int64_t* sync, int64_t meeting, floating l2,
                             floating lr, bint fused, double* squares) noexcept nogil:
    """Thread ``t``'s part of the backward pass (``deltas`` of the output set): with ``fused`` (plain SGD),
    the step of its part of every layer but the weights of the first; else its part of the gradient,
    into ``grads`` (packed as ``own``). The ``sum(W**2)`` of the weights it goes through, before any
    step, into ``squares``. Returns the meetings reached, 0 if the epoch was abandoned."""
    cdef Py_ssize_t l, k, j, n_in, n_out, lo, hi, units, rows
    cdef bint inputs
    cdef const floating* A
    cdef floating* D
    cdef floating* W
    cdef floating* dW
    cdef floating* bias
    cdef floating* below = NULL
    cdef floating* derivative = NULL
    cdef floating* part
    cdef floating back, row_squares
    for l in range(layout.shape[0] - 1, -1, -1):
        n_in, n_out, lo, hi = layout[l, 0], layout[l, 1], packing[4 * l], packing[4 * l + 1]
        inputs = _by_inputs(layout, l)
        A, D = _at(acts, offsets[l], n_in, b"activations"), _at(deltas, offsets[l + 1], n_out, b"deltas")
        if l > 0:
            below = _at(deltas, offsets[l], n_in, b"deltas")
            derivative = _at(derivatives, offsets[l], n_in, b"derivatives")
        if inputs:  # rows lo to hi of W, every unit
            units, rows, A = n_out, hi - lo, A + lo
        else:  # columns lo to hi of W, every row
            units, rows, D = hi - lo, n_in, D + lo
        W = _at(own, packing[4 * l + 2], rows * units, b"own")
        dW = _at(grads, packing[4 * l + 2], rows * units, b"grads")
        if inputs and units == 1 and (l > 0 or not fused):
            squares[0] += _column_step(W, dW, A, D[0], below + lo if l > 0 else NULL,
                                       derivative + lo if l > 0 else NULL, rows, l2, lr, fused)
        elif l > 0:  # the delta below: a row's own (split by inputs), else the threads' parts added
            part = exchange + t * width + offsets[l]
            for k in range(rows):
                row_squares = 0
                if fused:
                    back = _sgd_back_row(W + k * units, D, units, A[k], l2, lr, &row_squares)
                else:
                    back = _gradient_back_row(W + k * units, dW + k * units, D, units, A[k], l2, &row_squares)
                if inputs:
                    below[lo + k] = back * derivative[lo + k]
                else:
                    part[k] = back
                squares[0] += row_squares
            if not inputs:
                meeting += 1
                if not _meet(sync, t, threads, meeting):
                    return 0
                _sum_parts(exchange, width, threads, offsets[l], below, n_in)
                for k in range(n_in):
                    below[k] *= derivative[k]
        elif not fused:
            for k in range(rows):
                row_squares = 0
                _gradient_back_row(W + k * units, dW + k * units, D, units, A[k], l2, &row_squares)
                squares[0] += row_squares
        bias = _at(own, packing[4 * l + 3], units, b"own")
        if fused:
            for j in range(units):
                bias[j] -= lr * D[j]
        else:
            part = _at(grads, packing[4 * l + 3], units, b"grads")
            for j in range(units):
                part[j] = D[j]
    return meeting


cdef inline Py_ssize_t _packed_size(const int64_t[:, ::1] layout, const int64_t* packing) noexcept nogil:
    """The values a thread's part takes in ``own`` (``packing``: ``_packing``'s)."""
    cdef Py_ssize_t last = layout.shape[0] - 1
    return packing[4 * last + 3] + layout[last, 1]


cdef double _part_squares(const int64_t[:, ::1] layout, floating[::1] values, const int64_t* packing, Py_ssize_t t,
                          bint biases) noexcept nogil:
    """``sum(values**2)`` over thread ``t``'s part (``values`` packed as ``own``): its weights, with
    ``biases`` its biases too, those of layers split by inputs (every thread has them) on thread 0 only."""
    cdef Py_ssize_t l, end
    cdef bint inputs
    cdef const floating* v = _at(values, 0, _packed_size(layout, packing), b"part")
    cdef double squares = 0
    for l in range(layout.shape[0]):
        inputs = _by_inputs(layout, l)
        end = packing[4 * l + 3]
        if biases and (t == 0 or not inputs):
            end += layout[l, 1] if inputs else packing[4 * l + 1] - packing[4 * l]
        squares += _squares(v + packing[4 * l + 2], end - packing[4 * l + 2])
    return squares


cdef double _sum_over_threads(double value, double* partials, Py_ssize_t t, Py_ssize_t threads, int64_t* sync,
                              int64_t* meeting) noexcept nogil:
    """``value`` added over the threads in thread order, each thread's in its place of ``partials`` for
    the meeting it goes to (two rows of ``threads`` taken in turn: a thread writes the next sum's only
    after all have read this one's); ``*meeting``: the meetings reached, 0 if the epoch was abandoned."""
    cdef Py_ssize_t k, row
    cdef double total = 0
    meeting[0] += 1
    row = (meeting[0] & 1) * threads
    partials[row + t] = value
    if not _meet(sync, t, threads, meeting[0]):
        meeting[0] = 0
        return NAN
    for k in range(threads):
        total += partials[row + k]
    return total


cdef int64_t _units_clip(const int64_t[:, ::1] layout, floating[::1] grads, const int64_t* packing, const Step* c,
                         Py_ssize_t t, Py_ssize_t threads, int64_t* sync, int64_t meeting,
                         double* partials) noexcept nogil:
    """Thread ``t``'s part of clipping the gradient (packed in ``grads``): element-wise, then to the
    global norm, a sum over the threads. Returns the meetings reached, 0 if the epoch was abandoned."""
    cdef Py_ssize_t used = _packed_size(layout, packing)
    cdef double norm
    _clip_elements(_at(grads, 0, used, b"grads"), used, c)
    if c.clip_norm > 0:
        norm = _sum_over_threads(_part_squares(layout, grads, packing, t, True), partials, t, threads, sync, &meeting)
        _scale_to_norm(grads, c, norm, 0, used)
    return meeting


cdef double _units_search(const int64_t[:, ::1] layout, floating[::1] own, floating[::1] grads,
                          floating[::1] trial, const int64_t* packing, floating* x, Py_ssize_t m,
                          const floating[::1] yb, const double* weight, double value, double squares, const Step* c,
                          floating l2, double alpha, floating[::1] acts, floating[::1] derivatives,
                          const int64_t[::1] offsets, floating[::1] z, double[::1] lse, floating[::1] deltas,
                          floating* exchange, Py_ssize_t width, Py_ssize_t t, Py_ssize_t threads, int64_t* sync,
                          int64_t* meeting, double* partials, const Masks* masks) noexcept nogil:
    """Thread ``t``'s part of a step by Armijo backtracking from ``alpha`` (``_line_search``) on the ``m``
    rows ``x`` (targets ``yb``, ``weight``), whose data loss is ``value`` and ``squares`` the thread's part of
    ``sum(W**2)``: every thread tries the same steps (its part of each point in ``trial``), the sums
    over threads taken in thread order. Returns the step taken; ``*meeting``: the meetings reached, 0
    if the epoch was abandoned."""
    cdef Py_ssize_t p, used = _packed_size(layout, packing)
    cdef floating* params = _at(own, 0, used, b"own")
    cdef const floating* g = _at(grads, 0, used, b"grads")
    cdef floating* point = _at(trial, 0, used, b"trial point")
    cdef double step = alpha, trial_value, unused = 0
    cdef double slope = _sum_over_threads(_part_squares(layout, grads, packing, t, True), partials, t, threads, sync,
                                          meeting)
    cdef floating rate
    if l2 != 0 and meeting[0] != 0:
        value += 0.5 * l2 * _sum_over_threads(squares, partials, t, threads, sync, meeting)
    while meeting[0] != 0 and step >= c.min_step:
        rate = <floating>step
        for p in range(used):
            point[p] = params[p] - rate * g[p]
        if m == 1:
            meeting[0] = _units_forward(layout, trial, packing, x, acts, derivatives, offsets, z, lse, deltas,
                                        exchange, width, t, threads, sync, meeting[0], l2, rate, False, masks, &unused)
        else:
            meeting[0] = _units_block_forward(layout, trial, packing, x, m, acts, derivatives, offsets, z, lse,
                                              exchange, width, t, threads, sync, meeting[0], masks)
        if meeting[0] == 0:
            break
        trial_value = _loss(layout, yb, weight, m, acts, offsets, z, lse, deltas, c.loss)
        if l2 != 0:
            trial_value += 0.5 * l2 * _sum_over_threads(_part_squares(layout, trial, packing, t, False), partials,
                                                        t, threads, sync, meeting)
        if trial_value <= value - c.c * step * slope:
            for p in range(used):
                params[p] = point[p]
            return step
        step *= c.rho
    if meeting[0] == 0:
        return step
    rate = <floating>c.fallback_step
    for p in range(used):
        params[p] -= rate * g[p]
    return c.fallback_step


cdef int64_t _units_step(const int64_t[:, ::1] layout, floating[::1] own, floating[::1] grads,
                         floating[:, ::1] state, const int64_t* packing, floating* x, Py_ssize_t m,
                         const floating[::1] yb, const double* weight, double value, double squares, const Step* c,
                         floating l2, double[::1] lrs, Py_ssize_t i, Py_ssize_t step, floating[::1] acts,
                         floating[::1] derivatives, const int64_t[::1] offsets, floating[::1] z, double[::1] lse,
                         floating[::1] deltas, floating* exchange, Py_ssize_t width, Py_ssize_t t,
                         Py_ssize_t threads, int64_t* sync, int64_t meeting, double* partials,
                         const Masks* masks) noexcept nogil:
    """Step ``i`` of thread ``t``'s part, its gradient of the ``m`` rows ``x`` in ``grads`` (their loss
    ``value``, its ``sum(W**2)`` ``squares``): the gradient clipped, then the optimizer's update or the
    line search's (its step into ``lrs[i]``). Returns the meetings reached, 0 if the epoch was abandoned."""
    cdef double taken
    cdef Py_ssize_t used = _packed_size(layout, packing)
    meeting = _units_clip(layout, grads, packing, c, t, threads, sync, meeting, partials)
    if meeting != 0 and c.optimizer == LINE_SEARCH:
        taken = _units_search(layout, own, grads, state[0], packing, x, m, yb, weight, value, squares, c, l2, lrs[i],
                              acts, derivatives, offsets, z, lse, deltas, exchange, width, t, threads, sync, &meeting,
                              partials, masks)
        if t == 0:
            lrs[i] = taken
    elif meeting != 0:
        _update(own[:used], grads[:used], state, c, lrs[i], step + i)
    return meeting


cdef int _units_result(floating[::1] own, floating[:, ::1] state, double total, Py_ssize_t n, Py_ssize_t t,
                       Py_ssize_t threads, int64_t* sync, int64_t meeting, double* partials,
                       double* loss) noexcept nogil:
    """The end of thread ``t``'s part of an epoch of ``n`` rows, its part of their loss ``total``: the
    threads' parts added, into ``loss``, NaN where any thread's weights or state are not finite. Returns
    the status."""
    cdef Py_ssize_t k
    cdef bint finite = _finite(own)
    for k in range(state.shape[0]):
        finite = finite and _finite(state[k])
    total = _sum_over_threads(total if finite else NAN, partials, t, threads, sync, &meeting)
    if meeting == 0:
        return NOT_FINITE
    loss[0] = total / n
    return OK if isfinite(total) else NOT_FINITE


cdef int _units_epoch(const int64_t[:, ::1] layout, floating[::1] own, floating[::1] grads, floating[:, ::1] state,
                      const int64_t* packing, const floating* X, const Sparse* sparse, const floating[::1] Y,
                      const double* w, const int64_t[::1] order, const Step* c, double[::1] lrs,
                      floating[::1] acts, floating[::1] derivatives, const int64_t[::1] offsets, floating[::1] z,
                      double[::1] lse, floating[::1] deltas, floating[::1] yb, double[::1] wb, floating[::1] row,
                      floating[:, :, ::1] exchange, Py_ssize_t t, int64_t* sync, double* partials,
                      Py_ssize_t step, double* loss, Py_ssize_t* steps) noexcept nogil:
    """Thread ``t``'s part of an epoch on one row per step from optimizer step ``step``, its part of the
    weights, of their gradient and of the optimizer's state packed into ``own``, ``grads`` and ``state``
    (a line search's trial points in ``state[0]``); thread 0's ``loss`` and ``steps`` as ``train_epoch``
    returns them. Returns the status."""
    cdef Masks masks
    cdef Py_ssize_t i, source, n = order.shape[0], n_in = layout[0, 0], threads = exchange.shape[1]
    cdef Py_ssize_t width = exchange.shape[2]
    cdef floating* x = _at(row, 0, n_in, b"row")
    cdef floating* target = _at(yb, 0, layout[layout.shape[0] - 1, 1], b"gathered Y")
    cdef double* weight = <double*>_weights(wb, 1) if w != NULL else NULL
    cdef double total = 0, value, squares
    cdef int64_t meeting = 0
    cdef floating l2 = 0, lr = 0
    cdef bint fused = _fused(c)  # plain SGD: each step in the backward pass, W0's in the next row's forward pass
    steps[0], loss[0] = 0, NAN
    for i in range(n):
        source = order[i]
        if source < 0 or source >= n:
            steps[0] = i
            return BAD_ROW
        _one_row(X, sparse, Y, w, source, n_in, 0, n_in, layout[layout.shape[0] - 1, 1], x, target, weight)
        squares = 0
        masks = _masks(c, step + i, 0)
        meeting = _units_forward(layout, own, packing, x, acts, derivatives, offsets, z, lse, deltas,
                                 &exchange[i & 1, 0, 0], width, t, threads, sync, meeting, l2, lr, fused and i > 0,
                                 &masks, &squares)
        if meeting == 0:
            steps[0] = i
            return NOT_FINITE
        value = _loss(layout, yb, weight, 1, acts, offsets, z, lse, deltas, c.loss)
        if not isfinite(value) or (l2 != 0 and not isfinite(squares)):
            steps[0] = i
            return NOT_FINITE
        if l2 != 0:
            total += 0.5 * l2 * squares
        l2, lr = <floating>_batch_l2(c, _rows(weight, 1)), <floating>lrs[i]
        squares = 0
        meeting = _units_backward(layout, own, grads, packing, acts, derivatives, offsets, deltas,
                                  &exchange[i & 1, 0, 0], width, t, threads, sync, meeting, l2, lr, fused, &squares)
        if meeting != 0 and not fused:
            if l2 != 0 and not isfinite(squares):
                steps[0] = i
                return NOT_FINITE
            meeting = _units_step(layout, own, grads, state, packing, x, 1, yb, weight, value, squares, c, l2, lrs,
                                  i, step, acts, derivatives, offsets, z, lse, deltas, &exchange[i & 1, 0, 0], width,
                                  t, threads, sync, meeting, partials, &masks)
        if meeting == 0:
            steps[0] = i
            return NOT_FINITE
        if t == 0:
            total += value
        if l2 != 0:
            total += 0.5 * l2 * squares
    if fused:  # the last row's step of W0
        squares = _units_first_step(layout, own, packing, NULL, _at(acts, offsets[0], n_in, b"input block"),
                                    _at(deltas, offsets[1], layout[0, 1], b"deltas"), NULL, l2, lr)
        if l2 != 0:
            total += 0.5 * l2 * squares
    steps[0] = n
    return _units_result(own, state, total, n, t, threads, sync, meeting, partials, loss)


cdef int64_t _units_block_forward(const int64_t[:, ::1] layout, floating[::1] own, const int64_t* packing,
                                  floating* X, Py_ssize_t m, floating[::1] acts, floating[::1] derivatives,
                                  const int64_t[::1] offsets, floating[::1] z, double[::1] lse, floating* exchange,
                                  Py_ssize_t width, Py_ssize_t t, Py_ssize_t threads, int64_t* sync, int64_t meeting,
                                  const Masks* masks) noexcept nogil:
    """Thread ``t``'s forward pass of the ``m`` rows ``X`` (row-major, every input): of a layer split by
    its units, those units' activations; of one split by its inputs, every unit's, the threads' partial
    products added (``_units_forward`` on one row says how). Returns the meetings reached, 0 if the
    epoch was abandoned."""
    cdef Py_ssize_t l, i, n_in, n_out, lo, hi, last = layout.shape[0] - 1
    cdef bint inputs
    cdef double rate
    cdef floating* A
    cdef floating* Z
    cdef floating* d
    cdef floating* bias
    for l in range(last + 1):
        n_in, n_out, lo, hi = layout[l, 0], layout[l, 1], packing[4 * l], packing[4 * l + 1]
        inputs = _by_inputs(layout, l)
        A = X if l == 0 else _at(acts, offsets[l], m * n_in, b"activations")
        Z = _at(z, 0, m * n_out, b"logits") if l == last else _at(acts, offsets[l + 1], m * n_out, b"activations")
        if inputs:  # the product of its inputs lo to hi, then every thread's added
            _gemm(c'N', c'N', n_out, m, hi - lo, _at(own, packing[4 * l + 2], (hi - lo) * n_out, b"own"), n_out,
                  A + lo, n_in, 0, exchange + t * width + offsets[l + 1], n_out)
            meeting += 1
            if not _meet(sync, t, threads, meeting):
                return 0
            _sum_parts(exchange, width, threads, offsets[l + 1], Z, m * n_out)
            lo, hi = 0, n_out
        else:
            _gemm(c'N', c'N', hi - lo, m, n_in, _at(own, packing[4 * l + 2], n_in * (hi - lo), b"own"), hi - lo, A,
                  n_in, 0, Z + lo, n_out)
        bias = _at(own, packing[4 * l + 3], hi - lo, b"own")
        if l == last:
            for i in range(m):
                _at(lse, i, 1, b"lse")[0] = _output_row(Z + i * n_out, bias, _at(acts, offsets[l + 1] + i * n_out,
                                                        n_out, b"activations"), n_out, layout[l, 2])
            continue
        d = _at(derivatives, offsets[l + 1], m * n_out, b"derivatives")
        rate = _dropout(layout, l)
        _activate(Z + lo, bias, d + lo, m, hi - lo, n_out, n_out, layout[l, 2], <floating>_parameter(layout, l))
        for i in range(m if masks != NULL and rate > 0 else 0):
            _drop_row(Z + i * n_out + lo, d + i * n_out + lo, hi - lo, rate, <floating>(1 / (1 - rate)),
                          _row_key(masks, masks.first + i, l) + <uint64_t>lo)
    return meeting


cdef int64_t _units_block_backward(const int64_t[:, ::1] layout, floating[::1] own, floating[::1] grads,
                                   const int64_t* packing, floating* X, Py_ssize_t m, floating[::1] acts,
                                   floating[::1] derivatives, const int64_t[::1] offsets, floating[::1] deltas,
                                   floating* exchange, Py_ssize_t width, Py_ssize_t t, Py_ssize_t threads,
                                   int64_t* sync, int64_t meeting) noexcept nogil:
    """Thread ``t``'s part of the gradient (into ``grads``, packed as ``own``) of the ``m`` rows that
    ``_units_block_forward`` went through (output deltas set): of a layer split by its inputs, its rows
    of ``W`` and every bias, and its units of the delta below; of one split by its units, its columns of
    ``W`` and their biases, and its part of the delta below, the threads' parts added. Returns the
    meetings reached, 0 if the epoch was abandoned."""
    cdef Py_ssize_t l, i, j, n_in, n_out, lo, hi, units
    cdef bint inputs
    cdef floating* A
    cdef floating* D
    cdef floating* W
    cdef floating* below
    cdef floating* bias
    for l in range(layout.shape[0] - 1, -1, -1):
        n_in, n_out, lo, hi = layout[l, 0], layout[l, 1], packing[4 * l], packing[4 * l + 1]
        inputs = _by_inputs(layout, l)
        A = X if l == 0 else _at(acts, offsets[l], m * n_in, b"activations")
        D = _at(deltas, offsets[l + 1], m * n_out, b"deltas")
        units = n_out if inputs else hi - lo
        W = _at(own, packing[4 * l + 2], (hi - lo) * n_out if inputs else n_in * units, b"own")
        if inputs:  # rows lo to hi of W, every unit
            _gemm(c'N', c'T', n_out, hi - lo, m, D, n_out, A + lo, n_in, 0,
                  _at(grads, packing[4 * l + 2], (hi - lo) * n_out, b"grads"), n_out)
            if l > 0:  # the units lo to hi of the delta below (split by units)
                below = _at(deltas, offsets[l], m * n_in, b"deltas")
                _gemm(c'T', c'N', hi - lo, m, n_out, W, n_out, D, n_out, 0, below + lo, n_in)
                for i in range(m):
                    _times(below + i * n_in + lo, _at(derivatives, offsets[l] + i * n_in + lo, hi - lo,
                                                      b"derivatives"), hi - lo)
        else:  # columns lo to hi of W, every row
            _gemm(c'N', c'T', units, n_in, m, D + lo, n_out, A, n_in, 0,
                  _at(grads, packing[4 * l + 2], n_in * units, b"grads"), units)
            if l > 0:  # the delta below (split by inputs): every thread's part added
                _gemm(c'T', c'N', n_in, m, units, W, units, D + lo, n_out, 0, exchange + t * width + offsets[l], n_in)
                meeting += 1
                if not _meet(sync, t, threads, meeting):
                    return 0
                below = _at(deltas, offsets[l], m * n_in, b"deltas")
                _sum_parts(exchange, width, threads, offsets[l], below, m * n_in)
                _times(below, _at(derivatives, offsets[l], m * n_in, b"derivatives"), m * n_in)
            D = D + lo
        bias = _at(grads, packing[4 * l + 3], units, b"grads")
        for j in range(units):
            bias[j] = 0
        for i in range(m):
            for j in range(units):
                bias[j] += D[i * n_out + j]
    return meeting


cdef double _units_finish(const int64_t[:, ::1] layout, floating[::1] own, floating[::1] grads,
                          const int64_t* packing, floating l2, floating lr, bint fused) noexcept nogil:
    """``_finish`` on a thread's part (packed as ``own``, its gradient as ``grads``): ``grads += l2 W``
    over its weights, or with ``fused`` the plain SGD step ``W -= lr (dW + l2 W)``, ``b -= lr db`` in the
    same pass. Returns the weights' ``sum(W**2)`` before any step (float64)."""
    cdef Py_ssize_t l, p, used = _packed_size(layout, packing), last = layout.shape[0] - 1
    cdef floating* W = _at(own, 0, used, b"own")
    cdef floating* dW = _at(grads, 0, used, b"grads")
    cdef floating v
    cdef double squares = 0
    for l in range(last + 1):
        for p in range(packing[4 * l + 2], packing[4 * l + 3]):
            v = W[p]
            squares += <double>v * v
            if fused:
                W[p] = v - lr * (dW[p] + l2 * v)
            else:
                dW[p] += l2 * v
        for p in range(packing[4 * l + 3], used if l == last else packing[4 * l + 6]):
            if fused:
                W[p] -= lr * dW[p]
    return squares


cdef int _units_batch_epoch(const int64_t[:, ::1] layout, floating[::1] own, floating[::1] grads,
                           floating[:, ::1] state, const int64_t* packing, const floating* X, const floating[::1] Y,
                           const double* w, const int64_t[::1] order, Py_ssize_t batch_size, const Step* c,
                           double[::1] lrs, floating[::1] acts, floating[::1] derivatives, const int64_t[::1] offsets,
                           floating[::1] z, double[::1] lse, floating[::1] deltas, floating[::1] xb,
                           floating[::1] yb, double[::1] wb, floating[:, :, ::1] exchange, Py_ssize_t t,
                           int64_t* sync, double* partials, Py_ssize_t step, double* loss,
                           Py_ssize_t* steps) noexcept nogil:
    """Thread ``t``'s part of an epoch of batches of ``batch_size`` rows (dense; at most ``BLOCK_ROWS``)
    from optimizer step ``step``, each layer split between the threads as steps of one row split it
    (``_units_epoch``), its part of the weights, their gradient and the optimizer's state packed into
    ``own``, ``grads`` and ``state``; every thread gathers each batch (of ``X``, the columns its part of
    the first layer reads) and computes its loss and output deltas. Thread 0's ``loss`` and ``steps`` as
    ``train_epoch`` returns them. Returns the status."""
    cdef Masks masks
    cdef Py_ssize_t i, r, start, m, source, n = order.shape[0], n_in = layout[0, 0]
    cdef Py_ssize_t n_out = layout[layout.shape[0] - 1, 1], threads = exchange.shape[1], width = exchange.shape[2]
    cdef Py_ssize_t n_batches = (n + batch_size - 1) // batch_size
    cdef floating* x = _at(xb, 0, batch_size * n_in, b"gathered X")
    cdef floating* target = _at(yb, 0, batch_size * n_out, b"gathered Y")
    cdef double* weight = NULL
    cdef double total = 0, value, squares = 0
    cdef Py_ssize_t lo = packing[0] if _by_inputs(layout, 0) else 0, hi = packing[1] if _by_inputs(layout, 0) else n_in
    cdef int64_t meeting = 0
    cdef floating l2
    cdef bint fused = _fused(c)  # plain SGD: the L2 term and the step in one pass
    steps[0], loss[0] = 0, NAN
    for i in range(n_batches):
        start = i * batch_size
        m = min(batch_size, n - start)
        steps[0] = i
        if w != NULL:
            weight = <double*>_weights(wb, m)
        for r in range(m):  # every thread reads every row: each finds a bad row alike
            source = order[start + r]
            if source < 0 or source >= n:
                return BAD_ROW
            _one_row(X, NULL, Y, w, source, n_in, lo, hi, n_out, x + r * n_in, target + r * n_out,
                     weight + r if w != NULL else NULL)
        masks = _masks(c, step + i, 0)
        meeting = _units_block_forward(layout, own, packing, x, m, acts, derivatives, offsets, z, lse,
                                       &exchange[i & 1, 0, 0], width, t, threads, sync, meeting, &masks)
        if meeting == 0:
            return NOT_FINITE
        value = _loss(layout, yb, weight, m, acts, offsets, z, lse, deltas, c.loss)
        if not isfinite(value):
            return NOT_FINITE
        meeting = _units_block_backward(layout, own, grads, packing, x, m, acts, derivatives, offsets, deltas,
                                        &exchange[i & 1, 0, 0], width, t, threads, sync, meeting)
        if meeting == 0:
            return NOT_FINITE
        l2 = <floating>_batch_l2(c, _rows(weight, m))
        if fused or l2 != 0:
            squares = _units_finish(layout, own, grads, packing, l2, <floating>lrs[i], fused)
        if l2 != 0 and not isfinite(squares):
            return NOT_FINITE
        if not fused:
            meeting = _units_step(layout, own, grads, state, packing, x, m, yb, weight, value, squares, c, l2, lrs,
                                  i, step, acts, derivatives, offsets, z, lse, deltas, &exchange[i & 1, 0, 0], width,
                                  t, threads, sync, meeting, partials, &masks)
            if meeting == 0:
                return NOT_FINITE
        if t == 0:
            total += value * m
        if l2 != 0:
            total += 0.5 * l2 * squares * m
    steps[0] = n_batches
    return _units_result(own, state, total, n, t, threads, sync, meeting, partials, loss)


# ---------------------------------------------------------------- the backend's functions (fastgd.kernels.protocol)
cdef Sparse _sparse(X, const floating[::1] like):
    """Sparse rows ``X`` (a ``fastgd.kernels.CSR`` of the dtype of ``like``) as the kernels take
    them: pointers into its arrays, which outlive the call."""
    cdef const floating[::1] data = X.data
    cdef const int64_t[::1] indices = X.indices, indptr = X.indptr
    cdef Sparse rows
    rows.data = &data[0] if data.shape[0] > 0 else NULL
    rows.indices = &indices[0] if indices.shape[0] > 0 else NULL
    rows.indptr = &indptr[0]
    rows.rows = NULL
    return rows


def workspace(layout, dtype, rows, batch_rows, sparse, keep_outputs):
    return Workspace(layout, dtype, rows, batch_rows, min(rows, SMALL_BATCH), min(rows, BLOCK_ROWS), sparse,
                     keep_outputs)


def forward(const int64_t[:, ::1] layout, const floating[::1] params, X, ws):
    cdef bint dense = isinstance(X, np.ndarray)
    cdef const floating[::1] x = X.reshape(-1) if dense else params[:0]
    cdef Sparse rows
    cdef const Sparse* sparse = NULL if dense else &rows
    cdef floating[::1] acts = ws.acts, derivatives = ws.derivatives, z = ws.z
    cdef double[::1] lse = ws.lse
    cdef const int64_t[::1] offsets = ws.offsets
    cdef Py_ssize_t m = X.shape[0]
    if not dense:
        rows = _sparse(X, params)
    with nogil:
        _forward(layout, params, x, sparse, m, acts, derivatives, offsets, z, lse, False, NULL)


def data_loss(const int64_t[:, ::1] layout, const floating[::1] params, X, Y, const double[::1] weights, int loss,
             ws):
    cdef bint dense = isinstance(X, np.ndarray)
    cdef const floating[::1] x = X.reshape(-1) if dense else params[:0], y = Y.reshape(-1)
    cdef Sparse rows
    cdef const Sparse* sparse = NULL if dense else &rows
    cdef floating[::1] acts = ws.acts, derivatives = ws.derivatives, z = ws.z, deltas = ws.deltas
    cdef double[::1] lse = ws.lse
    cdef const int64_t[::1] offsets = ws.offsets
    cdef Py_ssize_t m = X.shape[0]
    cdef double value
    if not dense:
        rows = _sparse(X, params)
    with nogil:
        _forward(layout, params, x, sparse, m, acts, derivatives, offsets, z, lse, False, NULL)
        value = _loss(layout, y, _weights(weights, m), m, acts, offsets, z, lse, deltas, loss)
    return value


def l2_penalty(const int64_t[:, ::1] layout, const floating[::1] params, double l2):
    cdef double squares
    with nogil:
        squares = _sum_of_squares(layout, params)
    return 0.5 * l2 * squares


def backward(const int64_t[:, ::1] layout, const floating[::1] params, X, Y, const double[::1] weights,
             const Step[::1] config, ws, floating[::1] grads):
    cdef bint dense = isinstance(X, np.ndarray)
    cdef const floating[::1] x = X.reshape(-1) if dense else params[:0], y = Y.reshape(-1)
    cdef Sparse rows
    cdef const Sparse* sparse = NULL if dense else &rows
    cdef floating[::1] acts = ws.acts, derivatives = ws.derivatives, z = ws.z, deltas = ws.deltas, row = ws.row
    cdef double[::1] lse = ws.lse
    cdef const int64_t[::1] offsets = ws.offsets
    cdef Py_ssize_t m = X.shape[0]
    cdef double value
    cdef Step c = config[0]
    # Without a step (lr 0, not fused) the kernels leave params as they are: read-only is fine.
    cdef floating[::1] writable = <floating[:params.shape[0]]> <floating*> &params[0]
    cdef const double* w = _weights(weights, m)
    if not dense:
        rows = _sparse(X, params)
    with nogil:
        value = _step(layout, writable, grads, x, sparse, y, w, m, c.loss, <floating>_batch_l2(&c, _rows(w, m)), 0,
                      False, acts, derivatives, offsets, z, lse, deltas, row, NULL)
    return value


def clip(floating[::1] grads, const Step[::1] config):
    cdef Step c = config[0]
    with nogil:
        _clip(grads, &c)


def update(floating[::1] params, floating[::1] grads, floating[:, ::1] state, const Step[::1] config, double lr,
           Py_ssize_t step):
    cdef Step c = config[0]
    with nogil:
        _update(params, grads, state, &c, lr, step)


def shuffle(int64_t[::1] order, uint32_t[::1] generator):
    with nogil:
        _shuffle(order, generator)


def train_epoch(const int64_t[:, ::1] layout, floating[::1] params, floating[::1] grads, floating[:, ::1] state,
                X, Y, const double[::1] weights, int64_t[::1] order, Py_ssize_t batch_size,
                const Step[::1] config, double[::1] lrs, Py_ssize_t step, ws):
    cdef bint dense = isinstance(X, np.ndarray)
    cdef const floating[::1] x = X.reshape(-1) if dense else params[:0], y = Y.reshape(-1)
    cdef Sparse rows, batch
    cdef const Sparse* sparse = NULL if dense else &rows
    cdef floating[::1] acts = ws.acts, derivatives = ws.derivatives, z = ws.z, deltas = ws.deltas, row = ws.row
    cdef floating[::1] xb = ws.x.reshape(-1), yb = ws.y.reshape(-1)
    cdef double[::1] lse = ws.lse, wb = ws.w
    cdef const int64_t[::1] offsets = ws.offsets
    cdef Py_ssize_t n = X.shape[0], n_in = X.shape[1], n_out = Y.shape[1], i, r, j, source
    cdef Py_ssize_t n_batches = (n + batch_size - 1) // batch_size, start, m, steps = 0
    cdef Step c = config[0]
    cdef bint fused = _fused(&c)
    cdef double value = 0, total = 0
    cdef int status = OK
    cdef floating* gathered_x = NULL
    cdef floating* gathered_y
    cdef const double* w = _weights(weights, n)
    cdef double* gathered_w = NULL
    if not dense:
        rows = _sparse(X, params)
    if fused and batch_size == 1 and n > 1 and layout.shape[0] > 1:
        with nogil:
            status = _stochastic_epoch(layout, params, grads, _at(x, 0, n * n_in, b"X") if dense else NULL, sparse, y,
                                       w, order, &c, lrs, acts, derivatives, offsets, z, lse, deltas, yb, wb, row,
                                       step, &value, &steps)
        return value, steps, status
    with nogil:
        for i in range(n_batches):
            if n_batches == 1:
                m = n
                value = _train_step(layout, params, grads, state, x, sparse, y, w, n, &c, &lrs[i], step + i, fused,
                                    acts, derivatives, offsets, z, lse, deltas, row)
            else:
                start = i * batch_size
                m = min(batch_size, n - start)
                gathered_y = _at(yb, 0, m * n_out, b"gathered Y")
                if dense:
                    gathered_x = _at(xb, 0, m * n_in, b"gathered X")
                if w != NULL:
                    gathered_w = <double*>_weights(wb, m)
                for r in range(m):
                    source = order[start + r]
                    if source < 0 or source >= n:
                        status = BAD_ROW
                        break
                    if dense:
                        for j in range(n_in):
                            gathered_x[r * n_in + j] = x[source * n_in + j]
                    for j in range(n_out):
                        gathered_y[r * n_out + j] = y[source * n_out + j]
                    if w != NULL:
                        gathered_w[r] = w[source]
                if status != OK:
                    break
                batch = rows
                batch.rows = &order[start]  # sparse rows are read where they are, in the batch's order
                value = _train_step(layout, params, grads, state, xb, NULL if dense else &batch, yb, gathered_w, m,
                                    &c, &lrs[i], step + i, fused, acts, derivatives, offsets, z, lse, deltas, row)
            if not isfinite(value):
                status = NOT_FINITE
                break
            total += value * m
            steps += 1
        if status == OK and not _finite(params):
            status = NOT_FINITE
        for i in range(state.shape[0]):
            if status == OK and not _finite(state[i]):
                status = NOT_FINITE
    if status == BAD_ROW:
        return float("nan"), steps, status
    if steps < n_batches:  # stopped at a batch whose loss is not finite
        return value, steps, status
    return total / n, n_batches, status


def train_epoch_share(const int64_t[:, ::1] layout, floating[::1] params, floating[::1] grads,
                      floating[:, ::1] parts, floating[:, ::1] state, X, Y, const double[::1] weights,
                      const int64_t[::1] order, Py_ssize_t batch_size, const Step[::1] config, double[::1] lrs,
                      Py_ssize_t step, ws, Py_ssize_t share, int64_t[::1] sync, double[::1] losses,
                      double[::1] partials):
    cdef bint dense = isinstance(X, np.ndarray)
    cdef const floating[::1] x = X.reshape(-1) if dense else params[:0], y = Y.reshape(-1)
    cdef Sparse rows
    cdef const Sparse* sparse = NULL if dense else &rows
    cdef floating[::1] acts = ws.acts, derivatives = ws.derivatives, z = ws.z, deltas = ws.deltas
    cdef floating[::1] xb = ws.x.reshape(-1), yb = ws.y.reshape(-1)
    cdef double[::1] lse = ws.lse, wb = ws.w
    cdef const int64_t[::1] offsets = ws.offsets
    cdef Step c = config[0]
    cdef const double* w = _weights(weights, X.shape[0])
    cdef Py_ssize_t threads = losses.shape[0], P = params.shape[0]
    cdef Py_ssize_t low = P * share // threads, high = P * (share + 1) // threads
    cdef floating[::1] own = grads, own_params = params[low:high], own_grads = grads[low:high]
    cdef floating[:, ::1] own_state = state[:, low:high]
    cdef double result[2]
    cdef int status
    result[0] = result[1] = 0
    if share > 0:
        own = parts[share - 1]
    if not dense:
        rows = _sparse(X, params)
    with nogil:
        status = _share_epoch(layout, params, grads, own, parts, state, x, sparse, y, w, order, batch_size, &c, lrs,
                              step, acts, derivatives, offsets, z, lse, deltas, xb, yb, wb, own_params, own_grads,
                              own_state, low, high, share, threads, &sync[0], &losses[0], &partials[0], result)
    if share > 0:
        return None
    if status == BAD_ROW:
        return float("nan"), int(result[1]), status
    return result[0], int(result[1]), status


def train_epoch_units(const int64_t[:, ::1] layout, floating[::1] params, floating[:, ::1] state, X, Y,
                      const double[::1] weights, const int64_t[::1] order, Py_ssize_t batch_size,
                      const Step[::1] config, double[::1] lrs, Py_ssize_t step, ws, floating[:, ::1] own,
                      Py_ssize_t share, int64_t[::1] sync, floating[:, :, ::1] exchange, double[::1] partials):
    cdef bint dense = isinstance(X, np.ndarray)
    cdef const floating[::1] x = X.reshape(-1) if dense else params[:0], y = Y.reshape(-1)
    cdef Sparse rows
    cdef const Sparse* sparse = NULL if dense else &rows
    cdef floating[::1] acts = ws.acts, derivatives = ws.derivatives, z = ws.z, deltas = ws.deltas
    cdef floating[::1] xb = ws.x.reshape(-1), yb = ws.y.reshape(-1), row = ws.row
    cdef double[::1] lse = ws.lse, wb = ws.w
    cdef const int64_t[::1] offsets = ws.offsets
    cdef Step c = config[0]
    cdef const double* w = _weights(weights, X.shape[0])
    cdef int64_t[:, ::1] packing = np.empty((layout.shape[0], 4), np.int64)
    cdef double loss = 0
    cdef Py_ssize_t steps = 0
    cdef Py_ssize_t k
    cdef int status
    if not dense:
        rows = _sparse(X, params)
    with nogil:
        _packing(layout, share, exchange.shape[1], &packing[0, 0])
        _pack(layout, params, own[0], &packing[0, 0], False, True)
        for k in range(state.shape[0]):
            _pack(layout, state[k], own[2 + k], &packing[0, 0], False, True)
        if batch_size == 1:
            status = _units_epoch(layout, own[0], own[1], own[2:], &packing[0, 0],
                                  _at(x, 0, order.shape[0] * layout[0, 0], b"X") if dense else NULL, sparse, y, w,
                                  order, &c, lrs, acts, derivatives, offsets, z, lse, deltas, yb, wb, row, exchange,
                                  share, &sync[0], &partials[0], step, &loss, &steps)
        else:
            status = _units_batch_epoch(layout, own[0], own[1], own[2:], &packing[0, 0],
                                        _at(x, 0, order.shape[0] * layout[0, 0], b"X"), y, w, order, batch_size, &c,
                                        lrs, acts, derivatives, offsets, z, lse, deltas, xb, yb, wb, exchange, share,
                                        &sync[0], &partials[0], step, &loss, &steps)
        if status != OK:
            _abandon(&sync[0], exchange.shape[1])
        _pack(layout, params, own[0], &packing[0, 0], True, share == 0)
        for k in range(state.shape[0]):
            _pack(layout, state[k], own[2 + k], &packing[0, 0], True, share == 0)
    if share > 0:
        return None
    return loss, steps, status


def batch_gradient(const int64_t[:, ::1] layout, const floating[::1] params, floating[::1] grads, X, Y,
                   const double[::1] weights, Py_ssize_t first, Py_ssize_t last, const Step[::1] config,
                   Py_ssize_t step, ws):
    cdef bint dense = isinstance(X, np.ndarray)
    cdef Py_ssize_t n = X.shape[0], n_in = X.shape[1], n_out = Y.shape[1]
    cdef const floating[::1] x = X.reshape(-1)[first * n_in : last * n_in] if dense else params[:0]
    cdef const floating[::1] y = Y.reshape(-1)[first * n_out : last * n_out]
    cdef Sparse rows
    cdef const Sparse* sparse = NULL if dense else &rows
    cdef floating[::1] acts = ws.acts, derivatives = ws.derivatives, z = ws.z, deltas = ws.deltas
    cdef double[::1] lse = ws.lse
    cdef const int64_t[::1] offsets = ws.offsets
    cdef const double* w = _weights(weights, n)
    cdef double value
    cdef Step c = config[0]
    cdef Masks masks = _masks(&c, step, first)
    # Without a step the kernels leave params as they are: read-only is fine.
    cdef floating[::1] writable = <floating[:params.shape[0]]> <floating*> &params[0]
    if not dense:
        rows = _sparse(X, params)
        rows.indptr += first  # the share's rows from its first
    with nogil:
        value = _gradient_blocks(layout, writable, grads, x, sparse, y, w + first if w != NULL else NULL,
                                 last - first, _loss_base(layout, w, n, c.loss), c.loss, acts, derivatives, offsets,
                                 z, lse, deltas, &masks)
    return value


def batch_step(const int64_t[:, ::1] layout, floating[::1] params, floating[::1] grads, const floating[:, ::1] parts,
               floating[:, ::1] state, X, Y, const double[::1] weights, const double[::1] losses,
               const Step[::1] config, double[::1] lrs, Py_ssize_t step, ws):
    cdef bint dense = isinstance(X, np.ndarray)
    cdef const floating[::1] x = X.reshape(-1) if dense else params[:0], y = Y.reshape(-1)
    cdef Sparse rows
    cdef const Sparse* sparse = NULL if dense else &rows
    cdef floating[::1] acts = ws.acts, derivatives = ws.derivatives, z = ws.z, deltas = ws.deltas
    cdef double[::1] lse = ws.lse
    cdef const int64_t[::1] offsets = ws.offsets
    cdef Step c = config[0]
    cdef Py_ssize_t m = X.shape[0]
    cdef int status
    cdef double value
    if not dense:
        rows = _sparse(X, params)
    with nogil:
        status = _batch_step(layout, params, grads, parts, state, x, sparse, y, _weights(weights, m), m, losses, &c,
                             &lrs[0], step, acts, derivatives, offsets, z, lse, deltas, &value)
    return value, 1 if isfinite(value) else 0, status
