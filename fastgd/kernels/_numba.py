"""Numba backend: the reference's kernels JIT-compiled, and a fused whole-epoch loop.

Same contracts as the reference (``_numpy.py``). Matrix products go through
``_gemm`` on the flat buffers: register-blocked tiles of its own (``_tile``), BLAS's gemv or a loop
where a side is one. The backward pass of a
batch of at most ``SMALL_BATCH`` rows runs as loops over the rows of ``W``
instead, which for plain SGD fold the gradient into the update: no gradient
array is formed, and each row of ``W`` is read once per step (for one row, the
delta of the layer below comes out of the same pass); a batch of one row also
goes forward by loops, and plain SGD on one row per step takes each step's
update of the first layer in the next row's forward pass. Bias, activation,
loss and output delta are fused into one pass per row; the forward pass keeps
the derivative f'(z) of each hidden unit, by which the backward pass multiplies
its delta. An epoch of one batch may come in shares of its rows, which threads
compute at once (``batch_gradient``), then one step (``batch_step``); an
epoch of mini-batches, or of one batch by a line search, may run on threads
that each take a share of every batch's rows and a range of the parameters,
meeting three times a step (``train_epoch_share``); an epoch of one row a step,
or of dense batches of at most ``BLOCK_ROWS`` rows, on threads that each train a
packed part of every layer (its rows or its units of ``W``), meeting at each sum
of partial products (``train_epoch_units``).

float32 and float64 share one source: Numba compiles a specialisation per
dtype, and scalars are cast to the array dtype (``dtype.type``) so float32
loops stay float32. Losses accumulate in float64. Each kind of epoch (an
optimizer's rule or a line search, with or without batches small enough for
the loops, plain SGD on one row per step) is a specialisation of its own too,
compiled on its first use.
"""

import functools
import hashlib
import math
import platform
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from llvmlite import binding as llvm, ir
from numba import njit, types
from numba.core import cgutils, config
from numba.core.codegen import CPUCodeLibrary
from numba.extending import intrinsic, overload
from numba.np.arrayobj import get_itemsize, make_array, populate_array
from numba.np.linalg import _BLAS, ensure_blas
from numba.np.numpy_support import as_dtype

from ._numba_cache import use_private_fallback
from ._workspace import Workspace

# The codes of fastgd._codes, kept here so that cached machine code follows this file
# alone (a test checks that they agree with the tables).
IDENTITY, RELU, SIGMOID, TANH, SOFTMAX, EXP = 0, 1, 2, 3, 4, 5
LEAKY_RELU, ELU, GELU, GELU_TANH, SILU, SOFTPLUS = 6, 7, 8, 9, 10, 11
CROSS_ENTROPY, BINARY_CROSS_ENTROPY, MSE, POISSON = 0, 1, 2, 3
SGD, MOMENTUM, ADAM, RMSPROP, ADAGRAD, LINE_SEARCH = 0, 1, 2, 3, 4, 5
OK, NOT_FINITE, BAD_ROW = 0, 1, 2
CODES = {"activations": {"identity": IDENTITY, "relu": RELU, "sigmoid": SIGMOID, "tanh": TANH, "softmax": SOFTMAX,
                         "exp": EXP, "leaky_relu": LEAKY_RELU, "elu": ELU, "gelu": GELU, "gelu_tanh": GELU_TANH,
                         "silu": SILU, "softplus": SOFTPLUS},
         "losses": {"cross_entropy": CROSS_ENTROPY, "binary_cross_entropy": BINARY_CROSS_ENTROPY, "mse": MSE,
                    "poisson": POISSON},
         "optimizers": {"sgd": SGD, "momentum": MOMENTUM, "adam": ADAM, "rmsprop": RMSPROP, "adagrad": ADAGRAD,
                        "line_search": LINE_SEARCH},
         "status": {"OK": OK, "NOT_FINITE": NOT_FINITE, "BAD_ROW": BAD_ROW}}

use_private_fallback(__file__)

SHUFFLES = True  # it has a ``shuffle`` kernel (fastgd.kernels.protocol.Backend)

# Contraction (FMA) and reassociation (vectorised reductions) only: no
# "nnan"/"ninf", so that a diverging loss is still seen as NaN or infinity.
_OPTIONS = dict(cache=True, nogil=True, error_model="numpy", fastmath={"contract", "reassoc", "nsz"})
_COMPILER = ThreadPoolExecutor(1, thread_name_prefix="fastgd-compile")  # its thread starts at the first compile


def _compiles_off_the_main_thread(dispatcher):
    """``dispatcher``, which compiles for a call from the main thread (or loads from the cache) on a
    thread of its own while the main thread waits. A Ctrl-C lands on the main thread: in Numba's
    compiler it could leave the compiler lock held (a thread that then waited for it hung) or free an
    LLVM object twice (the process aborted). The waiting main thread takes a Ctrl-C at once, and the
    compile finishes, for the next call."""
    compile_for_args = dispatcher._compile_for_args  # what Numba calls on a call it has no code for

    def compile_apart(*args, **kws):
        if threading.current_thread() is not threading.main_thread():
            return compile_for_args(*args, **kws)
        return _COMPILER.submit(compile_for_args, *args, **kws).result()

    dispatcher._compile_for_args = compile_apart
    return dispatcher


# A kernel compiled apart that another calls is in the caller's code twice over: Numba links a copy
# of it into the caller (a weak definition, ``linkonce_odr``) and optimizes it again there, where
# reassociation may sum in another order than its own code does. In the process that compiled, the
# callee's own code was loaded first and the caller's calls bound to it; in one that loads the
# caller from the cache, to the copy: other last bits (docs/backends.md). Each copy of one of these
# kernels is renamed for its caller, so that its calls bind to it in every process.
_MANGLED = "_ZN" + "".join(f"{len(part)}{part}" for part in __name__.split("."))  # how Numba names them


def _own_copies(optimize):
    """``CPUCodeLibrary._optimize_final_module`` (which Numba runs once a library's callees are linked
    in) that first renames the linked copies of this module's kernels after the library's own kernel."""
    @functools.wraps(optimize)
    def optimize_own_copies(library):
        kernels = [f for f in library._final_module.functions if not f.is_declaration and f.name.startswith(_MANGLED)]
        own = [f.name for f in kernels if f.linkage == llvm.Linkage.external]
        if own:
            caller = hashlib.sha1(own[0].encode()).hexdigest()[:16]
            for f in kernels:
                if f.linkage == llvm.Linkage.linkonce_odr:
                    f.name = f"{f.name}.in.{caller}"
        return optimize(library)
    optimize_own_copies.renames_copies = True
    return optimize_own_copies


if not getattr(CPUCodeLibrary._optimize_final_module, "renames_copies", False):
    CPUCodeLibrary._optimize_final_module = _own_copies(CPUCodeLibrary._optimize_final_module)


def _jit(function):
    return _compiles_off_the_main_thread(njit(**_OPTIONS)(function))


# Helpers called inside loops are inlined by Numba itself: left to LLVM, such
# calls were seen to stay calls and to stop vectorisation (5x slower).
_inline = njit(inline="always", **_OPTIONS)
# A constant argument of a helper that is compiled apart (``_jit``) is typed as its value, which
# would compile a specialisation of its own: such arguments are passed typed (``np.intp(0)``).

SMALL_BATCH = 16  # rows: above, the backward pass goes through BLAS
BLOCK_ROWS = 256  # rows: a larger batch goes through BLAS in blocks of this many, which stay in cache
ALL_ROWS = np.empty(0, np.int64)


# ---------------------------------------------------------------- the input: dense rows or sparse rows
# ``X`` is a 2-D array, or sparse rows: a tuple ``(data, indices, indptr, rows)`` of a CSR
# matrix (checked when made, fastgd.kernels.CSR) and the rows of it to take (empty: every row,
# in order). Numba compiles each kernel for each; the six functions below are all that tell
# them apart.
def _n_rows(X):
    """Rows of ``X``."""


def _rows_of(X, start, m):
    """Rows ``start`` to ``start + m`` of ``X``, where they are."""


def _input_product(X, W, Z):
    """``Z = X @ W``."""


def _input_gradient(X, D, dW, accumulate):
    """``dW = X.T @ D``, or with ``accumulate`` ``dW += X.T @ D``."""


def _input_block(X, block, n_in):
    """The rows of ``X``, dense, into ``block`` (row-major, width ``n_in``)."""


def _batch(X, order, start, m, xb):
    """Rows ``order[start:start + m]`` of ``X`` (checked already): gathered into ``xb``, or taken
    where they are."""


def _dense_batch(X, order, start, m, lo, hi, xb):
    """Rows ``order[start:start + m]`` of ``X`` (checked already) gathered dense into ``xb``: of dense
    ``X``, only its columns ``lo`` to ``hi``."""


@_inline
def _sparse_row(X, i):
    """``(first, last)``: row ``i`` of sparse rows ``X`` is stored at ``first:last``."""
    data, indices, indptr, rows = X
    r = rows[i] if rows.shape[0] > 0 else i
    return indptr[r], indptr[r + 1]


_overload = functools.partial(overload, inline="always", jit_options=dict(fastmath=_OPTIONS["fastmath"]))


@_overload(_n_rows)
def _n_rows_for(X):
    if isinstance(X, types.Array):
        return lambda X: X.shape[0]

    def sparse(X):
        if X[3].shape[0] > 0:
            return X[3].shape[0]
        return X[2].shape[0] - 1
    return sparse


@_overload(_rows_of)
def _rows_of_for(X, start, m):
    if isinstance(X, types.Array):
        return lambda X, start, m: X[start : start + m]

    def sparse(X, start, m):
        data, indices, indptr, rows = X
        if rows.shape[0] > 0:
            return data, indices, indptr, rows[start : start + m]
        return data, indices, indptr[start : start + m + 1], rows  # every row in order: a part of indptr
    return sparse


@_overload(_input_product)
def _input_product_for(X, W, Z):
    if isinstance(X, types.Array):
        return lambda X, W, Z: _matmul(X, W, Z)

    def product(X, W, Z):
        data, indices = X[0], X[1]
        for i in range(Z.shape[0]):
            z = Z[i]
            z[:] = 0
            first, last = _sparse_row(X, i)
            for p in range(first, last):
                v, w = data[p], W[indices[p]]
                for j in range(z.shape[0]):
                    z[j] += v * w[j]
    return product


@_overload(_input_gradient)
def _input_gradient_for(X, D, dW, accumulate):
    if isinstance(X, types.Array):
        return lambda X, D, dW, accumulate: _matmul_tn(X, D, dW, accumulate)

    def gradient(X, D, dW, accumulate):
        data, indices = X[0], X[1]
        if not accumulate:
            dW[:] = 0
        for i in range(D.shape[0]):
            d = D[i]
            first, last = _sparse_row(X, i)
            for p in range(first, last):
                v, g = data[p], dW[indices[p]]
                for j in range(d.shape[0]):
                    g[j] += v * d[j]
    return gradient


@_overload(_input_block)
def _input_block_for(X, block, n_in):
    if isinstance(X, types.Array):
        def dense(X, block, n_in):
            for i in range(X.shape[0]):
                _copy(block[i * n_in : (i + 1) * n_in], X[i])
        return dense

    def sparse(X, block, n_in):
        data, indices = X[0], X[1]
        m = _n_rows(X)
        block[: m * n_in] = 0
        for i in range(m):
            first, last = _sparse_row(X, i)
            for p in range(first, last):
                block[i * n_in + indices[p]] += data[p]
    return sparse


@_overload(_batch)
def _batch_for(X, order, start, m, xb):
    if isinstance(X, types.Array):
        def gathered(X, order, start, m, xb):
            for r in range(m):
                _copy(xb[r], X[order[start + r]])
            return _typed_read_only(xb[:m])
        return gathered
    return lambda X, order, start, m, xb: (X[0], X[1], X[2], order[start : start + m])


@_overload(_dense_batch)
def _dense_batch_for(X, order, start, m, lo, hi, xb):
    if isinstance(X, types.Array):
        def columns(X, order, start, m, lo, hi, xb):
            for r in range(m):
                _copy(xb[r, lo:hi], X[order[start + r], lo:hi])
            return xb[:m]
        return columns

    def sparse(X, order, start, m, lo, hi, xb):
        _input_block(_batch(X, order, start, m, xb), xb.reshape(-1), xb.shape[1])
        return xb[:m]
    return sparse


# ---------------------------------------------------------------- products
# Products by register-blocked tiles (as the Cython builds' AVX2 and AVX-512 code): C in tiles of
# TILE_ROWS rows by two vectors of columns, held in registers over up to TILE_DEPTH terms, B packed
# a panel of two vectors' columns at a time. BLAS packs both operands of every call and tunes for
# large matrices; for a network's products (k of 64 to a few hundred) the tiles run at the large
# GEMM's rate. Each element of C is summed in the order of t whatever tile holds it, so that a
# product split between threads adds up as the whole does. The vectors are as wide as the CPU Numba
# compiles for has them (NUMBA_CPU_FEATURES, else this CPU's): 64 bytes with AVX-512, else 32.
_FEATURES = config.CPU_FEATURES if config.CPU_FEATURES is not None else llvm.get_host_cpu_features().flatten()
TILE_VECTOR = 64 if "+avx512f" in _FEATURES else 32
TILE_ROWS = 8 if TILE_VECTOR == 64 else 6  # two vectors a row and the operands within the registers
TILE_DEPTH = 128


@_inline
def _tiled(rows, columns, k, itemsize):
    """Whether a row-major product of ``rows`` x ``columns`` over ``k`` terms goes by the tiles: at
    least a panel's columns, four tiles of rows to share each packed panel, and 16 terms; a smaller
    one costs BLAS little more than the call."""
    return columns >= 2 * TILE_VECTOR // itemsize and rows >= 4 * TILE_ROWS and k >= 16


@intrinsic
def _tile(typingctx, depth, panel, a, a_start, a_row, a_col, rows, c, c_start, ldc, add):
    """The tile of ``TILE_ROWS`` rows of C from ``c[c_start]`` (rows ``ldc`` apart, two vectors of
    columns) = A's rows from ``a[a_start]`` (rows ``a_row``, terms ``a_col`` apart; those past ``rows``
    read as the last) @ ``panel`` (``depth`` rows of two vectors), or with ``add`` C += that."""
    dtype = c.dtype

    def codegen(context, builder, signature, args):
        kinds = signature.args
        index = {name: context.cast(builder, args[i], kinds[i], types.intp)
                 for i, name in ((0, "depth"), (3, "a_start"), (4, "a_row"), (5, "a_col"), (6, "rows"),
                                 (8, "c_start"), (9, "ldc"))}
        add = context.cast(builder, args[10], kinds[10], types.boolean)
        panel, a, c = (make_array(kinds[i])(context, builder, args[i]).data for i in (1, 2, 7))
        scalar, size = context.get_value_type(dtype), context.get_abi_sizeof(context.get_value_type(dtype))
        lanes = TILE_VECTOR // size
        vector, integer = ir.VectorType(scalar, lanes), context.get_value_type(types.intp)

        def at(pointer, offset):
            return builder.bitcast(builder.gep(pointer, [offset]), vector.as_pointer())

        def constant(value):
            return ir.Constant(integer, value)

        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vector, [vector] * 3),
                                             f"llvm.fma.v{lanes}{'f32' if size == 4 else 'f64'}")
        zero = ir.Constant(vector, [ir.Constant(scalar, 0)] * lanes)
        splat = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
        undefined = ir.Constant(vector, ir.Undefined)
        sums = [[cgutils.alloca_once_value(builder, zero) for _ in range(2)] for _ in range(TILE_ROWS)]
        last = builder.sub(index["rows"], constant(1))
        starts = [builder.gep(a, [builder.add(index["a_start"], builder.mul(
            builder.select(builder.icmp_signed("<", constant(r), index["rows"]), constant(r), last),
            index["a_row"]))]) for r in range(TILE_ROWS)]
        with cgutils.for_range(builder, index["depth"]) as loop:
            row = builder.mul(loop.index, constant(2 * lanes))
            b = [builder.load(at(panel, builder.add(row, constant(v * lanes))), align=size) for v in range(2)]
            term = builder.mul(loop.index, index["a_col"])
            for r in range(TILE_ROWS):
                x = builder.load(builder.gep(starts[r], [term]))
                x = builder.insert_element(undefined, x, ir.Constant(ir.IntType(32), 0))
                x = builder.shuffle_vector(x, undefined, splat)  # A's element in every lane
                for v in range(2):
                    builder.store(builder.call(fma, [x, b[v], builder.load(sums[r][v])]), sums[r][v])
        for r in range(TILE_ROWS):
            for v in range(2):
                offset = builder.add(builder.mul(constant(r), index["ldc"]), constant(v * lanes))
                target = at(c, builder.add(index["c_start"], offset))
                value = builder.load(sums[r][v])
                value = builder.select(add, builder.fadd(value, builder.load(target, align=size)), value)
                builder.store(value, target, align=size)
        return context.get_dummy_value()

    return types.void(depth, panel, a, a_start, a_row, a_col, rows, c, c_start, ldc, add), codegen


@intrinsic
def _scratch(typingctx, like):
    """A 1-D array of ``like``'s dtype on the stack, aligned to a vector: a panel of ``TILE_DEPTH``
    rows of two vectors, then a tile of ``TILE_ROWS`` rows of two vectors."""
    array = types.Array(like.dtype, 1, "C")

    def codegen(context, builder, signature, args):
        scalar = context.get_value_type(like.dtype)
        size = context.get_abi_sizeof(scalar)
        lanes = TILE_VECTOR // size
        vectors = 2 * (TILE_DEPTH + TILE_ROWS)
        memory = cgutils.alloca_once(builder, ir.ArrayType(ir.VectorType(scalar, lanes), vectors))
        result = make_array(array)(context, builder)
        populate_array(result, data=builder.bitcast(memory, scalar.as_pointer()),
                       shape=[cgutils.intp_t(vectors * lanes)], strides=[cgutils.intp_t(size)],
                       itemsize=cgutils.intp_t(size), meminfo=None)
        return result._getvalue()

    return array(like), codegen


@_jit
def _product(m, n, k, a, a_row, a_col, b, b_row, b_col, add_to, c, ldc):
    """Row-major C (m, n) from ``c[0]``, rows ``ldc`` apart, = A @ B, or with ``add_to`` C += A @ B;
    A's element (r, t) at ``a[r * a_row + t * a_col]``, B's (t, j) at ``b[t * b_row + j * b_col]``."""
    width = 2 * TILE_VECTOR // c.itemsize
    scratch = _scratch(c)
    panel, out = _view(scratch, 0, (TILE_DEPTH * width,)), _view(scratch, TILE_DEPTH * width, (TILE_ROWS * width,))
    for t0 in range(0, k, TILE_DEPTH):
        depth = min(TILE_DEPTH, k - t0)
        add = add_to or t0 > 0
        for j in range(0, n, width):
            cols = min(width, n - j)
            for t in range(depth):
                row = _view(panel, t * width, (width,))
                if b_col == 1 and cols == width:
                    _copy(row, _view(b, (t0 + t) * b_row + j, (width,)))
                else:
                    for w in range(width):
                        row[w] = b[(t0 + t) * b_row + (j + w) * b_col] if w < cols else 0
            for i in range(0, m, TILE_ROWS):
                rows = min(TILE_ROWS, m - i)
                whole = rows == TILE_ROWS and cols == width  # else into ``out``, then its part of C
                target, start, ld = (c, i * ldc + j, ldc) if whole else (out, 0, width)
                _tile(depth, panel, a, i * a_row + t0 * a_col, a_row, a_col, rows, target, start, ld, add and whole)
                for r in range(0 if whole else rows):
                    for w in range(cols):
                        c[(i + r) * ldc + j + w] = out[r * width + w] + (c[(i + r) * ldc + j + w] if add else 0)


NO, TRANSPOSED = ord("N"), ord("T")  # BLAS's op(a): a, a.T


def _gemm(transa, transb, m, n, k, a, lda, b, ldb, beta, c, ldc):
    """Column-major ``c (m, n) = op(a) @ op(b) + beta c`` (``beta`` 0 or 1; ``transa``, ``transb``:
    ``NO`` or ``TRANSPOSED``) for flat arrays from each matrix's first element, each with its leading
    dimension, as BLAS takes them: an outer product (``k == 1``) by a loop and a side of one (its vectors
    contiguous) by gemv, where gemm would pack its operands whole (and clear ``c``); else the tiles
    (``_product``) where they pay (``_tiled``), else gemm, which clears ``c`` for ``k == 0`` too."""


def _gemv(dtype):
    """BLAS's ``y = op(a) @ x + beta y`` (Numba's ``numba_xxgemv``: kind, trans, m, n, alpha, a, lda, x,
    beta, y), for ``dtype``."""
    pointer = types.CPointer(dtype)
    return types.ExternalFunction("numba_xxgemv", types.intc(types.char, types.char, types.intp, types.intp,
                                                             pointer, pointer, types.intp, pointer, pointer, pointer))


@overload(_gemm)  # a call: BLAS does the work
def _gemm_for(transa, transb, m, n, k, a, lda, b, ldb, beta, c, ldc):
    ensure_blas()
    gemm, gemv, kind = _BLAS().numba_xxgemm(c.dtype), _gemv(c.dtype), ord("s" if c.dtype == types.float32 else "d")
    zero, one = np.zeros(1, as_dtype(c.dtype)), np.ones(1, as_dtype(c.dtype))  # constants, read through pointers

    def product(transa, transb, m, n, k, a, lda, b, ldb, beta, c, ldc):
        scale = one if beta != 0 else zero
        if k == 1:
            step_a, step_b = lda if transa == TRANSPOSED else 1, ldb if transb == NO else 1
            for j in range(n):
                b_j, column = b[j * step_b], c[j * ldc : j * ldc + m]
                if step_a == 1 and beta == 0:  # apart: the loop vectorises
                    for i in range(m):
                        column[i] = a[i] * b_j
                else:
                    for i in range(m):
                        column[i] = a[i * step_a] * b_j + (column[i] if beta != 0 else 0)
        elif m == 1 and k > 1 and ldc == 1 and (transa == TRANSPOSED or lda == 1):  # c' = op(b).T @ op(a)'
            gemv(kind, TRANSPOSED if transb == NO else NO, k if transb == NO else n, n if transb == NO else k,
                 one.ctypes, b.ctypes, ldb, a.ctypes, scale.ctypes, c.ctypes)
        elif n == 1 and k > 1 and (transb == NO or ldb == 1):  # c = op(a) @ b
            gemv(kind, transa, m if transa == NO else k, k if transa == NO else m, one.ctypes, a.ctypes, lda,
                 b.ctypes, scale.ctypes, c.ctypes)
        elif _tiled(n, m, k, c.itemsize):  # c.T (n, m) = op(b).T @ op(a).T, row-major
            _product(n, m, k, b, ldb if transb == NO else 1, 1 if transb == NO else ldb, a, lda if transa == NO else 1,
                     1 if transa == NO else lda, beta != 0, c, ldc)
        else:
            gemm(kind, transa, transb, m, n, k, one.ctypes, a.ctypes, lda, b.ctypes, ldb, scale.ctypes, c.ctypes,
                 ldc)
    return product


@_inline
def _matmul(A, B, C):
    """Row-major ``C (m, n) = A (m, k) @ B (k, n)``, all three C-contiguous."""
    m, k, n = A.shape[0], A.shape[1], B.shape[1]
    _gemm(NO, NO, n, m, k, _flat(B), n, _flat(A), k, 0.0, _flat(C), n)


@_inline
def _matmul_tn(A, D, C, accumulate):
    """Row-major ``C (k, n) = A.T @ D`` for ``A (m, k)``, ``D (m, n)``, or with ``accumulate``
    ``C += A.T @ D``, all three C-contiguous."""
    m, k, n = A.shape[0], A.shape[1], D.shape[1]
    _gemm(NO, TRANSPOSED, n, k, m, _flat(D), n, _flat(A), k, 1.0 if accumulate else 0.0, _flat(C), n)


@_inline
def _matmul_nt(D, W, R):
    """Row-major ``R (m, k) = D @ W.T`` for ``D (m, n)``, ``W (k, n)``, all three C-contiguous."""
    m, n, k = D.shape[0], D.shape[1], W.shape[0]
    _gemm(TRANSPOSED, NO, k, m, n, _flat(W), n, _flat(D), n, 0.0, _flat(R), k)


def workspace(layout, dtype, rows, batch_rows, sparse, keep_outputs):
    return Workspace(layout, dtype, rows, batch_rows, min(rows, SMALL_BATCH), min(rows, BLOCK_ROWS), sparse,
                     keep_outputs)


# ---------------------------------------------------------------- views
# Views made by slicing count references on their array: two atomic operations
# each, as costly as a narrow row's arithmetic. The kernels' buffers outlive every
# kernel call, so the per-row loops work on views that count none (``_view``).
@intrinsic
def _view(typingctx, array, offset, shape):
    """A C-contiguous view of ``shape`` (a tuple) from element ``offset`` of the contiguous
    ``array``, that holds no reference to it."""
    if not isinstance(array, types.Array) or array.layout != "C":
        return None
    view = array.copy(ndim=len(shape), layout="C")

    def codegen(context, builder, signature, args):
        source = make_array(signature.args[0])(context, builder, args[0])
        offset = context.cast(builder, args[1], signature.args[1], types.intp)
        sizes = [context.cast(builder, size, kind, types.intp)
                 for size, kind in zip(cgutils.unpack_tuple(builder, args[2]), signature.args[2])]
        itemsize = cgutils.intp_t(get_itemsize(context, view))
        strides, stride = [], itemsize
        for size in reversed(sizes):
            strides.insert(0, stride)
            stride = builder.mul(stride, size)
        result = make_array(view)(context, builder)
        populate_array(result, data=builder.gep(source.data, [offset]), shape=sizes, strides=strides,
                       itemsize=itemsize, meminfo=None)
        return result._getvalue()

    return view(array, offset, shape), codegen


@_inline
def _matrix(buffer, offset, m, n):
    """The ``(m, n)`` row-major block at ``offset`` of a flat buffer, as a 2-D view."""
    if offset < 0 or m < 0 or n < 0 or offset + m * n > buffer.shape[0]:
        raise IndexError("fastgd: a kernel's block runs past its buffer")
    return _view(buffer, offset, (m, n))


@_inline
def _flat(array):
    """A C-contiguous array as a flat view (``_view``), without ``reshape``'s checks."""
    return _view(array, 0, (array.size,))


@_inline
def _row(buffer, offset, n, i):
    """Row ``i`` of the row-major block of width ``n`` at ``offset`` of a flat buffer."""
    return _matrix(buffer, offset + i * n, 1, n)[0]


def _unowned(array):
    """``array`` as a view that holds no reference to it (``_view``); sparse rows as they are."""


@_overload(_unowned)
def _unowned_for(array):
    if isinstance(array, types.Array):
        return lambda array: _view(array, 0, array.shape)
    return lambda array: array


@_inline
def _copy(target, source):
    """``target[:] = source`` for 1-D arrays of one length, as a loop: Numba's slice
    assignment compiles its shape-mismatch message (seconds of string code per process)."""
    for j in range(target.shape[0]):
        target[j] = source[j]


# ---------------------------------------------------------------- rules
# What each activation, loss and optimizer computes, one function each, which the loops call by
# code. An activation takes a scalar ``z`` and its layer's ``parameter`` (a leaky ReLU's slope, an
# ELU's alpha, else 0; in z's type) and returns ``(f(z), f'(z))`` in z's type, as
# torch.nn.functional computes them.
def _typed(z, value):
    """``value`` as a scalar of ``z``'s type, so that float32 arithmetic stays float32."""


@_overload(_typed)
def _typed_for(z, value):
    kind = as_dtype(z).type
    return lambda z, value: kind(value)


@_inline
def _identity(z, parameter):
    return z, _typed(z, 1)


@_inline
def _relu(z, parameter):
    """A NaN gives 0."""
    zero = _typed(z, 0)
    return (z if z > 0 else zero), (_typed(z, 1) if z > 0 else zero)


@_inline
def _sigmoid(z, parameter):
    one = _typed(z, 1)
    s = one / (one + np.exp(-z))
    return s, s * (one - s)


@_inline
def _tanh(z, parameter):
    t = np.tanh(z)
    return t, _typed(z, 1) - t * t


@_inline
def _exp(z, parameter):
    """Outputs only."""
    e = np.exp(z)
    return e, e


@_inline
def _leaky_relu(z, parameter):
    """``parameter``: the slope below 0."""
    return (z if z > 0 else z * parameter), (_typed(z, 1) if z > 0 else parameter)


@_inline
def _elu(z, parameter):
    """``parameter``: alpha."""
    if z > 0:
        return z, _typed(z, 1)
    return parameter * math.expm1(z), parameter * np.exp(z)


@_inline
def _gelu(z, parameter):
    """The exact GELU, z times the normal distribution's cdf at z."""
    half, one = _typed(z, 0.5), _typed(z, 1)
    cdf = half * (one + math.erf(z * _typed(z, math.sqrt(0.5))))
    return z * cdf, cdf + z * np.exp(-half * z * z) * _typed(z, 1 / math.sqrt(2 * math.pi))


@_inline
def _gelu_tanh(z, parameter):
    """The GELU's tanh approximation."""
    half, one, three = _typed(z, 0.5), _typed(z, 1), _typed(z, 3)
    beta, kappa = _typed(z, math.sqrt(2 / math.pi)), _typed(z, 0.044715)
    t = np.tanh(beta * (z + kappa * z * z * z))
    return half * z * (one + t), half * (one + t) + half * z * (one - t * t) * beta * (one + three * kappa * z * z)


@_inline
def _silu(z, parameter):
    one = _typed(z, 1)
    s = one / (one + np.exp(-z))
    return z * s, s * (one + z * (one - s))


@_inline
def _softplus(z, parameter):
    """beta 1, threshold 20: linear above it."""
    one = _typed(z, 1)
    if z > _typed(z, 20):
        return z, one
    e = np.exp(z)
    return math.log1p(e), e / (e + one)


# One loop per activation, the code tested outside it: a test inside kept the loop from vectorising.
@_inline
def _activate_row(z, b, d, activation, parameter):
    """Hidden activation of one row in place, ``z = f(z + b)``, and ``d = f'(z + b)``."""
    if activation == RELU:
        for j in range(z.shape[0]):
            z[j], d[j] = _relu(z[j] + b[j], parameter)
    elif activation == SIGMOID:
        for j in range(z.shape[0]):
            z[j], d[j] = _sigmoid(z[j] + b[j], parameter)
    elif activation == TANH:
        for j in range(z.shape[0]):
            z[j], d[j] = _tanh(z[j] + b[j], parameter)
    elif activation == LEAKY_RELU:
        for j in range(z.shape[0]):
            z[j], d[j] = _leaky_relu(z[j] + b[j], parameter)
    elif activation == ELU:
        for j in range(z.shape[0]):
            z[j], d[j] = _elu(z[j] + b[j], parameter)
    elif activation == GELU:
        for j in range(z.shape[0]):
            z[j], d[j] = _gelu(z[j] + b[j], parameter)
    elif activation == GELU_TANH:
        for j in range(z.shape[0]):
            z[j], d[j] = _gelu_tanh(z[j] + b[j], parameter)
    elif activation == SILU:
        for j in range(z.shape[0]):
            z[j], d[j] = _silu(z[j] + b[j], parameter)
    elif activation == SOFTPLUS:
        for j in range(z.shape[0]):
            z[j], d[j] = _softplus(z[j] + b[j], parameter)
    else:
        for j in range(z.shape[0]):
            z[j], d[j] = _identity(z[j] + b[j], parameter)


@intrinsic
def _float64_of_bits(typingctx, bits):
    """The float64 whose bits are those of the int64 ``bits`` (a view of the layout would count references)."""
    if bits != types.int64:
        return None
    return types.float64(bits), lambda context, builder, signature, args: builder.bitcast(args[0], ir.DoubleType())


@_inline
def _parameter(layout, l, dtype):
    """The activation parameter of layer ``l`` (the bits of a float64 in its layout row), as a ``dtype``."""
    return dtype(_float64_of_bits(layout[l, 5]))


# Inverted dropout (the reference's ``_drop`` and ``dropped``): in a training step, each unit of a hidden
# layer with rate p > 0 is dropped by a counter-based hash of the seed, the step, the row's place in its
# batch, the layer and the unit (splitmix64's mixing function, uint64 arithmetic that wraps). ``masks`` is
# ``(on, mix(seed + step), place of the first row)``; forward, data_loss and backward pass ``on`` False.
_MIX0, _MIX1 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_UNIT = 2.0**-53  # (hash >> 11) times this: a uniform number in [0, 1)
NO_MASKS = (False, np.uint64(0), np.int64(0))


@_inline
def _mix(x):
    """splitmix64's mixing function of the uint64 ``x`` (every operand uint64: no float promotion)."""
    x = (x ^ (x >> np.uint64(30))) * _MIX0
    x = (x ^ (x >> np.uint64(27))) * _MIX1
    return x ^ (x >> np.uint64(31))


@_inline
def _masks(config, step, first):
    """The masks of optimizer step ``step`` for rows from place ``first`` of its batch."""
    return np.bool_(True), _mix(config[0].dropout_seed + np.uint64(step)), np.int64(first)


@_inline
def _no_masks():
    return np.bool_(False), np.uint64(0), np.int64(0)


@_inline
def _shifted(masks, start):
    """``masks`` for rows from ``start`` rows further on in the batch."""
    return masks[0], masks[1], masks[2] + np.int64(start)


@_inline
def _rate(layout, l):
    """The dropout rate of layer ``l`` (the bits of a float64 in its layout row), float64."""
    return _float64_of_bits(layout[l, 6])


@_inline
def _key(masks, i, l):
    """The key of row ``i`` (from the first row of ``masks``) in hidden layer ``l``."""
    return _mix(_mix(masks[1] + np.uint64(masks[2] + i)) + np.uint64(l))


@_inline
def _drop_row(a, d, p, scale, key):
    """Inverted dropout of one row of a hidden layer: a dropped unit's activation ``a`` and derivative
    ``d`` become 0, a kept one's are scaled by ``scale`` (1 / (1 - p) in their dtype)."""
    for j in range(a.shape[0]):
        if np.float64(_mix(key + np.uint64(j)) >> np.uint64(11)) * _UNIT < p:
            a[j] = 0
            d[j] = 0
        else:
            a[j] *= scale
            d[j] *= scale


# A loss takes one row, its logits ``z``, outputs ``out``, targets ``y`` and for softmax outputs
# the log-sum-exp of ``z``, and returns its loss summed over the outputs, in float64.
@_inline
def _cross_entropy(z, out, y, lse):
    """-sum_j y log softmax(z) = lse(z) sum_j y - y . z"""
    y_sum = y_dot_z = 0.0
    for j in range(z.shape[0]):
        y_sum += y[j]
        y_dot_z += np.float64(y[j]) * z[j]
    return lse * y_sum - y_dot_z


@_inline
def _binary_cross_entropy(z, out, y, lse):
    """sum_j log(1 + exp(z)) - y z"""
    total = 0.0
    for j in range(z.shape[0]):
        v = np.float64(z[j])
        total += max(v, 0.0) + np.log1p(np.exp(-abs(v))) - y[j] * v
    return total


@_inline
def _mse(z, out, y, lse):
    """sum_j (out - y)**2"""
    total = 0.0
    for j in range(z.shape[0]):
        e = np.float64(out[j]) - y[j]
        total += e * e
    return total


@_inline
def _poisson(z, out, y, lse):
    """sum_j y log y - y z - y + exp(z)"""
    total = 0.0
    for j in range(z.shape[0]):
        v, t = np.float64(z[j]), np.float64(y[j])
        total += (t * np.log(t) if t > 0 else 0.0) - t * v - t + np.exp(v)
    return total


def _same_data(context, builder, signature, args):
    """An intrinsic's code that returns its array argument retyped (the same data; no reference held)."""
    source = make_array(signature.args[0])(context, builder, args[0])
    result = make_array(signature.return_type)(context, builder)
    populate_array(result, data=source.data, shape=source.shape, strides=source.strides, itemsize=source.itemsize,
                   meminfo=None)
    return result._getvalue()


@intrinsic
def _contiguous(typingctx, array):
    """The 1-D ``array``, whose stride the caller has checked is one element, typed C-contiguous
    (the same data; no reference held)."""
    if not isinstance(array, types.Array) or array.ndim != 1:
        return None
    return array.copy(layout="C")(array), _same_data


@intrinsic
def _typed_read_only(typingctx, array):
    """``array`` typed read-only (the same data; no reference held): rows gathered into a buffer
    reach the passes through the code compiled for the data, which the kernels take read-only."""
    if not isinstance(array, types.Array):
        return None
    return array.copy(readonly=True)(array), _same_data


def _slot(state, k):
    """Row ``k`` of the optimizer state, typed C-contiguous: the state of a range of the parameters
    (``state[:, low:high]``, a thread's) has contiguous rows, on which the rules' loops vectorise."""


@_overload(_slot)
def _slot_for(state, k):
    if state.layout == "C":
        return lambda state, k: state[k]

    def contiguous(state, k):
        row = state[k]
        if row.shape[0] > 1 and row.strides[0] != row.itemsize:
            raise ValueError("fastgd: a row of the optimizer state is not contiguous")
        return _contiguous(row)
    return contiguous


# An optimizer's update takes every parameter one step in place, from the step's record ``c``
# (``config[0]``), learning rate ``lr`` (float64) and ``step`` (counting from 0); the rules are
# ``fastgd.optimizers``'s. Each complement 1 - x is taken in float64 and rounded once:
# 1 - float32(0.999) is 5e-5 off. A flag that picks the state rows a loop reads and writes is a
# constant in it: the loop is written once (``steps``) and called once per value of the flag. Tested
# inside, it stayed in the vectorised loop as masked loads and stores of those rows, which take a slow
# path on each vector whose page is not mapped (rows past the state the rule keeps, zeros not yet
# written): 40x slower. A value stored is kept for what follows: read back after a store to another
# array, it was not forwarded from its store where the row was not 64-byte aligned (Adam 3x slower).
@_inline
def _sgd(params, grads, state, c, lr, step):
    """SGD, with weight decay; with momentum, dampened, Nesterov's, or as Sutskever writes it."""
    dtype = params.dtype.type
    rate, weight_decay = dtype(lr), dtype(c.weight_decay)
    momentum, undamped = dtype(c.momentum), dtype(1 - c.dampening)
    nesterov = c.nesterov != 0
    if momentum == 0:
        for p in range(params.shape[0]):
            params[p] -= rate * (grads[p] + weight_decay * params[p])
    elif c.sutskever != 0:  # the buffer holds steps: v = momentum v - lr g
        velocity = _slot(state, 0)
        for p in range(params.shape[0]):
            g = grads[p] + weight_decay * params[p]
            v = momentum * velocity[p] - rate * g
            velocity[p] = v
            params[p] += momentum * v - rate * g if nesterov else v
    else:
        buffer = _slot(state, 0)
        for p in range(params.shape[0]):
            g = grads[p] + weight_decay * params[p]
            b = g if step == 0 else momentum * buffer[p] + undamped * g
            buffer[p] = b
            params[p] -= rate * (g + momentum * b if nesterov else b)


@_inline
def _momentum(params, grads, state, c, lr, step):
    """Momentum as an exponential average of the gradients."""
    dtype = params.dtype.type
    rate, beta, rest = dtype(lr), dtype(c.beta), dtype(1 - c.beta)
    velocity = _slot(state, 0)
    for p in range(params.shape[0]):
        velocity[p] = beta * velocity[p] + rest * grads[p]
        params[p] -= rate * velocity[p]


@_inline
def _adam(params, grads, state, c, lr, step):
    """Adam, AMSGrad, AdamW (``decoupled`` weight decay)."""
    dtype = params.dtype.type
    one = dtype(1)
    beta1, beta2, rest1, rest2, eps = dtype(c.beta1), dtype(c.beta2), dtype(1 - c.beta1), dtype(1 - c.beta2), \
        dtype(c.eps)
    amsgrad, decoupled = c.amsgrad != 0, c.decoupled != 0
    t = step + 1
    step_size = dtype(lr / (1 - c.beta1**t))
    inverse_root = dtype(1 / np.sqrt(1 - c.beta2**t))  # a product in the loop, not a second division
    decay = dtype(1 - lr * c.weight_decay) if decoupled else one
    coupled = dtype(c.weight_decay) if not decoupled else one - one
    if c.eps_hat != 0:  # eps added to sqrt(v) before the bias correction, which goes into the rate
        step_size = dtype(lr * np.sqrt(1 - c.beta2**t) / (1 - c.beta1**t))
        inverse_root = one
    m, v = _slot(state, 0), _slot(state, 1)
    maximum = _slot(state, 2) if amsgrad else v

    def steps(amsgrad):
        for p in range(params.shape[0]):
            w = params[p]
            g = grads[p] + coupled * w
            moment = m[p] = beta1 * m[p] + rest1 * g
            v_hat = v[p] = beta2 * v[p] + rest2 * g * g
            if amsgrad:
                v_hat = maximum[p] = max(maximum[p], v_hat)
            params[p] = w * decay - step_size * moment / (np.sqrt(v_hat) * inverse_root + eps)

    if amsgrad:
        steps(True)
    else:
        steps(False)


@_inline
def _rmsprop(params, grads, state, c, lr, step):
    """RMSprop, ``centered`` or not, with or without momentum."""
    dtype = params.dtype.type
    rate, alpha, rest, eps, momentum = dtype(lr), dtype(c.alpha), dtype(1 - c.alpha), dtype(c.eps), dtype(c.momentum)
    centered, moving = c.centered != 0, momentum != 0
    squares = _slot(state, 0)
    means = _slot(state, 1) if centered else squares
    buffers = _slot(state, 2) if moving else squares

    def steps(centered, moving):
        for p in range(params.shape[0]):
            g = grads[p]
            square = squares[p] = alpha * squares[p] + rest * g * g
            if centered:
                mean = means[p] = alpha * means[p] + rest * g
                denominator = np.sqrt(square - mean * mean) + eps
            else:
                denominator = np.sqrt(square) + eps
            if moving:
                buffer = buffers[p] = momentum * buffers[p] + g / denominator
                params[p] -= rate * buffer
            else:
                params[p] -= rate * g / denominator

    if centered and moving:
        steps(True, True)
    elif centered:
        steps(True, False)
    elif moving:
        steps(False, True)
    else:
        steps(False, False)


@_inline
def _adagrad(params, grads, state, c, lr, step):
    dtype = params.dtype.type
    rate, eps = dtype(lr), dtype(c.eps)
    squares = _slot(state, 0)
    for p in range(params.shape[0]):
        g = grads[p]
        squares[p] += g * g
        params[p] -= rate * g / (np.sqrt(squares[p]) + eps)


# ---------------------------------------------------------------- the output layer, the loss
@_inline
def _output_row(z, b, out, activation, one):
    """Output layer of one row: logits ``z += b``, ``out = softmax(z)``, ``sigmoid(z)``,
    ``exp(z)`` or ``z``. Returns log-sum-exp(z) for softmax (what cross-entropy needs), else 0."""
    for j in range(z.shape[0]):
        z[j] += b[j]
    if activation == SOFTMAX:
        top = z[0]
        for j in range(1, z.shape[0]):
            top = max(top, z[j])
        total = one - one
        for j in range(z.shape[0]):
            out[j] = np.exp(z[j] - top)
            total += out[j]
        for j in range(z.shape[0]):
            out[j] /= total
        return np.float64(top) + np.log(np.float64(total))
    elif activation == SIGMOID:
        for j in range(z.shape[0]):
            out[j] = _sigmoid(z[j], one)[0]
    elif activation == EXP:
        for j in range(z.shape[0]):
            out[j] = _exp(z[j], one)[0]
    else:
        _copy(out, z)
    return 0.0


@_inline
def _loss_row(z, out, y, lse, activation, loss, scale, delta, one):
    """Loss of one row (float64, summed over its outputs); ``delta = dL/dz``."""
    if loss == CROSS_ENTROPY:
        total = _cross_entropy(z, out, y, lse)
    elif loss == BINARY_CROSS_ENTROPY:
        total = _binary_cross_entropy(z, out, y, lse)
    elif loss == POISSON:
        total = _poisson(z, out, y, lse)
    else:
        total = _mse(z, out, y, lse)
    for j in range(z.shape[0]):
        d = (out[j] - y[j]) * scale
        if loss == MSE and activation == SIGMOID:
            d *= out[j] * (one - out[j])
        delta[j] = d
    return total


@_inline
def _rows(weights, m):
    """What a batch of ``m`` rows with ``weights`` (empty: all 1) counts as: its total weight (float64)."""
    if weights.shape[0] == 0:
        return np.float64(m)
    total = 0.0
    for i in range(m):
        total += weights[i]
    return total


@_inline
def _loss_base(layout, weights, m, loss):
    """What the loss of ``m`` rows with ``weights`` (empty: all 1) is divided by: their total weight,
    times the outputs for losses that are means over every element."""
    return _rows(weights, m) * (1 if loss == CROSS_ENTROPY else layout[layout.shape[0] - 1, 1])


@_jit
def _loss_rows(layout, Y, weights, start, m, count, acts, offsets, z, lse, deltas, loss):
    """Weighted sum (float64) of the losses of rows ``start`` to ``start + m`` of the last forward
    pass, over ``count`` (``_loss_base`` of the whole batch); their output deltas."""
    last = layout.shape[0] - 1
    k, activation = layout[last, 1], layout[last, 2]
    one = z.dtype.type(1)
    base = (2.0 if loss == MSE else 1.0) / count
    scale = z.dtype.type(base)
    weighted = weights.shape[0] > 0
    total = 0.0
    for i in range(start, start + m):
        if weighted:
            scale = z.dtype.type(base * weights[i])
        value = _loss_row(_row(z, 0, k, i), _row(acts, offsets[last + 1], k, i), Y[i], lse[i], activation, loss,
                          scale, _row(deltas, offsets[last + 1], k, i), one)
        total += value * weights[i] if weighted else value
    return total / count


@_inline
def _loss(layout, Y, weights, m, acts, offsets, z, lse, deltas, loss):
    """Mean data loss (float64) of the ``m`` rows of the last forward pass, weighted by ``weights``
    (empty: all 1) and taken over their total weight; output deltas."""
    return _loss_rows(layout, Y, weights, np.intp(0), m, _loss_base(layout, weights, m, loss), acts, offsets, z, lse,
                      deltas, loss)


@_inline
def _bias_step(b, db, D, m, lr, fused):
    """``db = sum of the m rows of D`` (row-major, width ``len(b)``); ``fused``: ``b -= lr db``."""
    n = b.shape[0]
    _copy(db, D[:n])
    for i in range(1, m):
        for j in range(n):
            db[j] += D[i * n + j]
    if fused:
        for j in range(n):
            b[j] -= lr * db[j]


# ---------------------------------------------------------------- rows of W, for the loop kernels
# Each returns the row's sum(w**2) before the step, summed in the array dtype
# (a float64 sum halved float32 throughput); rows are added up in float64. The
# batch-of-one rows take row ``k`` of the 2-D ``W`` (and ``dW``) rather than a view of
# the row, which counts references where the buffers are not ``_unowned``.
@_inline
def _sgd_row(w, g, l2, lr):
    """``w -= lr (g + l2 w)`` for one row of ``W``."""
    squares = l2 - l2
    for j in range(w.shape[0]):
        v = w[j]
        squares += v * v
        w[j] = v - lr * (g[j] + l2 * v)
    return np.float64(squares)


@_inline
def _sgd_rank1_forward_row(W, k, a, d, l2, lr, x, product):
    """``w -= lr (a d + l2 w)``, then ``product += x w``: one row of a deferred
    batch-of-one SGD step and of the next row's forward pass."""
    squares = a - a
    for j in range(W.shape[1]):
        v = W[k, j]
        squares += v * v
        v -= lr * (a * d[j] + l2 * v)
        W[k, j] = v
        product[j] += x * v
    return np.float64(squares)


@_inline
def _sgd_rank1_forward_rows(W, k, a, d, l2, lr, x, product):
    """``_sgd_rank1_forward_row`` on rows ``k`` to ``k + 3`` in one pass: the four rows' values
    loaded, stepped, then stored, ``d`` and ``product`` read and written once for the four. Row by
    row, ``product``'s stores and the next row's loads met at addresses 4 KB apart often enough
    that loads waited on unrelated stores, and an epoch's speed hung on where its buffers lay."""
    a0, a1, a2, a3, x0, x1, x2, x3 = a[k], a[k + 1], a[k + 2], a[k + 3], x[k], x[k + 1], x[k + 2], x[k + 3]
    s0, s1, s2, s3 = a0 - a0, a0 - a0, a0 - a0, a0 - a0
    for j in range(W.shape[1]):
        dj, p = d[j], product[j]
        v0, v1, v2, v3 = W[k, j], W[k + 1, j], W[k + 2, j], W[k + 3, j]
        s0 += v0 * v0
        s1 += v1 * v1
        s2 += v2 * v2
        s3 += v3 * v3
        v0 -= lr * (a0 * dj + l2 * v0)
        v1 -= lr * (a1 * dj + l2 * v1)
        v2 -= lr * (a2 * dj + l2 * v2)
        v3 -= lr * (a3 * dj + l2 * v3)
        p += x0 * v0
        p += x1 * v1
        p += x2 * v2
        p += x3 * v3
        W[k, j], W[k + 1, j], W[k + 2, j], W[k + 3, j], product[j] = v0, v1, v2, v3, p
    return np.float64(s0) + np.float64(s1) + np.float64(s2) + np.float64(s3)


@_inline
def _sgd_rank1_forward(W, a, d, l2, lr, x, product):
    """The deferred batch-of-one SGD step of every row of ``W`` and ``product += x W``, four rows
    at a time. Returns ``sum(W**2)`` before the step (float64)."""
    squares, k, rows = 0.0, 0, W.shape[0]
    while k + 4 <= rows:
        squares += _sgd_rank1_forward_rows(W, k, a, d, l2, lr, x, product)
        k += 4
    for k in range(k, rows):
        squares += _sgd_rank1_forward_row(W, k, a[k], d, l2, lr, x[k], product)
    return squares


@_inline
def _gradient_row(w, g, dw, l2):
    """``dw = g + l2 w`` for one row of ``W``."""
    squares = l2 - l2
    for j in range(w.shape[0]):
        v = w[j]
        squares += v * v
        dw[j] = g[j] + l2 * v
    return np.float64(squares)


@_inline
def _sgd_rank1_row(W, k, a, d, l2, lr):
    """``w -= lr (a d + l2 w)``: one row of a batch-of-one SGD step."""
    squares = a - a
    for j in range(W.shape[1]):
        v = W[k, j]
        squares += v * v
        W[k, j] = v - lr * (a * d[j] + l2 * v)
    return np.float64(squares)


@_inline
def _sgd_rank1_back_row(W, k, a, d, l2, lr):
    """As ``_sgd_rank1_row``, in the same pass returning ``w . d`` before the step
    (the delta of the layer below)."""
    back, squares = a - a, a - a
    for j in range(W.shape[1]):
        v = W[k, j]
        back += v * d[j]
        squares += v * v
        W[k, j] = v - lr * (a * d[j] + l2 * v)
    return back, np.float64(squares)


@_inline
def _gradient_rank1_row(W, k, a, d, dW, l2):
    """``dw = a d + l2 w``: one row of a batch-of-one gradient."""
    squares = a - a
    for j in range(W.shape[1]):
        v = W[k, j]
        squares += v * v
        dW[k, j] = a * d[j] + l2 * v
    return np.float64(squares)


@_inline
def _gradient_rank1_back_row(W, k, a, d, dW, l2):
    """As ``_gradient_rank1_row``, in the same pass returning ``w . d`` (the delta of the layer below)."""
    back, squares = a - a, a - a
    for j in range(W.shape[1]):
        v = W[k, j]
        back += v * d[j]
        squares += v * v
        dW[k, j] = a * d[j] + l2 * v
    return back, np.float64(squares)


@_inline
def _column_step(w, dw, a, d, a_delta, derivative, l2, lr, fused):
    """``_backward_rows`` for one row and a layer of one output (``W`` a column ``w``), vectorised
    down the column: ``dw = a d + l2 w`` (``fused``: ``w -= lr (a d + l2 w)``) and, into a
    non-empty ``a_delta``, the delta below ``w d f'`` (``derivative``: f' of the layer below).
    Returns ``sum(w**2)`` before the step."""
    for k in range(a_delta.shape[0]):
        a_delta[k] = w[k] * d * derivative[k]
    squares = d - d
    for k in range(w.shape[0]):
        squares += w[k] * w[k]
    if fused:
        for k in range(w.shape[0]):
            w[k] -= lr * (a[k] * d + l2 * w[k])
    else:
        for k in range(w.shape[0]):
            dw[k] = a[k] * d + l2 * w[k]
    return np.float64(squares)


# ---------------------------------------------------------------- backward by loops (m <= SMALL_BATCH)
@_jit
def _sgd_backward_row(layout, params, grads, acts, derivatives, offsets, deltas, l2, lr, lowest):
    """``_backward_rows`` for one row and plain SGD (the one-row epoch's). A kernel of its own: as branches of
    ``_backward_rows``, beside those of every other case, its loops ran slower (W1's stochastic epoch took
    1.08x as long; AMD EPYC Zen 4)."""
    squares = 0.0
    for l in range(layout.shape[0] - 1, -1, -1):
        n_in, n_out, w, b = layout[l, 0], layout[l, 1], layout[l, 3], layout[l, 4]
        a_off, d_off = offsets[l], offsets[l + 1]
        W, a, d = _matrix(params, w, n_in, n_out), acts[a_off : a_off + n_in], _row(deltas, d_off, n_out, 0)
        if l < lowest:
            pass
        elif n_out == 1:
            a_delta = deltas[a_off : a_off + n_in] if l > 0 else deltas[:0]
            squares += _column_step(params[w : w + n_in], grads[w : w + n_in], a, d[0], a_delta,
                                    derivatives[a_off : a_off + n_in], l2, lr, True)
        elif l > 0:
            for k in range(n_in):
                back, s = _sgd_rank1_back_row(W, k, a[k], d, l2, lr)
                squares += s
                deltas[a_off + k] = back * derivatives[a_off + k]
        else:
            for k in range(n_in):
                squares += _sgd_rank1_row(W, k, a[k], d, l2, lr)
        _bias_step(params[b : b + n_out], grads[b : b + n_out], deltas[d_off:], 1, lr, True)
    return squares


@_jit
def _backward_rows(layout, params, grads, m, acts, derivatives, offsets, deltas, l2, lr, fused, row, lowest):
    """Backward pass of the ``m`` rows, by loops; with ``fused`` (plain SGD) the step
    too, row by row of ``W``. ``deltas`` of the output block must be set. The weights of
    layers below ``lowest`` are left as they are (their biases step).
    Returns ``sum(W**2)`` of the layers from ``lowest`` before the step (float64)."""
    if fused and m == 1:
        return _sgd_backward_row(layout, params, grads, acts, derivatives, offsets, deltas, l2, lr, lowest)
    one = params.dtype.type(1)
    squares = 0.0
    for l in range(layout.shape[0] - 1, -1, -1):
        n_in, n_out, w, b = layout[l, 0], layout[l, 1], layout[l, 3], layout[l, 4]
        a_off, d_off = offsets[l], offsets[l + 1]
        # Each branch is its own loop nest: a flag tested inside one kept it from vectorising.
        W, dW, d = _matrix(params, w, n_in, n_out), _matrix(grads, w, n_in, n_out), _row(deltas, d_off, n_out, 0)
        if l < lowest:
            pass
        elif m == 1 and n_out == 1:
            a_delta = deltas[a_off : a_off + n_in] if l > 0 else deltas[:0]
            squares += _column_step(params[w : w + n_in], grads[w : w + n_in], acts[a_off : a_off + n_in], d[0],
                                    a_delta, derivatives[a_off : a_off + n_in], l2, lr, fused)
        elif m == 1 and l > 0:
            for k in range(n_in):
                back, s = _gradient_rank1_back_row(W, k, acts[a_off + k], d, dW, l2)
                squares += s
                deltas[a_off + k] = back * derivatives[a_off + k]
        elif m == 1:
            for k in range(n_in):
                squares += _gradient_rank1_row(W, k, acts[a_off + k], d, dW, l2)
        else:
            g = row[:n_out]
            for k in range(n_in):
                wk = _row(params, w, n_out, k)
                g[:] = 0
                for i in range(m):
                    a = acts[a_off + i * n_in + k]
                    d = _row(deltas, d_off, n_out, i)
                    if l > 0:
                        back = one - one
                        for j in range(n_out):
                            back += wk[j] * d[j]
                        deltas[a_off + i * n_in + k] = back * derivatives[a_off + i * n_in + k]
                    for j in range(n_out):
                        g[j] += a * d[j]
                if fused:
                    squares += _sgd_row(wk, g, l2, lr)
                else:
                    squares += _gradient_row(wk, g, _row(grads, w, n_out, k), l2)
        _bias_step(params[b : b + n_out], grads[b : b + n_out], deltas[d_off:], m, lr, fused)
    return squares


# ---------------------------------------------------------------- through BLAS, in blocks of rows
@_jit
def _forward_block(layout, params, X, start, acts, derivatives, offsets, z, lse, masks):
    """Forward pass of the rows ``X`` (rows ``start`` on of the batch) through BLAS: hidden
    activations and their derivatives from the start of their blocks, outputs, logits and
    log-sum-exp at row ``start``; hidden units dropped by ``masks`` (its first place: ``X``'s first row)."""
    m, last = _n_rows(X), layout.shape[0] - 1
    one = params.dtype.type(1)
    for l in range(last + 1):
        n_in, n_out, activation, w, b = layout[l, 0], layout[l, 1], layout[l, 2], layout[l, 3], layout[l, 4]
        parameter = _parameter(layout, l, params.dtype.type)
        p = _rate(layout, l)
        drops, scale = masks[0] and p > 0, params.dtype.type(1 / (1 - p))
        W, bias = _matrix(params, w, n_in, n_out), params[b : b + n_out]
        out = offsets[l + 1] + (start * n_out if l == last else 0)
        Z = _matrix(z, start * n_out, m, n_out) if l == last else _matrix(acts, out, m, n_out)
        if l == 0:
            _input_product(X, W, Z)
        else:
            _matmul(_matrix(acts, offsets[l], m, n_in), W, Z)
        for i in range(m):
            if l == last:
                lse[start + i] = _output_row(Z[i], bias, _row(acts, out, n_out, i), activation, one)
            else:
                d = _row(derivatives, out, n_out, i)
                _activate_row(Z[i], bias, d, activation, parameter)
                if drops:
                    _drop_row(Z[i], d, p, scale, _key(masks, i, l))


@_inline
def _row_product(a, W, product):
    """``product += a W`` for one row ``a`` (``W`` 2-D, ``(len(a), len(product))``), by loops over the
    rows of ``W``."""
    n_in, n_out = W.shape
    if n_out == 1:  # a dot product down the column, summed in a register
        total = product[0] - product[0]
        for k in range(n_in):
            total += a[k] * W[k, 0]
        product[0] += total
    else:
        for q in range(n_in // 4):  # four rows of W per pass over the product
            k = 4 * q
            a0, a1, a2, a3 = a[k], a[k + 1], a[k + 2], a[k + 3]
            for j in range(n_out):
                product[j] += a0 * W[k, j] + a1 * W[k + 1, j] + a2 * W[k + 2, j] + a3 * W[k + 3, j]
        for k in range(n_in - n_in % 4, n_in):
            ak = a[k]
            for j in range(n_out):
                product[j] += ak * W[k, j]


@_jit
def _forward_row(layout, params, acts, derivatives, offsets, z, lse, first, masks):
    """Forward pass of one row from layer ``first`` on (its input in block ``first`` of ``acts``),
    by loops over the rows of ``W`` (a BLAS call costs more than the product of one row); hidden
    units dropped by ``masks``."""
    last = layout.shape[0] - 1
    one = params.dtype.type(1)
    for l in range(first, last + 1):
        n_in, n_out, activation, w, b = layout[l, 0], layout[l, 1], layout[l, 2], layout[l, 3], layout[l, 4]
        parameter = _parameter(layout, l, params.dtype.type)
        out = _row(acts, offsets[l + 1], n_out, 0)
        product = z[:n_out] if l == last else out
        product[:] = 0
        _row_product(acts[offsets[l] : offsets[l] + n_in], _matrix(params, w, n_in, n_out), product)
        if l == last:
            lse[0] = _output_row(product, params[b : b + n_out], out, activation, one)
        else:
            d = _row(derivatives, offsets[l + 1], n_out, 0)
            _activate_row(product, params[b : b + n_out], d, activation, parameter)
            p = _rate(layout, l)
            if masks[0] and p > 0:
                _drop_row(product, d, p, params.dtype.type(1 / (1 - p)), _key(masks, 0, l))


@_inline
def _forward_blas(layout, params, X, acts, derivatives, offsets, z, lse, masks):
    """Forward pass of the rows of ``X`` in blocks of ``BLOCK_ROWS``; outputs in the last block of ``acts``."""
    m = _n_rows(X)
    for start in range(0, m, BLOCK_ROWS):
        _forward_block(layout, params, _rows_of(X, start, min(BLOCK_ROWS, m - start)), start, acts, derivatives,
                       offsets, z, lse, _shifted(masks, start))


@_jit
def _backward_block(layout, params, grads, X, start, acts, derivatives, offsets, deltas, accumulate):
    """Backward pass of the block of rows ``X`` (rows ``start`` on) that ``_forward_block`` left
    (output deltas set): ``grads`` of the data loss, added to what they hold with ``accumulate``."""
    m, last = _n_rows(X), layout.shape[0] - 1
    for l in range(last, -1, -1):
        n_in, n_out, w, b = layout[l, 0], layout[l, 1], layout[l, 3], layout[l, 4]
        W, dW = _matrix(params, w, n_in, n_out), _matrix(grads, w, n_in, n_out)
        D = _matrix(deltas, offsets[l + 1] + (start * n_out if l == last else 0), m, n_out)
        if l > 0:  # delta of the layer below, with W before the step
            D_prev, A_prev = _matrix(deltas, offsets[l], m, n_in), _matrix(acts, offsets[l], m, n_in)
            F_prev = _matrix(derivatives, offsets[l], m, n_in)
            _matmul_nt(D, W, D_prev)
            for i in range(m):
                for k in range(n_in):
                    D_prev[i, k] *= F_prev[i, k]
            _matmul_tn(A_prev, D, dW, accumulate)
        else:
            _input_gradient(X, D, dW, accumulate)
        db = grads[b : b + n_out]
        if not accumulate:
            db[:] = 0
        for i in range(m):
            row = D[i]
            for j in range(n_out):
                db[j] += row[j]


@_jit
def _finish(layout, params, grads, l2, lr, fused):
    """After the backward passes: ``grads += l2 W``, or with ``fused`` the SGD step
    ``params -= lr (grads + l2 W)``. Returns ``sum(W**2)`` before the step (float64)."""
    squares = 0.0
    for l in range(layout.shape[0]):
        n_in, n_out, w, b = layout[l, 0], layout[l, 1], layout[l, 3], layout[l, 4]
        W, dW = _matrix(params, w, n_in, n_out), _matrix(grads, w, n_in, n_out)
        if fused:
            for k in range(n_in):
                squares += _sgd_row(W[k], dW[k], l2, lr)
            for j in range(n_out):
                params[b + j] -= lr * grads[b + j]
        else:
            for k in range(n_in):
                squares += _gradient_row(W[k], dW[k], dW[k], l2)
    return squares


# Compiled apart: inlined into ``_step``, the test of its loss after it was seen folded to True
# (fast-math), and an epoch stepped on a NaN loss.
@_jit
def _gradient_blocks(layout, params, grads, X, Y, weights, count, loss, acts, derivatives, offsets, z, lse, deltas,
                     backward, masks):
    """``grads`` of the data loss of the rows ``(X, Y)`` (weighted by ``weights``, empty: 1 each)
    taken over ``count`` (``_loss_base`` of their batch), in blocks of ``BLOCK_ROWS`` rows, each
    block's outputs at the start of theirs; returns that loss (float64; not finite: stopped there,
    ``grads`` unfinished). Without ``backward``, the loss only: ``grads`` is not touched. Hidden
    units dropped by ``masks``."""
    m, value = _n_rows(X), 0.0
    for start in range(0, m, BLOCK_ROWS):
        r = min(BLOCK_ROWS, m - start)
        block = _rows_of(X, start, r)
        _forward_block(layout, params, block, np.intp(0), acts, derivatives, offsets, z, lse, _shifted(masks, start))
        value += _loss_rows(layout, Y[start : start + r], weights[start : start + r], np.intp(0), r, count, acts,
                            offsets, z, lse, deltas, loss)
        if not np.isfinite(value):
            return value
        if backward:
            _backward_block(layout, params, grads, block, np.intp(0), acts, derivatives, offsets, deltas, start > 0)
    return value


# ---------------------------------------------------------------- one step, one epoch
# A function that Numba compiles apart (``_jit``) is compiled again, with all it calls, into
# each function compiled apart that calls it: the loops between an epoch's entry and the
# passes are inlined (``_inline``), so that a first fit compiles each pass twice, not four times.
@_inline
def _step(layout, params, grads, X, Y, weights, loss, l2, lr, fused, acts, derivatives, offsets, z, lse, deltas, row,
          masks):
    """Forward, loss and backward for the batch ``(X, Y)``, hidden units dropped by ``masks``; with
    ``fused`` the SGD step too. Returns the batch loss: data loss + L2 term of the weights before the
    step. ``row``: as ``_step_by_loops`` takes it."""
    m = _n_rows(X)
    if m <= SMALL_BATCH:
        return _step_by_loops(layout, params, grads, X, Y, weights, loss, l2, lr, fused, acts, derivatives, offsets, z,
                              lse, deltas, row, masks)
    # through BLAS, in blocks of rows; one step after the last
    value = _gradient_blocks(layout, params, grads, X, Y, weights, _loss_base(layout, weights, m, loss), loss, acts,
                             derivatives, offsets, z, lse, deltas, np.bool_(True), masks)
    if not np.isfinite(value):
        return value
    squares = _finish(layout, params, grads, l2, lr, fused)
    return value + 0.5 * l2 * squares if l2 != 0 else value


def _step_by_loops(layout, params, grads, X, Y, weights, loss, l2, lr, fused, acts, derivatives, offsets, z, lse,
                   deltas, row, masks):
    """``_step`` for a batch of at most ``SMALL_BATCH`` rows, by loops (``row``: a buffer of one
    row). With ``row`` None, for epochs without such batches (``_loops_buffer``), the loops are not
    compiled and it returns NaN."""


@_overload(_step_by_loops)
def _step_by_loops_for(layout, params, grads, X, Y, weights, loss, l2, lr, fused, acts, derivatives, offsets, z, lse,
                       deltas, row, masks):
    if isinstance(row, types.NoneType):
        return lambda layout, params, grads, X, Y, weights, loss, l2, lr, fused, acts, derivatives, offsets, z, lse, \
            deltas, row, masks: np.nan

    def loops(layout, params, grads, X, Y, weights, loss, l2, lr, fused, acts, derivatives, offsets, z, lse, deltas,
              row, masks):
        m = _n_rows(X)
        _input_block(X, acts[offsets[0] :], layout[0, 0])  # the loops read the input from the input block
        if m == 1:
            _forward_row(layout, params, acts, derivatives, offsets, z, lse, np.intp(0), masks)
        else:
            _forward_blas(layout, params, X, acts, derivatives, offsets, z, lse, masks)
        value = _loss(layout, Y, weights, m, acts, offsets, z, lse, deltas, loss)
        if not np.isfinite(value):
            return value
        squares = _backward_rows(layout, params, grads, m, acts, derivatives, offsets, deltas, l2, lr, fused, row,
                                 np.intp(0))
        return value + 0.5 * l2 * squares if l2 != 0 else value
    return loops


@_inline
def _squares(values):
    """``sum(values**2)`` (float64) of a 1-D array: a sum over a range is this of a slice. A loop over
    an index range read from an array (of unknown sign: each index tested for wrapping around), or
    over a slice's values, did not vectorise (7x and 15x slower)."""
    squares = 0.0
    for p in range(values.shape[0]):
        squares += np.float64(values[p]) * values[p]
    return squares


@_inline
def _clip_elements(g, c):
    """Element-wise clip of ``g`` to ``clip_value`` (0: off)."""
    if c.clip_value > 0:
        bound = g.dtype.type(c.clip_value)
        for p in range(g.shape[0]):
            g[p] = min(max(g[p], -bound), bound)


@_inline
def _clip_values(grads, c, low, high):
    """``_clip``'s element-wise clip of ``grads[low:high]``; returns their sum of squares (float64)
    where a norm clip follows (else 0)."""
    g = _row(grads, low, high - low, 0)
    _clip_elements(g, c)
    return _squares(g) if c.clip_norm > 0 else 0.0


@_inline
def _scale_to_norm(grads, c, squares, low, high):
    """``_clip``'s norm clip of ``grads[low:high]``, ``squares`` the sum of squares of all ``grads``."""
    if c.clip_norm > 0:
        ratio = c.clip_norm / (np.sqrt(squares) + 1e-6)
        if ratio < 1:
            scale, g = grads.dtype.type(ratio), _row(grads, low, high - low, 0)
            for p in range(g.shape[0]):
                g[p] *= scale


@_jit
def _clip(grads, config):
    """Element-wise clip to ``clip_value``, then global-norm clip to ``clip_norm`` (0: off)."""
    c, P = config[0], grads.shape[0]
    _scale_to_norm(grads, c, _clip_values(grads, c, 0, P), 0, P)


@_jit
def _update(params, grads, state, config, lr, step):
    """One optimizer step in place; ``step`` counts from 0."""
    c = config[0]
    if c.optimizer == SGD:
        _sgd(params, grads, state, c, lr, step)
    elif c.optimizer == MOMENTUM:
        _momentum(params, grads, state, c, lr, step)
    elif c.optimizer == ADAM:
        _adam(params, grads, state, c, lr, step)
    elif c.optimizer == RMSPROP:
        _rmsprop(params, grads, state, c, lr, step)
    elif c.optimizer == ADAGRAD:
        _adagrad(params, grads, state, c, lr, step)


@_jit
def _line_search(layout, params, grads, trial, X, Y, weights, value, config, l2, alpha, acts, derivatives, offsets, z,
                 lse, deltas, masks):
    """Armijo backtracking from ``alpha`` (``fastgd.BacktrackingLineSearch``); ``params``
    moves to the accepted point. Returns the accepted step. The trial points' losses drop the
    hidden units of the step's ``masks``."""
    c = config[0]
    count = _loss_base(layout, weights, _n_rows(X), c.loss)
    slope = 0.0
    for p in range(grads.shape[0]):
        slope += np.float64(grads[p]) * grads[p]
    step = alpha
    while step >= c.min_step:
        rate = params.dtype.type(step)
        for p in range(params.shape[0]):
            trial[p] = params[p] - rate * grads[p]
        trial_value = _gradient_blocks(layout, trial, trial, X, Y, weights, count, c.loss, acts, derivatives, offsets,
                                       z, lse, deltas, np.bool_(False), masks)
        if l2 != 0:
            trial_value += _l2_penalty(layout, trial, l2)
        if trial_value <= value - c.c * step * slope:
            _copy(params, trial)
            return step
        step *= c.rho
    params -= params.dtype.type(c.fallback_step) * grads
    return c.fallback_step


@_inline
def _batch_l2(config, rows):
    """The L2 coefficient of a batch of ``rows`` (its total weight): ``l2``, or ``l2 / rows`` with ``l2_per_row``."""
    c = config[0]
    return c.l2 / rows if c.l2_per_row != 0 else c.l2


# ``searches``, a constant (True or False) from the entry of each kind of epoch (``_train_epoch``,
# ``_train_epoch_line_search``, ...), chooses while Numba compiles whether the steps update by the
# optimizer's rule or by a line search: a fit compiles the one it uses.
def _apply(searches, layout, params, grads, state, X, Y, weights, value, config, l2, lrs, i, step, acts, derivatives,
           offsets, z, lse, deltas, masks):
    """Step ``i`` of an epoch once ``grads`` holds the gradient of the batch ``(X, Y)``, whose
    loss is ``value``: clipping, then the update; with ``searches`` a line search, which writes
    back the step it took into ``lrs[i]`` (its trial points drop units by the step's ``masks``)."""


@_overload(_apply)
def _apply_for(searches, layout, params, grads, state, X, Y, weights, value, config, l2, lrs, i, step, acts,
               derivatives, offsets, z, lse, deltas, masks):
    if not isinstance(searches, types.BooleanLiteral):
        return None
    if searches.literal_value:
        def line_search(searches, layout, params, grads, state, X, Y, weights, value, config, l2, lrs, i, step, acts,
                        derivatives, offsets, z, lse, deltas, masks):
            _clip(grads, config)
            lrs[i] = _line_search(layout, params, grads, state[0], X, Y, weights, value, config, l2, lrs[i], acts,
                                  derivatives, offsets, z, lse, deltas, masks)
        return line_search

    def update(searches, layout, params, grads, state, X, Y, weights, value, config, l2, lrs, i, step, acts,
               derivatives, offsets, z, lse, deltas, masks):
        _clip(grads, config)
        _update(params, grads, state, config, lrs[i], step + i)
    return update


@_inline
def _train_step(layout, params, grads, state, X, Y, weights, config, lrs, i, step, fused, acts, derivatives, offsets, z,
                lse, deltas, row, searches):
    """Step ``i`` of an epoch on the batch ``(X, Y)``; returns the batch loss (not finite: no step taken)."""
    dtype = params.dtype.type
    c = config[0]
    l2 = _batch_l2(config, _rows(weights, _n_rows(X)))
    masks = _masks(config, step + i, 0)
    value = _step(layout, params, grads, X, Y, weights, c.loss, dtype(l2), dtype(lrs[i]), fused, acts, derivatives,
                  offsets, z, lse, deltas, row, masks)
    if not fused and np.isfinite(value):
        _apply(searches, layout, params, grads, state, X, Y, weights, value, config, l2, lrs, i, step, acts,
               derivatives, offsets, z, lse, deltas, masks)
    return value


def _fuses(config):
    """Whether plain SGD without clipping takes its step inside the backward pass (``_fused`` compiled)."""
    c = config[0]
    return (c["optimizer"] == SGD and c["momentum"] == 0 and c["weight_decay"] == 0 and c["clip_value"] == 0
            and c["clip_norm"] == 0)


_fused = _inline(_fuses)


def _stochastic(config, batch_size, n, layout):
    """Whether an epoch goes through ``_stochastic_epoch``: plain SGD (``_fuses``), one row per
    step, of several rows, through several layers."""
    return batch_size == 1 and n > 1 and layout.shape[0] > 1 and _fuses(config)


@_jit
def _first_layer_step(layout, params, x, acts, derivatives, offsets, deltas, l2, lr, masks):
    """The SGD step of ``W0`` left by the last row (its input in block 0 of ``acts``, its
    deltas in block 1 of ``deltas``); with ``x`` (the next row's input, else empty), in the
    same pass the first layer's forward pass of ``x`` (units dropped by ``masks``, the next
    row's), which then becomes block 0.
    Returns ``sum(W0**2)`` before the step (float64)."""
    n_in, n_out, activation, w, b = layout[0, 0], layout[0, 1], layout[0, 2], layout[0, 3], layout[0, 4]
    W, a, d = _matrix(params, w, n_in, n_out), _row(acts, offsets[0], n_in, 0), _row(deltas, offsets[1], n_out, 0)
    squares = 0.0
    if x.shape[0] == 0:
        for k in range(n_in):
            squares += _sgd_rank1_row(W, k, a[k], d, l2, lr)
        return squares
    product = _row(acts, offsets[1], n_out, 0)
    product[:] = 0
    squares = _sgd_rank1_forward(W, a, d, l2, lr, x, product)
    d = _row(derivatives, offsets[1], n_out, 0)
    _activate_row(product, params[b : b + n_out], d, activation, _parameter(layout, 0, params.dtype.type))
    p = _rate(layout, 0)
    if masks[0] and p > 0:
        _drop_row(product, d, p, params.dtype.type(1 / (1 - p)), _key(masks, 0, 0))
    _copy(a, x)
    return squares


# The one-row epoch takes its forward pass inlined (at one call site: each inlined copy adds seconds to
# the kernel's compile); called, W1's stochastic epoch took 1.08x as long (AMD EPYC Zen 4).
_forward_row_inlined = _inline(_forward_row.py_func)


@_inline
def _one_row(X, Y, weights, order, i, x, xb, yb, wb):
    """Row ``order[i]``: its input (dense) into ``x``, its targets into row 0 of ``yb``, its weight (where
    ``weights`` are given) into ``wb[0]``. False if ``order[i]`` is not a row of ``X``."""
    source = order[i]
    if source < 0 or source >= _n_rows(X):
        return False
    _copy(yb[0], Y[source])
    if weights.shape[0] > 0:
        wb[0] = weights[source]
    _input_block(_batch(X, order, i, 1, xb), x, x.shape[0])
    return True


@_inline
def _targets(Y, weights, order, start, m, n, yb, wb):
    """Rows ``order[start:start + m]`` of ``Y`` and of ``weights`` (where given) into ``yb`` and ``wb``.
    False if one is not in ``range(n)`` (not a row)."""
    for r in range(m):
        source = order[start + r]
        if source < 0 or source >= n:
            return False
        _copy(yb[r], Y[source])
        if weights.shape[0] > 0:
            wb[r] = weights[source]
    return True


@_jit
def _stochastic_epoch(layout, params, grads, X, Y, weights, order, config, lrs, step, acts, derivatives, offsets, z,
                      lse, deltas, xb, yb, wb, row):
    """An epoch of plain SGD on one row per step (``_stochastic``), in which each step's update
    of ``W0`` is taken in the next step's forward pass, which reads the same rows of ``W0``: one
    pass over ``W0`` per step instead of two. Returns what ``_train_epoch`` returns."""
    # The steps take views that count no references (``_view``).
    params, grads, X, Y, weights = _unowned(params), _unowned(grads), _unowned(X), _unowned(Y), _unowned(weights)
    acts, derivatives, z, lse, deltas = (_unowned(acts), _unowned(derivatives), _unowned(z), _unowned(lse),
                                         _unowned(deltas))
    xb, yb, wb, row = _unowned(xb), _unowned(yb), _unowned(wb), _unowned(row)
    n, n_in = _n_rows(X), layout[0, 0]
    c = config[0]
    dtype = params.dtype.type
    weighted = weights.shape[0] > 0
    # The row's input (until its forward pass copies it to block 0) and targets.
    x, y = row[:n_in], _typed_read_only(yb[:1])
    total, l2, lr = 0.0, dtype(0), dtype(0)
    for i in range(n):
        if not _one_row(X, Y, weights, order, i, x, xb, yb, wb):
            return np.nan, i, BAD_ROW
        squares = 0.0
        masks = _masks(config, step + i, 0)
        if i == 0:
            _copy(_row(acts, offsets[0], n_in, 0), x)
        else:  # the step of the row before (the rest of its L2 term) and this row's first layer
            squares = _first_layer_step(layout, params, x, acts, derivatives, offsets, deltas, l2, lr, masks)
        _forward_row_inlined(layout, params, acts, derivatives, offsets, z, lse, min(i, 1), masks)
        row_weights = wb[:1] if weighted else weights
        value = _loss(layout, y, row_weights, np.intp(1), acts, offsets, z, lse, deltas, c.loss)
        # Each tested apart: fast-math folds the test of a sum to True.
        if not np.isfinite(value) or (l2 != 0 and not np.isfinite(squares)):
            return np.nan, i, NOT_FINITE
        if l2 != 0:
            total += 0.5 * l2 * squares
        l2, lr = dtype(_batch_l2(config, _rows(row_weights, 1))), dtype(lrs[i])
        squares = _sgd_backward_row(layout, params, grads, acts, derivatives, offsets, deltas, l2, lr, np.intp(1))
        total += value + 0.5 * l2 * squares if l2 != 0 else value
    squares = _first_layer_step(layout, params, x[:0], acts, derivatives, offsets, deltas, l2, lr, _no_masks())
    if l2 != 0:
        if not np.isfinite(squares):
            return np.nan, n, NOT_FINITE
        total += 0.5 * l2 * squares
    return total / n, n, OK if _finite(params) else NOT_FINITE


# ---------------------------------------------------------------- one-row steps, each layer split between threads
# ``train_epoch_units``: the last layer and every second one below it are split by their inputs (thread t
# takes rows of W, the threads' partial products are added in thread order), the others by their units
# (thread t takes columns of W and of the bias), so that every activation and delta a thread needs is
# its own or a sum of the threads' parts: one meeting a step for two layers, three for three. Each thread
# trains a packed copy of the weights it owns (``own``), written back when it ends: columns of W split in
# place leave each row's two parts on two cores, and the lines between them go back and forth (two
# threads ran W3's steps 2x slower than one that way, 1.5x faster packed).
@_inline
def _by_inputs(layout, l):
    """Whether layer ``l`` is split by its inputs (rows of W) rather than by its units (columns)."""
    return (layout.shape[0] - 1 - l) % 2 == 0


@_jit
def _packing(layout, t, threads):
    """Thread ``t``'s part of each layer ``l``: its rows (split by inputs) or units (columns) ``lo`` to
    ``hi``, and where in ``own`` its weights (``(hi - lo, n_out)`` or ``(n_in, hi - lo)``) and its biases
    (all of them, or its units') start: ``(L, 4)`` int64 rows ``lo, hi, w, b``."""
    packing = np.empty((layout.shape[0], 4), np.int64)
    start = 0
    for l in range(layout.shape[0]):
        n_in, n_out = layout[l, 0], layout[l, 1]
        n = n_in if _by_inputs(layout, l) else n_out
        lo, hi = n * t // threads, n * (t + 1) // threads
        packing[l, 0], packing[l, 1], packing[l, 2] = lo, hi, start
        start += (hi - lo) * (n_out if _by_inputs(layout, l) else n_in)
        packing[l, 3] = start
        start += n_out if _by_inputs(layout, l) else hi - lo
    return packing


@_inline
def _packed_size(layout, packing):
    """The values a thread's part takes in ``own`` (``packing``: ``_packing``'s)."""
    last = layout.shape[0] - 1
    return packing[last, 3] + layout[last, 1]


@_jit
def _pack(layout, params, own, packing, unpack, biases):
    """Copy each layer's part (``packing``) from ``params`` into ``own``, or with ``unpack`` back;
    without ``biases``, not the biases of layers split by inputs (every thread has them all)."""
    for l in range(layout.shape[0]):
        n_in, n_out, w, b = layout[l, 0], layout[l, 1], layout[l, 3], layout[l, 4]
        lo, hi, own_w, own_b = packing[l, 0], packing[l, 1], packing[l, 2], packing[l, 3]
        m = hi - lo
        inputs = _by_inputs(layout, l)
        W = _matrix(params, w, n_in, n_out)
        part = _matrix(own, own_w, m, n_out) if inputs else _matrix(own, own_w, n_in, m)
        for k in range(part.shape[0]):
            source = W[lo + k] if inputs else W[k, lo:hi]
            if unpack:
                _copy(source, part[k])
            else:
                _copy(part[k], source)
        if inputs and not biases:
            continue
        first, count = (b, n_out) if inputs else (b + lo, m)
        if unpack:
            _copy(params[first : first + count], own[own_b : own_b + count])
        else:
            _copy(own[own_b : own_b + count], params[first : first + count])


@_inline
def _sum_parts(exchange, parity, start, target):
    """``target`` = the threads' parts at ``start`` of their rows of ``exchange[parity]``, added in thread order."""
    _copy(target, exchange[parity, 0, start : start + target.shape[0]])
    for k in range(1, exchange.shape[1]):
        part = exchange[parity, k, start : start + target.shape[0]]
        for j in range(target.shape[0]):
            target[j] += part[j]


@_inline
def _first_part(layout, own, packing, acts, offsets, deltas):
    """Of a thread's part of ``W0`` (``packing``): the part, the inputs that multiply its rows and the
    deltas of its columns, of the last row."""
    n_in, n_out = layout[0, 0], layout[0, 1]
    lo, hi, w = packing[0, 0], packing[0, 1], packing[0, 2]
    if _by_inputs(layout, 0):
        return (_matrix(own, w, hi - lo, n_out), acts[offsets[0] + lo : offsets[0] + hi],
                deltas[offsets[1] : offsets[1] + n_out])
    return (_matrix(own, w, n_in, hi - lo), acts[offsets[0] : offsets[0] + n_in],
            deltas[offsets[1] + lo : offsets[1] + hi])


@_jit
def _units_forward(layout, own, packing, x, acts, derivatives, offsets, z, lse, deltas, exchange, parity, t, sync,
                   meeting, l2, lr, deferred, masks):
    """Thread ``t``'s forward pass of the row ``x``, after (``deferred``) the last row's step of
    ``W0`` in the same pass; its input then becomes block 0. Returns ``(sum(W0**2)`` of its part before
    that step, the meetings reached; 0 if the epoch was abandoned)``."""
    last, threads = layout.shape[0] - 1, exchange.shape[1]
    dtype = own.dtype.type
    squares = 0.0
    for l in range(last + 1):
        n_in, n_out, activation = layout[l, 0], layout[l, 1], layout[l, 2]
        lo, hi, w, b = packing[l, 0], packing[l, 1], packing[l, 2], packing[l, 3]
        inputs = _by_inputs(layout, l)
        a = x if l == 0 else acts[offsets[l] : offsets[l] + n_in]
        if inputs:
            W, bias = _matrix(own, w, hi - lo, n_out), own[b : b + n_out]
            product, a = exchange[parity, t, offsets[l + 1] : offsets[l + 1] + n_out], a[lo:hi]
        else:
            W, bias = _matrix(own, w, n_in, hi - lo), own[b : b + hi - lo]
            product = acts[offsets[l + 1] + lo : offsets[l + 1] + hi]
        product[:] = 0
        if l == 0 and deferred:
            W, previous, d = _first_part(layout, own, packing, acts, offsets, deltas)
            squares += _sgd_rank1_forward(W, previous, d, l2, lr, a, product)
        else:
            _row_product(a, W, product)
        if l == 0:
            _copy(acts[offsets[0] : offsets[0] + n_in], x)
        if inputs:
            meeting += 1
            if not _meet(sync, t, threads, meeting):
                return squares, 0
            product = z[:n_out] if l == last else acts[offsets[l + 1] : offsets[l + 1] + n_out]
            _sum_parts(exchange, parity, offsets[l + 1], product)
            lo, hi = 0, n_out
        if l == last:
            lse[0] = _output_row(product, bias, acts[offsets[l + 1] : offsets[l + 1] + n_out], activation, dtype(1))
            continue
        d = derivatives[offsets[l + 1] + lo : offsets[l + 1] + hi]
        _activate_row(product, bias, d, activation, _parameter(layout, l, dtype))
        p = _rate(layout, l)
        if masks[0] and p > 0:
            _drop_row(product, d, p, dtype(1 / (1 - p)), _key(masks, 0, l) + np.uint64(lo))
    return squares, meeting


@_jit
def _units_backward(layout, own, grads, packing, acts, derivatives, offsets, deltas, exchange, parity, t, sync,
                    meeting, l2, lr, fused):
    """Thread ``t``'s part of the backward pass (``deltas`` of the output set): with ``fused`` (plain
    SGD), the step of its part of every layer but the weights of the first; else its part of the
    gradient, into ``grads`` (packed as ``own``). Returns ``(sum(W**2)`` of the weights it went through,
    before any step, the meetings reached; 0 if the epoch was abandoned)``."""
    threads = exchange.shape[1]
    squares = 0.0
    # Each branch is its own loop nest: a flag tested inside one kept it from vectorising.
    for l in range(layout.shape[0] - 1, -1, -1):
        n_in, n_out = layout[l, 0], layout[l, 1]
        lo, hi, w, b = packing[l, 0], packing[l, 1], packing[l, 2], packing[l, 3]
        a, d = acts[offsets[l] : offsets[l] + n_in], deltas[offsets[l + 1] : offsets[l + 1] + n_out]
        below, derivative = deltas[offsets[l] : offsets[l] + n_in], derivatives[offsets[l] : offsets[l] + n_in]
        if _by_inputs(layout, l):
            units = n_out
            W, dW = _matrix(own, w, hi - lo, n_out), _matrix(grads, w, hi - lo, n_out)
            if n_out == 1 and (l > 0 or not fused):
                squares += _column_step(own[w : w + hi - lo], grads[w : w + hi - lo], a[lo:hi], d[0],
                                        below[lo:hi] if l > 0 else below[:0], derivative[lo:hi], l2, lr, fused)
            elif l > 0 and fused:
                for k in range(hi - lo):
                    back, s = _sgd_rank1_back_row(W, k, a[lo + k], d, l2, lr)
                    squares += s
                    below[lo + k] = back * derivative[lo + k]
            elif l > 0:
                for k in range(hi - lo):
                    back, s = _gradient_rank1_back_row(W, k, a[lo + k], d, dW, l2)
                    squares += s
                    below[lo + k] = back * derivative[lo + k]
            elif not fused:
                for k in range(hi - lo):
                    squares += _gradient_rank1_row(W, k, a[lo + k], d, dW, l2)
        else:
            units, d = hi - lo, d[lo:hi]
            W, dW = _matrix(own, w, n_in, units), _matrix(grads, w, n_in, units)
            if l > 0:
                part = exchange[parity, t, offsets[l] : offsets[l] + n_in]
                if fused:
                    for k in range(n_in):
                        part[k], s = _sgd_rank1_back_row(W, k, a[k], d, l2, lr)
                        squares += s
                else:
                    for k in range(n_in):
                        part[k], s = _gradient_rank1_back_row(W, k, a[k], d, dW, l2)
                        squares += s
                meeting += 1
                if not _meet(sync, t, threads, meeting):
                    return squares, 0
                _sum_parts(exchange, parity, offsets[l], below)
                for k in range(n_in):
                    below[k] *= derivative[k]
            elif not fused:
                for k in range(n_in):
                    squares += _gradient_rank1_row(W, k, a[k], d, dW, l2)
        bias = own[b : b + units]
        if fused:
            for j in range(units):
                bias[j] -= lr * d[j]
        else:
            _copy(grads[b : b + units], d)
    return squares, meeting


@_jit
def _units_block_forward(layout, own, packing, X, acts, derivatives, offsets, z, lse, exchange, parity, t, sync,
                         meeting, masks):
    """Thread ``t``'s forward pass of the rows ``X`` (gathered, every input): of a layer split by its
    units, those units' activations; of one split by its inputs, every unit's, the threads' partial
    products added (``_units_forward`` on one row says how). Returns the meetings reached, 0 if the
    epoch was abandoned."""
    m, last, threads = X.shape[0], layout.shape[0] - 1, exchange.shape[1]
    dtype = own.dtype.type
    for l in range(last + 1):
        n_in, n_out, activation = layout[l, 0], layout[l, 1], layout[l, 2]
        lo, hi, w, b = packing[l, 0], packing[l, 1], packing[l, 2], packing[l, 3]
        A = _flat(X) if l == 0 else acts[offsets[l] :]
        Z = z if l == last else acts[offsets[l + 1] :]
        if _by_inputs(layout, l):  # the product of its inputs lo to hi, then every thread's added
            _gemm(NO, NO, n_out, m, hi - lo, own[w:], n_out, A[lo:], n_in, 0.0, exchange[parity, t, offsets[l + 1] :],
                  n_out)
            meeting += 1
            if not _meet(sync, t, threads, meeting):
                return 0
            _sum_parts(exchange, parity, offsets[l + 1], Z[: m * n_out])
            lo, hi = 0, n_out
        else:
            _gemm(NO, NO, hi - lo, m, n_in, own[w:], hi - lo, A, n_in, 0.0, Z[lo:], n_out)
        bias = own[b : b + hi - lo]
        if l == last:
            for i in range(m):
                lse[i] = _output_row(_row(z, 0, n_out, i), bias, _row(acts, offsets[l + 1], n_out, i), activation,
                                     dtype(1))
            continue
        parameter, p = _parameter(layout, l, dtype), _rate(layout, l)
        for i in range(m):
            a = _row(acts, offsets[l + 1] + i * n_out + lo, hi - lo, 0)
            d = _row(derivatives, offsets[l + 1] + i * n_out + lo, hi - lo, 0)
            _activate_row(a, bias, d, activation, parameter)
            if masks[0] and p > 0:
                _drop_row(a, d, p, dtype(1 / (1 - p)), _key(masks, i, l) + np.uint64(lo))
    return meeting


@_jit
def _units_block_backward(layout, own, grads, packing, X, acts, derivatives, offsets, deltas, exchange, parity, t,
                          sync, meeting):
    """Thread ``t``'s part of the gradient (into ``grads``, packed as ``own``) of the rows ``X`` that
    ``_units_block_forward`` went through (output deltas set): of a layer split by its inputs, its rows of
    ``W`` and every bias, and its units of the delta below; of one split by its units, its columns of
    ``W`` and their biases, and its part of the delta below, the threads' parts added. Returns the
    meetings reached, 0 if the epoch was abandoned."""
    m, threads = X.shape[0], exchange.shape[1]
    for l in range(layout.shape[0] - 1, -1, -1):
        n_in, n_out = layout[l, 0], layout[l, 1]
        lo, hi, w, b = packing[l, 0], packing[l, 1], packing[l, 2], packing[l, 3]
        A, D = _flat(X) if l == 0 else acts[offsets[l] :], deltas[offsets[l + 1] :]
        if _by_inputs(layout, l):  # rows lo to hi of W, every unit
            units, first = n_out, 0
            _gemm(NO, TRANSPOSED, n_out, hi - lo, m, D, n_out, A[lo:], n_in, 0.0, grads[w:], n_out)
            if l > 0:  # the units lo to hi of the delta below (split by units)
                _gemm(TRANSPOSED, NO, hi - lo, m, n_out, own[w:], n_out, D, n_out, 0.0, deltas[offsets[l] + lo :], n_in)
                for i in range(m):
                    below = _row(deltas, offsets[l] + i * n_in + lo, hi - lo, 0)
                    derivative = _row(derivatives, offsets[l] + i * n_in + lo, hi - lo, 0)
                    for k in range(hi - lo):
                        below[k] *= derivative[k]
        else:  # columns lo to hi of W, every row
            units, first = hi - lo, lo
            _gemm(NO, TRANSPOSED, units, n_in, m, D[lo:], n_out, A, n_in, 0.0, grads[w:], units)
            if l > 0:  # the delta below (split by inputs): every thread's part added
                _gemm(TRANSPOSED, NO, n_in, m, units, own[w:], units, D[lo:], n_out, 0.0,
                      exchange[parity, t, offsets[l] :], n_in)
                meeting += 1
                if not _meet(sync, t, threads, meeting):
                    return 0
                below, derivative = deltas[offsets[l] : offsets[l] + m * n_in], derivatives[offsets[l] :]
                _sum_parts(exchange, parity, offsets[l], below)
                for k in range(below.shape[0]):
                    below[k] *= derivative[k]
        db = grads[b : b + units]
        db[:] = 0
        for i in range(m):
            d = _row(deltas, offsets[l + 1] + i * n_out + first, units, 0)
            for j in range(units):
                db[j] += d[j]
    return meeting


@_inline
def _units_finish(layout, own, grads, packing, l2, lr, fused):
    """``_finish`` on a thread's part (packed as ``own``, its gradient as ``grads``): ``grads += l2 W``
    over its weights, or with ``fused`` the plain SGD step ``W -= lr (dW + l2 W)``, ``b -= lr db`` in the
    same pass. Returns the weights' ``sum(W**2)`` before any step (float64)."""
    squares, last = 0.0, layout.shape[0] - 1
    for l in range(last + 1):
        W, dW = own[packing[l, 2] : packing[l, 3]], grads[packing[l, 2] : packing[l, 3]]
        if fused:
            for p in range(W.shape[0]):
                v = W[p]
                squares += np.float64(v) * v
                W[p] = v - lr * (dW[p] + l2 * v)
            end = _packed_size(layout, packing) if l == last else packing[l + 1, 2]
            b, db = own[packing[l, 3] : end], grads[packing[l, 3] : end]
            for p in range(b.shape[0]):
                b[p] -= lr * db[p]
        else:
            for p in range(W.shape[0]):
                v = W[p]
                squares += np.float64(v) * v
                dW[p] += l2 * v
    return squares


def _units_trial(layout, own, packing, x, acts, derivatives, offsets, z, lse, deltas, exchange, parity, t, sync,
                 meeting, masks):
    """Thread ``t``'s forward pass of ``x`` at the point ``own`` (a line search's trial): one row
    (``_units_forward``) or a batch (``_units_block_forward``). Returns the meetings reached."""


@_overload(_units_trial)
def _units_trial_for(layout, own, packing, x, acts, derivatives, offsets, z, lse, deltas, exchange, parity, t, sync,
                     meeting, masks):
    if x.ndim == 1:
        return (lambda layout, own, packing, x, acts, derivatives, offsets, z, lse, deltas, exchange, parity, t, sync,
                meeting, masks: _units_forward(layout, own, packing, x, acts, derivatives, offsets, z, lse, deltas,
                                               exchange, parity, t, sync, meeting, own.dtype.type(0),
                                               own.dtype.type(0), np.bool_(False), masks)[1])
    return (lambda layout, own, packing, x, acts, derivatives, offsets, z, lse, deltas, exchange, parity, t, sync,
            meeting, masks: _units_block_forward(layout, own, packing, x, acts, derivatives, offsets, z, lse, exchange,
                                                 parity, t, sync, meeting, masks))


@_inline
def _part_squares(layout, values, packing, t, biases):
    """``sum(values**2)`` (float64) over thread ``t``'s part (``values`` packed as ``own``): its weights,
    with ``biases`` its biases too, those of layers split by inputs (every thread has them) on thread 0
    only."""
    squares = 0.0
    for l in range(layout.shape[0]):
        inputs = _by_inputs(layout, l)
        end = packing[l, 3]
        if biases and (t == 0 or not inputs):
            end += layout[l, 1] if inputs else packing[l, 1] - packing[l, 0]
        squares += _squares(values[packing[l, 2] : end])
    return squares


@_jit
def _sum_over_threads(value, partials, t, threads, sync, meeting):
    """``value`` (float64) added over the threads in thread order, each thread's in its place of
    ``partials`` for the meeting it goes to (two rows of ``threads`` taken in turn: a thread writes
    the next sum's only after all have read this one's). Returns ``(the sum, the meetings reached; 0
    if the epoch was abandoned)``."""
    meeting += 1
    row = (meeting & 1) * threads
    partials[row + t] = value
    if not _meet(sync, t, threads, meeting):
        return np.nan, 0
    total = 0.0
    for k in range(threads):
        total += partials[row + k]
    return total, meeting


@_jit
def _units_clip(layout, grads, packing, config, t, threads, sync, meeting, partials):
    """Thread ``t``'s part of clipping the gradient (packed in ``grads``): element-wise, then to the
    global norm, a sum over the threads. Returns the meetings reached, 0 if the epoch was abandoned."""
    c = config[0]
    used = _packed_size(layout, packing)
    _clip_elements(grads[:used], c)
    if c.clip_norm > 0:
        norm, meeting = _sum_over_threads(_part_squares(layout, grads, packing, t, True), partials, t, threads, sync,
                                          meeting)
        _scale_to_norm(grads, c, norm, 0, used)
    return meeting


@_jit
def _units_search(layout, own, grads, trial, packing, x, yb, weights, value, squares, config, l2, alpha, acts,
                  derivatives, offsets, z, lse, deltas, exchange, parity, t, sync, meeting, partials, masks):
    """Thread ``t``'s part of a step by Armijo backtracking from ``alpha`` (``_line_search``) on the row
    or rows ``x`` (targets ``yb``, ``weights``), whose data loss is ``value`` and ``squares`` the thread's part
    of ``sum(W**2)``: every thread tries the same steps (its part of each point in ``trial``), the
    sums over threads taken in thread order. Returns ``(the step taken, the meetings reached; 0 if
    the epoch was abandoned)``."""
    c, threads = config[0], exchange.shape[1]
    used = _packed_size(layout, packing)
    slope, meeting = _sum_over_threads(_part_squares(layout, grads, packing, t, True), partials, t, threads, sync,
                                       meeting)
    if l2 != 0 and meeting != 0:
        squares, meeting = _sum_over_threads(squares, partials, t, threads, sync, meeting)
        value += 0.5 * l2 * squares
    if meeting == 0:
        return alpha, 0
    step = alpha
    while step >= c.min_step:
        rate = own.dtype.type(step)
        for p in range(used):
            trial[p] = own[p] - rate * grads[p]
        meeting = _units_trial(layout, trial, packing, x, acts, derivatives, offsets, z, lse, deltas, exchange, parity,
                               t, sync, meeting, masks)
        if meeting == 0:
            return step, 0
        trial_value = _loss(layout, yb, weights, yb.shape[0], acts, offsets, z, lse, deltas, c.loss)
        if l2 != 0:
            trial_squares, meeting = _sum_over_threads(_part_squares(layout, trial, packing, t, False), partials, t,
                                                       threads, sync, meeting)
            trial_value += 0.5 * l2 * trial_squares
        if trial_value <= value - c.c * step * slope:
            _copy(own[:used], trial[:used])
            return step, meeting
        step *= c.rho
    rate = own.dtype.type(c.fallback_step)
    for p in range(used):
        own[p] -= rate * grads[p]
    return c.fallback_step, meeting


@_inline
def _units_step(layout, own, grads, state, packing, x, y, weights, value, squares, config, l2, lrs, i, step, acts,
                derivatives, offsets, z, lse, deltas, exchange, t, sync, meeting, partials, masks):
    """Thread ``t``'s part of step ``i`` of an epoch split by units, its part of the gradient in ``grads``:
    clipping, then the update (a line search on ``x``: the step it took into ``lrs[i]``). Returns the
    meetings reached, 0 if the epoch was abandoned."""
    threads = exchange.shape[1]
    meeting = _units_clip(layout, grads, packing, config, t, threads, sync, meeting, partials)
    if meeting != 0 and config[0].optimizer == LINE_SEARCH:
        taken, meeting = _units_search(layout, own, grads, state[0], packing, x, y, weights, value, squares, config,
                                       l2, lrs[i], acts, derivatives, offsets, z, lse, deltas, exchange, i & 1, t,
                                       sync, meeting, partials, masks)
        if t == 0:
            lrs[i] = taken
    elif meeting != 0:
        used = _packed_size(layout, packing)
        _update(own[:used], grads[:used], state, config, lrs[i], step + i)
    return meeting


@_inline
def _units_result(own, state, total, n, steps, partials, t, threads, sync, meeting):
    """What ``_train_epoch`` returns after ``steps`` steps over ``n`` rows, each thread's ``total`` (its
    part of the loss summed over the rows; NaN where its weights or state are not finite) added over the
    threads in thread order."""
    total, meeting = _sum_over_threads(total if _finite(own) and _finite(state.ravel()) else np.nan, partials, t,
                                       threads, sync, meeting)
    if meeting == 0:
        return np.nan, steps, NOT_FINITE
    return total / n, steps, OK if np.isfinite(total) else NOT_FINITE


@_jit
def _units_epoch(layout, own, grads, state, packing, X, Y, weights, order, config, lrs, step, acts, derivatives,
                 offsets, z, lse, deltas, xb, yb, wb, row, t, sync, exchange, partials):
    """Thread ``t``'s part of an epoch on one row per step (``train_epoch_units``), its part of the
    weights, of their gradient and of the optimizer's state packed into ``own``, ``grads`` and ``state``
    (a line search's trial points in ``state[0]``); thread 0 returns what ``_train_epoch`` returns."""
    own, grads, state, X, Y, weights = (_unowned(own), _unowned(grads), _unowned(state), _unowned(X), _unowned(Y),
                                        _unowned(weights))
    acts, derivatives, z, lse, deltas = (_unowned(acts), _unowned(derivatives), _unowned(z), _unowned(lse),
                                         _unowned(deltas))
    xb, yb, wb, row = _unowned(xb), _unowned(yb), _unowned(wb), _unowned(row)
    n, n_in, threads = _n_rows(X), layout[0, 0], exchange.shape[1]
    c = config[0]
    dtype = own.dtype.type
    fused = _fused(config)  # plain SGD: each step in the backward pass, W0's in the next row's forward pass
    weighted = weights.shape[0] > 0
    x, y = row[:n_in], _typed_read_only(yb[:1])
    total, l2, lr, meeting = 0.0, dtype(0), dtype(0), np.intp(0)
    for i in range(n):
        if not _one_row(X, Y, weights, order, i, x, xb, yb, wb):
            return np.nan, i, BAD_ROW
        masks = _masks(config, step + i, 0)
        squares, meeting = _units_forward(layout, own, packing, x, acts, derivatives, offsets, z, lse, deltas,
                                          exchange, i & 1, t, sync, meeting, l2, lr, fused and i > 0, masks)
        if meeting == 0:
            return np.nan, i, NOT_FINITE
        row_weights = wb[:1] if weighted else weights
        value = _loss(layout, y, row_weights, np.intp(1), acts, offsets, z, lse, deltas, c.loss)
        # Each tested apart: fast-math folds the test of a sum to True.
        if not np.isfinite(value) or (l2 != 0 and not np.isfinite(squares)):
            return np.nan, i, NOT_FINITE
        if l2 != 0:
            total += 0.5 * l2 * squares
        l2, lr = dtype(_batch_l2(config, _rows(row_weights, 1))), dtype(lrs[i])
        squares, meeting = _units_backward(layout, own, grads, packing, acts, derivatives, offsets, deltas, exchange,
                                           i & 1, t, sync, meeting, l2, lr, fused)
        if meeting == 0:
            return np.nan, i, NOT_FINITE
        if not fused:
            if l2 != 0 and not np.isfinite(squares):
                return np.nan, i, NOT_FINITE
            meeting = _units_step(layout, own, grads, state, packing, x, y, row_weights, value, squares, config, l2,
                                  lrs, i, step, acts, derivatives, offsets, z, lse, deltas, exchange, t, sync, meeting,
                                  partials, masks)
            if meeting == 0:
                return np.nan, i, NOT_FINITE
        if t == 0:
            total += value
        if l2 != 0:
            total += 0.5 * l2 * squares
    if fused:  # the last row's step of W0
        W, previous, d = _first_part(layout, own, packing, acts, offsets, deltas)
        squares = 0.0
        for k in range(W.shape[0]):
            squares += _sgd_rank1_row(W, k, previous[k], d, l2, lr)
        if l2 != 0:
            total += 0.5 * l2 * squares
    return _units_result(own, state, total, n, n, partials, t, threads, sync, meeting)


@_jit
def _units_batch_epoch(layout, own, grads, state, packing, X, Y, weights, order, batch_size, config, lrs, step, acts,
                       derivatives, offsets, z, lse, deltas, xb, yb, wb, t, sync, exchange, partials):
    """Thread ``t``'s part of an epoch of batches of ``batch_size`` rows (dense; at most ``BLOCK_ROWS``),
    each layer split between the threads as steps of one row split it (``_units_epoch``), its part of
    the weights, their gradient and the optimizer's state packed into ``own``, ``grads`` and ``state``;
    every thread gathers each batch (of ``X``, the columns its part of the first layer reads) and computes
    its loss and output deltas. Thread 0 returns what ``_train_epoch`` returns."""
    own, grads, state, X, Y, weights = (_unowned(own), _unowned(grads), _unowned(state), _unowned(X), _unowned(Y),
                                        _unowned(weights))
    acts, derivatives, z, lse, deltas = (_unowned(acts), _unowned(derivatives), _unowned(z), _unowned(lse),
                                         _unowned(deltas))
    xb, yb, wb = _unowned(xb), _unowned(yb), _unowned(wb)
    n, threads = _n_rows(X), exchange.shape[1]
    c = config[0]
    dtype = own.dtype.type
    weighted = weights.shape[0] > 0
    n_batches = (n + batch_size - 1) // batch_size
    lo, hi = (packing[0, 0], packing[0, 1]) if _by_inputs(layout, 0) else (0, xb.shape[1])
    total, meeting, fused = 0.0, np.intp(0), _fused(config)
    for i in range(n_batches):
        start = i * batch_size
        m = min(batch_size, n - start)
        if not _targets(Y, weights, order, start, m, n, yb, wb):  # every thread checks every row, alike
            return np.nan, i, BAD_ROW
        x, y = _dense_batch(X, order, start, m, lo, hi, xb), _typed_read_only(yb[:m])
        batch_weights = _typed_read_only(wb[:m]) if weighted else weights
        masks = _masks(config, step + i, 0)
        meeting = _units_block_forward(layout, own, packing, x, acts, derivatives, offsets, z, lse, exchange, i & 1, t,
                                       sync, meeting, masks)
        if meeting == 0:
            return np.nan, i, NOT_FINITE
        value = _loss(layout, y, batch_weights, m, acts, offsets, z, lse, deltas, c.loss)
        if not np.isfinite(value):
            return np.nan, i, NOT_FINITE
        meeting = _units_block_backward(layout, own, grads, packing, x, acts, derivatives, offsets, deltas, exchange,
                                        i & 1, t, sync, meeting)
        if meeting == 0:
            return np.nan, i, NOT_FINITE
        l2, squares = dtype(_batch_l2(config, _rows(batch_weights, m))), 0.0
        if fused or l2 != 0:  # plain SGD: the L2 term and the step in one pass
            squares = _units_finish(layout, own, grads, packing, l2, dtype(lrs[i]), fused)
        if l2 != 0 and not np.isfinite(squares):
            return np.nan, i, NOT_FINITE
        if not fused:
            meeting = _units_step(layout, own, grads, state, packing, x, y, batch_weights, value, squares, config, l2,
                                  lrs, i, step, acts, derivatives, offsets, z, lse, deltas, exchange, t, sync, meeting,
                                  partials, masks)
            if meeting == 0:
                return np.nan, i, NOT_FINITE
        if t == 0:
            total += value * m
        if l2 != 0:
            total += 0.5 * l2 * squares * m
    return _units_result(own, state, total, n, n_batches, partials, t, threads, sync, meeting)


@_jit
def _units_share(layout, params, state, own, X, Y, weights, order, batch_size, config, lrs, step, acts, derivatives,
                 offsets, z, lse, deltas, xb, yb, wb, row, t, sync, exchange, partials):
    """``_units_epoch`` (``_units_batch_epoch`` for batches of several rows) on thread ``t``'s part of the
    weights and of the optimizer's ``state``, packed into the rows of ``own`` (weights, gradient, state) and
    written back at the end; a thread that stops early tells the others to stop waiting."""
    packing = _packing(layout, t, exchange.shape[1])
    _pack(layout, params, own[0], packing, np.bool_(False), np.bool_(True))
    for k in range(state.shape[0]):
        _pack(layout, state[k], own[2 + k], packing, np.bool_(False), np.bool_(True))
    if batch_size == 1:
        result = _units_epoch(layout, own[0], own[1], own[2:], packing, X, Y, weights, order, config, lrs, step, acts,
                              derivatives, offsets, z, lse, deltas, xb, yb, wb, row, t, sync, exchange, partials)
    else:
        result = _units_batch_epoch(layout, own[0], own[1], own[2:], packing, X, Y, weights, order, batch_size, config,
                                    lrs, step, acts, derivatives, offsets, z, lse, deltas, xb, yb, wb, t, sync,
                                    exchange, partials)
    if result[2] != OK:
        _exchange(sync, SYNC_LINE * exchange.shape[1], 1)
    _pack(layout, params, own[0], packing, np.bool_(True), t == 0)
    for k in range(state.shape[0]):
        _pack(layout, state[k], own[2 + k], packing, np.bool_(True), t == 0)
    return result


@_inline
def _epoch(layout, params, grads, state, X, Y, weights, order, batch_size, config, lrs, step, acts, derivatives,
           offsets, z, lse, deltas, xb, yb, wb, row, searches):
    """An epoch of batches (``searches``: see ``_apply``); returns what ``_train_epoch`` returns."""
    # The steps take views that count no references (``_view``).
    params, grads, state, X, Y, weights = (_unowned(params), _unowned(grads), _unowned(state), _unowned(X), _unowned(Y),
                                           _unowned(weights))
    acts, derivatives, z, lse, deltas = (_unowned(acts), _unowned(derivatives), _unowned(z), _unowned(lse),
                                         _unowned(deltas))
    xb, yb, wb, row = _unowned(xb), _unowned(yb), _unowned(wb), _unowned(row)
    n = _n_rows(X)
    n_batches = (n + batch_size - 1) // batch_size
    fused = _fused(config)
    total = 0.0
    for i in range(n_batches):
        m, X_batch, Y_batch, batch_weights = n, X, Y, weights
        if n_batches > 1:
            start = i * batch_size
            m = min(batch_size, n - start)
            if not _targets(Y, weights, order, start, m, n, yb, wb):
                return np.nan, i, BAD_ROW
            X_batch, Y_batch = _batch(X, order, start, m, xb), yb[:m]
            if weights.shape[0] > 0:
                batch_weights = wb[:m]
        value = _train_step(layout, params, grads, state, X_batch, Y_batch, batch_weights, config, lrs, i, step, fused,
                            acts, derivatives, offsets, z, lse, deltas, row, searches)
        if not np.isfinite(value):
            return value, i, NOT_FINITE
        total += value * m
    return total / n, n_batches, OK if _finite(params) and _finite(state.ravel()) else NOT_FINITE


@_jit
def _train_epoch(layout, params, grads, state, X, Y, weights, order, batch_size, config, lrs, step, acts, derivatives,
                 offsets, z, lse, deltas, xb, yb, wb, row):
    """An epoch of an optimizer's update rule (``fastgd.kernels.protocol.Backend.train_epoch``)."""
    return _epoch(layout, params, grads, state, X, Y, weights, order, batch_size, config, lrs, step, acts, derivatives,
                  offsets, z, lse, deltas, xb, yb, wb, row, False)


@_jit
def _train_epoch_line_search(layout, params, grads, state, X, Y, weights, order, batch_size, config, lrs, step, acts,
                             derivatives, offsets, z, lse, deltas, xb, yb, wb, row):
    """An epoch of a line search (``fastgd.kernels.protocol.Backend.train_epoch``)."""
    return _epoch(layout, params, grads, state, X, Y, weights, order, batch_size, config, lrs, step, acts, derivatives,
                  offsets, z, lse, deltas, xb, yb, wb, row, True)


# ---------------------------------------------------------------- one batch in shares of its rows, on threads
@_jit
def _batch_gradient(layout, params, grads, X, Y, weights, first, last, config, step, acts, derivatives, offsets, z,
                    lse, deltas):
    m, loss = last - first, config[0].loss
    return _gradient_blocks(layout, params, grads, _rows_of(X, first, m), Y[first:last], weights[first:last],
                            _loss_base(layout, weights, _n_rows(X), loss), loss, acts, derivatives, offsets, z, lse,
                            deltas, np.bool_(True), _masks(config, step, first))


@_inline
def _step_of_shares(layout, params, grads, parts, state, X, Y, weights, losses, config, lrs, step, acts, derivatives,
                    offsets, z, lse, deltas, searches):
    """The step of a batch from its shares' gradients and losses (``searches``: see ``_apply``)."""
    dtype = params.dtype.type
    value = 0.0
    for k in range(losses.shape[0]):
        value += losses[k]
    if not np.isfinite(value):
        return value, 0, NOT_FINITE
    for k in range(parts.shape[0]):
        grads += parts[k]
    fused = _fused(config)
    l2 = _batch_l2(config, _rows(weights, _n_rows(X)))
    squares = _finish(layout, params, grads, dtype(l2), dtype(lrs[0]), fused)
    if l2 != 0:
        value += 0.5 * dtype(l2) * squares
    if not np.isfinite(value):
        return value, 0, NOT_FINITE
    if not fused:
        _apply(searches, layout, params, grads, state, X, Y, weights, value, config, l2, lrs, 0, step, acts,
               derivatives, offsets, z, lse, deltas, _masks(config, step, 0))
    return value, 1, OK if _finite(params) and _finite(state.ravel()) else NOT_FINITE


@_jit
def _batch_step(layout, params, grads, parts, state, X, Y, weights, losses, config, lrs, step, acts, derivatives,
                offsets, z, lse, deltas):
    """``_step_of_shares`` of an optimizer's update rule."""
    return _step_of_shares(layout, params, grads, parts, state, X, Y, weights, losses, config, lrs, step, acts,
                           derivatives, offsets, z, lse, deltas, False)


@_jit
def _batch_step_line_search(layout, params, grads, parts, state, X, Y, weights, losses, config, lrs, step, acts,
                            derivatives, offsets, z, lse, deltas):
    """``_step_of_shares`` of a line search."""
    return _step_of_shares(layout, params, grads, parts, state, X, Y, weights, losses, config, lrs, step, acts,
                           derivatives, offsets, z, lse, deltas, True)


# ---------------------------------------------------------------- mini-batches in shares of their rows, on threads
# The threads of an epoch of mini-batches (``train_epoch_share``) meet in ``sync`` as the Cython
# backend's do (``fastgd_meet``): thread t writes the count of meetings it reached in word 0 of its
# line and waits for every thread's count, spinning a while, then (Linux) sleeping on a futex, at
# most 1 ms at a time, until the late thread, seeing word 1 of its line set, wakes it; elsewhere
# yielding its core. The last line, set, tells them to give up.
SYNC_LINE = 8  # int64 words a thread (a cache line): fastgd.kernels.buffers.SYNC_LINE
SPINS = 2048
_FUTEX = {"x86_64": 202, "aarch64": 98}.get(platform.machine()) if sys.platform == "linux" else None
_FUTEX_WAIT, _FUTEX_WAKE = 128, 129  # FUTEX_WAIT_PRIVATE, FUTEX_WAKE_PRIVATE
_INT64 = ir.IntType(64)


def _word(context, builder, signature, args):
    """A pointer to ``sync[index]`` (the first two arguments of an intrinsic)."""
    sync = make_array(signature.args[0])(context, builder, args[0])
    return builder.gep(sync.data, [context.cast(builder, args[1], signature.args[1], types.intp)])


@intrinsic
def _load(typingctx, sync, index):
    """``sync[index]``, read atomically."""
    def codegen(context, builder, signature, args):
        return builder.load_atomic(_word(context, builder, signature, args), "seq_cst", 8)
    return types.int64(sync, index), codegen


@intrinsic
def _exchange(typingctx, sync, index, value):
    """``sync[index] = value``, atomically; returns the word it replaced."""
    def codegen(context, builder, signature, args):
        value = context.cast(builder, args[2], signature.args[2], types.int64)
        return builder.atomic_rmw("xchg", _word(context, builder, signature, args), value, "seq_cst")
    return types.int64(sync, index, value), codegen


@intrinsic
def _pause(typingctx):
    """A spinning thread's pause (x86's ``pause``; elsewhere nothing)."""
    def codegen(context, builder, signature, args):
        if platform.machine() == "x86_64":
            builder.call(cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                                        "llvm.x86.sse2.pause"), [])
        return context.get_dummy_value()
    return types.none(), codegen


@intrinsic
def _futex(typingctx, sync, index, operation, value):
    """Linux's futex on the low 32 bits of ``sync[index]``: ``_FUTEX_WAIT`` sleeps while they are
    ``value`` (1 ms at most), ``_FUTEX_WAKE`` wakes ``value`` threads that sleep on them. Elsewhere a
    wait yields the core and a wake does nothing."""
    def codegen(context, builder, signature, args):
        operation = context.cast(builder, args[2], signature.args[2], types.int64)
        if _FUTEX is None:
            yield_ = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []),
                                                    "sched_yield")
            with builder.if_then(builder.icmp_signed("==", operation, _INT64(_FUTEX_WAIT))):
                builder.call(yield_, [])
            return context.get_dummy_value()
        syscall = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_INT64, [_INT64], var_arg=True),
                                                 "syscall")
        timeout = cgutils.alloca_once(builder, ir.ArrayType(_INT64, 2))  # a struct timespec: 0 s, 1 ms
        builder.store(ir.Constant(ir.ArrayType(_INT64, 2), [0, 1_000_000]), timeout)
        word = builder.ptrtoint(_word(context, builder, signature, args), _INT64)
        if sys.byteorder == "big":
            word = builder.add(word, _INT64(4))
        value = builder.and_(context.cast(builder, args[3], signature.args[3], types.int64), _INT64(0xFFFFFFFF))
        builder.call(syscall, [_INT64(_FUTEX), word, operation, value, builder.ptrtoint(timeout, _INT64), _INT64(0),
                               _INT64(0)])
        return context.get_dummy_value()
    return types.none(sync, index, operation, value), codegen


@_jit
def _meet(sync, t, threads, count):
    """Thread ``t`` of ``threads`` reaches meeting ``count`` and waits for the others to reach it.
    Returns False if the epoch was abandoned."""
    _exchange(sync, SYNC_LINE * t, count)
    if _exchange(sync, SYNC_LINE * t + 1, 0):
        _futex(sync, SYNC_LINE * t, _FUTEX_WAKE, 0x7FFFFFFF)  # every sleeper
    spins = 0
    for k in range(threads):
        while True:
            seen = _load(sync, SYNC_LINE * k)
            if seen >= count:
                break
            if _load(sync, SYNC_LINE * threads):
                return False
            spins += 1
            if spins < SPINS:
                _pause()
                continue
            _exchange(sync, SYNC_LINE * k + 1, 1)
            seen = _load(sync, SYNC_LINE * k)
            if seen < count:
                _futex(sync, SYNC_LINE * k, _FUTEX_WAIT, seen)
    return True


@_jit
def _finish_range(layout, params, grads, parts, l2, lr, fused, low, high):
    """``_finish`` on the parameters ``low`` to ``high`` only, of the gradient ``grads`` plus the rows
    of ``parts`` (the other shares'), added in the same pass: returns their part of ``sum(W**2)``
    (float64). Without ``fused``, ``grads`` takes the sum and the L2 term."""
    last_part = parts.shape[0] - 1
    for k in range(last_part):  # three threads and more: the shares but the last added first
        g, part = _row(grads, low, high - low, 0), _row(parts[k], low, high - low, 0)
        for p in range(g.shape[0]):
            g[p] += part[p]
    other = parts[last_part]
    squares = 0.0
    for l in range(layout.shape[0]):
        w, b = layout[l, 3], layout[l, 4]
        first, last = max(low, w), min(high, b)
        if first < last:
            W, dW, part = (_row(params, first, last - first, 0), _row(grads, first, last - first, 0),
                           _row(other, first, last - first, 0))
            if fused:
                for j in range(W.shape[0]):
                    v = W[j]
                    squares += np.float64(v) * v
                    W[j] = v - lr * ((dW[j] + part[j]) + l2 * v)
            else:
                for j in range(W.shape[0]):
                    v = W[j]
                    squares += np.float64(v) * v
                    dW[j] = (dW[j] + part[j]) + l2 * v
        first, last = max(low, b), min(high, b + layout[l, 1])
        if first < last:
            B, dB, part = (_row(params, first, last - first, 0), _row(grads, first, last - first, 0),
                           _row(other, first, last - first, 0))
            if fused:
                for j in range(B.shape[0]):
                    B[j] -= lr * (dB[j] + part[j])
            else:
                for j in range(B.shape[0]):
                    dB[j] += part[j]
    return squares


@_inline
def _range_squares(layout, values, low, high):
    """``sum(W**2)`` (float64) over the weights among ``values[low:high]``."""
    squares = 0.0
    for l in range(layout.shape[0]):
        squares += _squares(values[max(low, layout[l, 3]) : max(low, min(high, layout[l, 4]))])
    return squares


@_jit
def _share_search(layout, params, grads, trial, X, Y, weights, count, value, config, l2, alpha, acts, derivatives,
                  offsets, z, lse, deltas, masks, low, high, t, threads, sync, meeting, partials):
    """Thread ``t``'s part of a mini-batch step by Armijo backtracking from ``alpha`` (``_line_search``),
    ``value`` the batch's loss: each trial point on its range ``low`` to ``high`` of the parameters (in
    ``trial``), then the loss of its share of the batch's rows ``(X, Y)`` (``weights``; over ``count``)
    there; the sums over threads in thread order (``_sum_over_threads`` in ``partials``). Returns ``(the
    step taken, the meetings reached; 0 if the epoch was abandoned)``."""
    c = config[0]
    own, g, point = params[low:high], grads[low:high], trial[low:high]
    slope = 0.0
    for p in range(g.shape[0]):
        slope += np.float64(g[p]) * g[p]
    slope, meeting = _sum_over_threads(slope, partials, t, threads, sync, meeting)
    step = alpha
    while meeting != 0 and step >= c.min_step:
        rate = params.dtype.type(step)
        for p in range(g.shape[0]):
            point[p] = own[p] - rate * g[p]
        meeting += 1  # every part of the trial point in place
        if not _meet(sync, t, threads, meeting):
            return step, 0
        part = 0.0
        if _n_rows(X) > 0:
            part = _gradient_blocks(layout, trial, trial, X, Y, weights, count, c.loss, acts, derivatives, offsets, z,
                                    lse, deltas, np.bool_(False), masks)
        if l2 != 0:
            part += 0.5 * l2 * _range_squares(layout, trial, low, high)
        trial_value, meeting = _sum_over_threads(part, partials, t, threads, sync, meeting)
        if trial_value <= value - c.c * step * slope:
            _copy(own, point)
            return step, meeting
        step *= c.rho
    rate = params.dtype.type(c.fallback_step)
    for p in range(g.shape[0]):
        own[p] -= rate * g[p]
    return c.fallback_step, meeting


@_jit
def _share_epoch(layout, params, grads, own, parts, state, X, Y, weights, order, batch_size, config, lrs, step, acts,
                 derivatives, offsets, z, lse, deltas, xb, yb, wb, t, sync, losses, partials):
    """Thread ``t``'s part of an epoch of mini-batches on ``threads`` threads
    (``fastgd.kernels.protocol.Backend.train_epoch_share``): of batch ``i``, rows ``m*t//threads``
    to ``m*(t+1)//threads`` (gathered; a single batch's where they are), their gradient (over the
    batch's total weight) into ``own`` (thread 0: ``grads``; thread t: ``parts[t - 1]``), their loss
    into ``losses[t]``; then the step on its range of the parameters, its sums into ``partials[t]``
    and ``partials[threads + t]`` (a line search's into ``partials[2 threads:]``). Returns what
    ``_train_epoch`` returns (thread 0's counts)."""
    n, n_out, P, threads = _n_rows(X), layout[layout.shape[0] - 1, 1], params.shape[0], losses.shape[0]
    low, high = P * t // threads, P * (t + 1) // threads
    n_batches = (n + batch_size - 1) // batch_size
    dtype = params.dtype.type
    c = config[0]
    fused = _fused(config)
    weighted = weights.shape[0] > 0
    own_params, own_grads, own_state = params[low:high], grads[low:high], state[:, low:high]
    meeting, total, value, steps = np.intp(0), 0.0, 0.0, 0
    for i in range(n_batches):
        start = i * batch_size
        m = min(batch_size, n - start)
        first = m * t // threads
        rows = m * (t + 1) // threads - first
        if n_batches == 1:  # a single batch takes X as it is: each thread its rows where they are
            total_weight = _rows(weights, n)
            share, share_rows = _rows_of(X, first, rows), Y[first : first + rows]
            share_weights = weights[first : first + rows] if weighted else weights
        else:
            # Every thread reads the whole batch's rows: each finds a bad row, and the total weight, alike.
            total_weight = 0.0
            for r in range(m):
                source = order[start + r]
                if source < 0 or source >= n:
                    return np.nan, steps, BAD_ROW
                if weighted:
                    total_weight += weights[source]
            if not weighted:
                total_weight = np.float64(m)
            for r in range(rows):
                source = order[start + first + r]
                _copy(yb[r], Y[source])
                if weighted:
                    wb[r] = weights[source]
            share, share_rows = _batch(X, order, start + first, rows, xb), _typed_read_only(yb[:rows])
            share_weights = _typed_read_only(wb[:rows]) if weighted else weights
        count, masks = total_weight * (1 if c.loss == CROSS_ENTROPY else n_out), _masks(config, step + i, first)
        if rows > 0:
            losses[t] = _gradient_blocks(layout, params, own, share, share_rows, share_weights, count, c.loss, acts,
                                         derivatives, offsets, z, lse, deltas, np.bool_(True), masks)
        else:
            losses[t] = 0
            own[:] = 0
        meeting += 1
        if not _meet(sync, t, threads, meeting):
            break
        # The step, each thread on its range of the parameters: the shares added, the L2 term (or plain
        # SGD's step), clipping and the update; sums over the ranges taken in thread order.
        value = 0.0
        for k in range(threads):
            value += losses[k]
        if not np.isfinite(value):
            return value, steps, NOT_FINITE
        l2 = _batch_l2(config, total_weight)
        partials[t] = _finish_range(layout, params, grads, parts, dtype(l2), dtype(lrs[i]), fused, low, high)
        partials[threads + t] = _clip_values(grads, c, low, high)
        meeting += 1
        if not _meet(sync, t, threads, meeting):
            break
        squares, norm = 0.0, 0.0
        for k in range(threads):
            squares += partials[k]
            norm += partials[threads + k]
        if l2 != 0:
            value += 0.5 * dtype(l2) * squares
        if not np.isfinite(value):
            return value, steps, NOT_FINITE
        if not fused:
            _scale_to_norm(grads, c, norm, low, high)
        if c.optimizer == LINE_SEARCH:
            taken, meeting = _share_search(layout, params, grads, state[0], share, share_rows, share_weights, count,
                                           value, config, l2, lrs[i], acts, derivatives, offsets, z, lse, deltas,
                                           masks, low, high, t, threads, sync, meeting, partials[2 * threads :])
            if meeting == 0:
                break
            if t == 0:
                lrs[i] = taken
        elif not fused:
            _update(own_params, own_grads, own_state, config, lrs[i], step + i)
        total += value * m
        steps += 1
        meeting += 1
        if not _meet(sync, t, threads, meeting):
            break
    if steps < n_batches:
        return value, steps, OK
    return total / n, n_batches, OK if t > 0 or _finite(params) and _finite(state.ravel()) else NOT_FINITE


# ---------------------------------------------------------------- the epoch's shuffle: NumPy's RandomState.shuffle
MT_WORDS, MT_SHIFT = 624, 397  # an MT19937's key; the position of the next draw follows it in a generator


@njit(cache=True, nogil=True)
def _twist(generator):
    """The next key of the MT19937 state ``generator`` (key, then position), in place, as NumPy makes it."""
    for i in range(MT_WORDS):
        following = i + 1 if i + 1 < MT_WORDS else 0
        y = (np.int64(generator[i]) & 0x80000000) | (np.int64(generator[following]) & 0x7FFFFFFF)
        k = i + MT_SHIFT if i + MT_SHIFT < MT_WORDS else i + MT_SHIFT - MT_WORDS
        generator[i] = np.int64(generator[k]) ^ (y >> 1) ^ ((y & 1) * 0x9908B0DF)


@_compiles_off_the_main_thread
@njit(cache=True, nogil=True)
def shuffle(order, generator):
    """Shuffle ``order`` in place as ``RandomState.shuffle`` does, advancing the MT19937 state ``generator``."""
    position = np.int64(generator[MT_WORDS])
    for i in range(order.shape[0] - 1, 0, -1):
        mask = i | (i >> 1)
        mask |= mask >> 2
        mask |= mask >> 4
        mask |= mask >> 8
        mask |= mask >> 16
        while True:  # 32 random bits masked to those of i, until they are at most i
            if position >= MT_WORDS:
                _twist(generator)
                position = 0
            y = np.int64(generator[position])
            position += 1
            y ^= y >> 11
            y ^= (y << 7) & 0x9D2C5680
            y ^= (y << 15) & 0xEFC60000
            j = (y ^ (y >> 18)) & mask
            if j <= i:
                break
        order[i], order[j] = order[j], order[i]
    generator[MT_WORDS] = position


@njit(cache=True, nogil=True)  # no fast-math: reassociation folds x - x to 0, infinity or not
def _finite(values):
    """Whether every value is finite."""
    for p in range(values.shape[0]):
        if not math.isfinite(values[p]):
            return False
    return True


@_jit
def _data_loss(layout, params, X, Y, weights, loss, acts, derivatives, offsets, z, lse, deltas):
    _forward_blas(layout, params, X, acts, derivatives, offsets, z, lse, _no_masks())
    return _loss(layout, Y, weights, _n_rows(X), acts, offsets, z, lse, deltas, loss)


@_jit
def _l2_penalty(layout, params, l2):
    return 0.5 * l2 * _range_squares(layout, params, 0, params.shape[0])


# ---------------------------------------------------------------- the backend's functions (fastgd.kernels.protocol)
NOTICE_AFTER = 2.0  # seconds a first call may take before the user is told it is compiling
_noticed = set()


def _notice(dtype):
    if dtype not in _noticed:
        _noticed.add(dtype)
        print(f"fastgd: compiling the Numba kernels for {dtype} that this fit uses (10-30 s on 2 cores for "
              "each mode, once per machine: later runs load them from the cache)", file=sys.stderr, flush=True)


def _announced(position):
    """Tell stderr when the first call of a function for a dtype (that of argument ``position``)
    takes longer than ``NOTICE_AFTER`` seconds: Numba is compiling it."""
    def decorate(function):
        seen = set()

        @functools.wraps(function)
        def run(*args):
            dtype = args[position].dtype
            if dtype in seen:
                return function(*args)
            timer = threading.Timer(NOTICE_AFTER, _notice, (dtype,))
            timer.daemon = True
            timer.start()
            try:
                return function(*args)
            finally:
                timer.cancel()
                seen.add(dtype)
        return run
    return decorate


def _loops_buffer(ws, n, batch_size):
    """``ws.row`` where an epoch of ``n`` rows in batches of ``batch_size`` has a batch of at most
    ``SMALL_BATCH`` rows (``_step_by_loops``), else None: its loops are then not compiled."""
    last = n % batch_size
    return ws.row if min(n, batch_size) <= SMALL_BATCH or 0 < last <= SMALL_BATCH else None


def _read_only(array):
    """A read-only view of ``array``. Numba compiles a function apart for read-only arrays, and calls
    an existing one with a writable array where it could take it: rows given read-only once would
    then run on that code for the rest of the process (other bits: loops vectorise otherwise), so
    the kernels read every array of data read-only."""
    view = array.view()
    view.flags.writeable = False
    return view


def _input(X):
    """``X`` as the kernels take it, read-only: a dense array, or sparse rows (``fastgd.kernels.CSR``) as a
    tuple."""
    if isinstance(X, np.ndarray):
        return _read_only(X)
    return _read_only(X.data), _read_only(X.indices), _read_only(X.indptr), ALL_ROWS


def _data(X, Y, weights):
    """``X`` (``_input``), ``Y`` and ``weights`` as the kernels take them, read-only."""
    return _input(X), _read_only(Y), _read_only(weights)


@_announced(1)
def forward(layout, params, X, ws):
    _forward_blas(layout, params, _input(X), ws.acts, ws.derivatives, ws.offsets, ws.z, ws.lse, NO_MASKS)


@_announced(1)
def data_loss(layout, params, X, Y, weights, loss, ws):
    X, Y, weights = _data(X, Y, weights)
    return _data_loss(layout, params, X, Y, weights, loss, ws.acts, ws.derivatives, ws.offsets, ws.z, ws.lse,
                      ws.deltas)


@_announced(1)
def l2_penalty(layout, params, l2):
    return _l2_penalty(layout, params, l2)


@_announced(1)
def backward(layout, params, X, Y, weights, config, ws, grads):
    X, Y, weights = _data(X, Y, weights)
    dtype = params.dtype.type
    c = config[0]
    l2 = dtype(_batch_l2(config, _rows(weights, len(Y))))
    return _step(layout, params, grads, X, Y, weights, int(c["loss"]), l2, dtype(0), False, ws.acts,
                 ws.derivatives, ws.offsets, ws.z, ws.lse, ws.deltas, _loops_buffer(ws, len(Y), len(Y)), NO_MASKS)


@_announced(0)
def clip(grads, config):
    _clip(grads, config)


@_announced(0)
def update(params, grads, state, config, lr, step):
    _update(params, grads, state, config, lr, step)


def _searches(config):
    """Whether ``config``'s optimizer is a line search."""
    return config[0]["optimizer"] == LINE_SEARCH


@_announced(1)
def train_epoch(layout, params, grads, state, X, Y, weights, order, batch_size, config, lrs, step, ws):
    X, Y, weights = _data(X, Y, weights)
    if _stochastic(config, batch_size, len(Y), layout):
        return _stochastic_epoch(layout, params, grads, X, Y, weights, order, config, lrs, step, ws.acts,
                                 ws.derivatives, ws.offsets, ws.z, ws.lse, ws.deltas, ws.x, ws.y, ws.w, ws.row)
    epoch = _train_epoch_line_search if _searches(config) else _train_epoch
    return epoch(layout, params, grads, state, X, Y, weights, order, batch_size, config, lrs, step, ws.acts,
                 ws.derivatives, ws.offsets, ws.z, ws.lse, ws.deltas, ws.x, ws.y, ws.w, _loops_buffer(ws, len(Y),
                                                                                                      batch_size))


@_announced(1)
def batch_gradient(layout, params, grads, X, Y, weights, first, last, config, step, ws):
    X, Y, weights = _data(X, Y, weights)
    return _batch_gradient(layout, params, grads, X, Y, weights, first, last, config, step, ws.acts,
                           ws.derivatives, ws.offsets, ws.z, ws.lse, ws.deltas)


@_announced(1)
def batch_step(layout, params, grads, parts, state, X, Y, weights, losses, config, lrs, step, ws):
    X, Y, weights = _data(X, Y, weights)
    step_of_shares = _batch_step_line_search if _searches(config) else _batch_step
    return step_of_shares(layout, params, grads, parts, state, X, Y, weights, losses, config, lrs, step,
                          ws.acts, ws.derivatives, ws.offsets, ws.z, ws.lse, ws.deltas)


@_announced(1)
def train_epoch_units(layout, params, state, X, Y, weights, order, batch_size, config, lrs, step, ws, own, share, sync,
                      exchange, partials):
    X, Y, weights = _data(X, Y, weights)
    result = _units_share(layout, params, state, own, X, Y, weights, order, batch_size, config, lrs, step, ws.acts,
                          ws.derivatives, ws.offsets, ws.z, ws.lse, ws.deltas, ws.x, ws.y, ws.w, ws.row, share, sync,
                          exchange, partials)
    return result if share == 0 else None


@_announced(1)
def train_epoch_share(layout, params, grads, parts, state, X, Y, weights, order, batch_size, config, lrs, step, ws,
                      share, sync, losses, partials):
    X, Y, weights = _data(X, Y, weights)
    result = _share_epoch(layout, params, grads, grads if share == 0 else parts[share - 1], parts, state, X,
                          Y, weights, order, batch_size, config, lrs, step, ws.acts, ws.derivatives, ws.offsets,
                          ws.z, ws.lse, ws.deltas, ws.x, ws.y, ws.w, share, sync, losses, partials)
    return result if share == 0 else None
