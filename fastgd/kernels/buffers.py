"""The data the kernels take: the step record, the layout table, sparse rows (:class:`CSR`), a
generator's state, and the O(1) checks of an argument's type, dtype, shape and layout in memory."""

import ctypes
import functools
import math

import numpy as np

from .._codes import (ACTIVATION_PARAMETERS, ACTIVATIONS, BAD_ROW, HIDDEN_ACTIVATIONS, HYPER, LOSSES, NOT_FINITE, OK,
                      OPTIMIZERS, OUTPUT_ACTIVATIONS)
from .._layout import DROPOUT, N_OUT, PARAMETER, floats

#: The record of a step's configuration, with the loss and optimizer codes, the seed of the dropout masks,
#: L2 and its scaling, the clips, and every optimizer's hyper-parameters by name (the other optimizers' are
#: ignored).
STEP = np.dtype([("loss", np.int64), ("optimizer", np.int64), ("dropout_seed", np.uint64), ("l2", np.float64),
                 ("l2_per_row", np.float64),
                 ("clip_value", np.float64), ("clip_norm", np.float64)] + [(name, np.float64) for name in HYPER])
STATUS = {OK: "ok", NOT_FINITE: "loss, weights or optimizer state not finite", BAD_ROW: "row index out of range"}
MAX_STEP = 2**62
MAX_THREADS = 1024
UNITS_ROWS = 256  # rows: a dense batch of at most this many (one block of the kernels) splits by units on threads
SYNC_LINE = 8  # int64 words between two threads' meeting counts (a cache line): the kernels' FASTGD_LINE
MT19937_WORDS = 625  # an MT19937's state as the kernels take it: 624 words of key, then the position
_ACTIVATION_NAMES = {code: name for name, code in ACTIVATIONS.items()}


def step_config(loss: str, optimizer: str = "sgd", hyper=None, l2: float = 0.0, clip_value: float = 0.0,
                clip_norm: float = 0.0, l2_per_row: bool = False, dropout_seed: int = 0) -> np.ndarray:
    """The step configuration, a ``(1,)`` array of dtype :data:`~fastgd.kernels.buffers.STEP`: ``loss`` and
    ``optimizer``
    by name (``fastgd._codes``), ``hyper`` a mapping of the optimizer's hyper-parameters by name
    (None: all 0, which is plain SGD). With ``l2_per_row`` a batch of ``m`` rows gets the L2
    coefficient ``l2 / m`` (scikit-learn's ``alpha``, a penalty on the batch's summed loss). ``dropout_seed``
    (an integer in [0, 2**64)) keys the dropout masks of a network that drops units."""
    if loss not in LOSSES:
        raise ValueError(f"loss: unknown loss {loss!r}; choose one of {', '.join(map(repr, LOSSES))}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer: unknown update rule {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    rule = OPTIMIZERS[optimizer]
    config = np.zeros(1, STEP)
    config["loss"], config["optimizer"] = LOSSES[loss], rule.code
    config["l2"], config["clip_value"], config["clip_norm"] = l2, clip_value, clip_norm
    config["l2_per_row"], config["dropout_seed"] = bool(l2_per_row), dropout_seed
    hyper = dict.fromkeys(rule.hyper, 0.0) if hyper is None else hyper
    missing = [name for name in rule.hyper if name not in hyper]
    if missing:
        raise ValueError(f"hyper: {optimizer!r} needs {', '.join(missing)}")
    for name in rule.hyper:
        config[name] = hyper[name]
    return config


def generator_state(bits) -> np.ndarray | None:
    """A uint32 ``(625,)`` view of the live state of ``bits``, a NumPy ``MT19937`` bit generator: its
    key and position, which a kernel's shuffle reads and advances as ``RandomState.shuffle`` would.
    None for another bit generator, or where this NumPy does not lay the state out so in memory.
    The view is valid while ``bits`` lives: hold ``bits`` with it."""
    if type(bits) is not np.random.MT19937 or not _mt19937_in_place():
        return None
    return _state_words(bits)


def _state_words(bits):
    return np.ctypeslib.as_array((ctypes.c_uint32 * MT19937_WORDS).from_address(bits.ctypes.state_address))


@functools.cache
def _mt19937_in_place() -> bool:
    """Whether this NumPy keeps an MT19937's key and position as 625 words at its ``state_address``
    (checked once, against the public ``state`` of a generator a few draws in)."""
    bits = np.random.MT19937(12345)
    bits.random_raw(700)
    words, public = _state_words(bits), bits.state["state"]
    return bool(np.array_equal(words[:-1], public["key"]) and words[-1] == public["pos"])


def check_layout(layout) -> np.ndarray:
    """A private, immutable copy of ``layout`` once every row is checked to describe one
    contiguous ``params`` buffer: positive widths chained layer to layer, known activation
    codes (hidden ones before the last layer, output ones on it) with a finite parameter (0 for
    those that take none), dropout rates in [0, 1) (0 on the output layer),
    and each ``W`` then ``b`` right after the layer before.
    A width goes to BLAS as a C int (a dimension and a leading dimension), so it stays below
    2**31; a layer's weights and every offset are int64, below 2**62."""
    try:
        table = np.array(layout, dtype=np.int64, copy=True, order="C")
    except (TypeError, ValueError, OverflowError) as error:
        raise TypeError(f"layout: expected an integer table of shape (n_layers, 7) ({error})") from None
    if table.ndim != 2 or table.shape[1] != 7 or len(table) == 0:
        raise ValueError(f"layout: expected shape (n_layers, 7) with n_layers >= 1, got {table.shape}")
    parameters, rates = floats(table, PARAMETER), floats(table, DROPOUT)
    offset = 0
    for l, (n_in, n_out, activation, w, b, _, _) in enumerate(table.tolist()):
        if not (0 < n_in < 2**31 and 0 < n_out < 2**31):
            raise ValueError(f"layout: layer {l} has widths {n_in} x {n_out}; each must be in [1, 2**31) "
                             "(BLAS takes a width as a C int)")
        if l > 0 and n_in != table[l - 1, N_OUT]:
            raise ValueError(f"layout: layer {l} takes {n_in} inputs but layer {l - 1} gives {table[l - 1, N_OUT]}")
        allowed = OUTPUT_ACTIVATIONS if l == len(table) - 1 else HIDDEN_ACTIVATIONS
        if _ACTIVATION_NAMES.get(activation) not in allowed:
            raise ValueError(f"layout: layer {l} has activation code {activation}, not a known "
                             f"{'output' if l == len(table) - 1 else 'hidden'} activation")
        value = parameters[l]
        if not math.isfinite(value) or (value and _ACTIVATION_NAMES[activation] not in ACTIVATION_PARAMETERS):
            raise ValueError(f"layout: layer {l} has activation parameter {value} for a "
                             f"{_ACTIVATION_NAMES[activation]} activation")
        if not (0 <= rates[l] < 1) or (rates[l] and l == len(table) - 1):
            raise ValueError(f"layout: layer {l} has dropout {rates[l]}; expected a rate in [0, 1) on a hidden "
                             "layer, 0 on the output layer")
        if w != offset or b != offset + n_in * n_out:
            raise ValueError(f"layout: layer {l} places W at {w} and b at {b}; expected {offset} and "
                             f"{offset + n_in * n_out}")
        offset = b + n_out
        if offset >= 2**62:
            raise ValueError("layout: more parameters than an int64 offset can place")
    return frozen(table)


def frozen(array) -> np.ndarray:
    """A copy of ``array`` over immutable memory: it cannot be made writable again."""
    return np.frombuffer(array.tobytes(), dtype=array.dtype).reshape(array.shape)


class CSR:
    """Sparse rows for the kernels, in compressed sparse row form: ``data`` (nnz,) in the model
    dtype, ``indices`` (nnz,) and ``indptr`` (m + 1,) int64, the columns of row ``i`` being
    ``indices[indptr[i]:indptr[i + 1]]``. Checked once, when made (every column index in range,
    ``indptr`` non-decreasing from 0 to nnz), and immutable after: the kernels read it as it is.

    ``CSR(matrix, dtype)`` takes any SciPy sparse matrix or array (CSC and others are converted);
    ``csr[a:b]`` are rows ``a`` to ``b`` (no copy of the values), ``csr[rows]`` the rows of an
    integer array (a copy).
    """

    __slots__ = ("data", "indices", "indptr", "shape")

    def __init__(self, matrix, dtype):
        import scipy.sparse

        if not scipy.sparse.issparse(matrix):
            raise TypeError(f"X: expected a SciPy sparse matrix, got {type(matrix).__name__}")
        matrix = scipy.sparse.csr_array(matrix)
        # Copied, then checked: the caller's arrays may change under another thread meanwhile.
        data, indices, indptr = (frozen(np.asarray(matrix.data, dtype=dtype)), frozen(matrix.indices.astype(np.int64)),
                                 frozen(matrix.indptr.astype(np.int64)))
        m, n = matrix.shape
        if indptr.shape != (m + 1,) or indptr[0] != 0 or indptr[-1] != len(indices) or len(data) != len(indices) \
                or np.any(indptr[1:] < indptr[:-1]):
            raise ValueError(f"X: a sparse matrix of {m} rows whose row pointers do not rise from 0 to its "
                             f"{len(indices)} stored values")
        if len(indices) and (indices.min() < 0 or indices.max() >= n):
            raise ValueError(f"X: a sparse matrix of {n} columns with a stored column index outside [0, {n})")
        self._set(data, indices, indptr, matrix.shape)

    def _set(self, data, indices, indptr, shape):
        for name, value in zip(self.__slots__, (data, indices, indptr, (int(shape[0]), int(shape[1])))):
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise AttributeError("a CSR is read-only")

    @property
    def dtype(self):
        return self.data.dtype

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, rows):
        if not isinstance(rows, slice):
            import scipy.sparse

            matrix = scipy.sparse.csr_array((self.data, self.indices, self.indptr), shape=self.shape)
            return CSR(matrix[np.asarray(rows, dtype=np.intp)], self.dtype)
        start, stop, step = rows.indices(self.shape[0])
        if step != 1:
            raise TypeError("CSR: a slice of consecutive rows, or an integer array of rows")
        stop = max(start, stop)
        first, last = self.indptr[start], self.indptr[stop]
        part = object.__new__(CSR)
        part._set(self.data[first:last], self.indices[first:last], frozen(self.indptr[start : stop + 1] - first),
                  (stop - start, self.shape[1]))
        return part

    def __repr__(self):
        return f"CSR({self.shape[0]} x {self.shape[1]}, {len(self.data)} stored values, {self.dtype})"


def _describe(value):
    if not isinstance(value, np.ndarray):
        return type(value).__name__
    flags = value.flags
    traits = [t for t, ok in (("non-contiguous", flags.c_contiguous), ("misaligned", flags.aligned),
                              ("read-only", flags.writeable)) if not ok]
    return " ".join(traits + [f"{value.dtype} array of shape {value.shape}"])


def _check_array(value, name, dtype, shape, writable=False):
    """``value`` is an aligned C-contiguous ndarray of ``dtype`` and ``shape``, writable if ``writable``."""
    if type(value) is not np.ndarray and not isinstance(value, np.ndarray):
        raise TypeError(f"{name}: expected a NumPy array, got {type(value).__name__}")
    flags = value.flags
    if value.shape != shape or value.dtype != dtype or not (flags.c_contiguous and flags.aligned) \
            or (writable and not flags.writeable):
        wanted = ", ".join("m" if s is None else str(s) for s in shape)
        raise ValueError(f"{name}: expected an aligned C-contiguous{' writable' if writable else ''} "
                         f"{np.dtype(dtype)} array of shape ({wanted}{',' if len(shape) == 1 else ''}), "
                         f"got a {_describe(value)}")
    return value


def _check_int(value, name, low, high):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not low <= value < high:
        raise ValueError(f"{name}: expected an integer in [{low}, {high}), got {value!r}")
    return int(value)


def _check_real(value, name):
    if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool) \
            or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return float(value)
