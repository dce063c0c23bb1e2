"""The kernel contract: what every backend provides, and the one checked door into it.

A backend is a module (``_numpy.py``, the reference; ``_numba.py``;
``_cython.pxi``) with the functions of :class:`Backend` over flat buffers:

- ``layout``: int64 ``(n_layers, 5)``, rows ``n_in, n_out, activation, W offset, b offset``
  (:mod:`fastgd._layout`); ``P`` is the number of parameters it places.
- ``params``, ``grads``: ``(P,)`` in the model dtype (float32 or float64);
  ``state``: ``(slots, P)``, the optimizer's state arrays.
- ``X``: ``(m, n_in)``, or sparse rows (:class:`CSR`); ``Y``: ``(m, n_out)`` target rows; both in
  the model dtype;
  ``weights``: float64 ``(m,)``, each row's weight, or ``(0,)``: every row weighs 1. A
  weighted batch's loss and gradient are means over its total weight (``l2_per_row``:
  the L2 coefficient over it too).
- ``config``: one record of dtype :data:`~fastgd.kernels.contract.STEP` (shape ``(1,)``): the loss and
  optimizer codes, ``l2`` (``l2_per_row``: over the batch's rows), ``clip_value``, ``clip_norm`` (0: off) and every
  optimizer hyper-parameter by name (:func:`step_config` makes one).
- ``ws``: the backend's workspace, made by its ``workspace`` function.
- ``generator``: uint32 ``(625,)``, the state of a NumPy ``RandomState``'s MT19937 (its key of
  624 words, then its position; :func:`~fastgd.kernels.contract.generator_state` gives a view of a live one).

Every array is C-contiguous and aligned, with the dtype and shape above.
:class:`Kernels` checks all of that, and the codes, the optimizer state
against the optimizer's slots, the workspace against the rows, and the
learning rates against the batches, in O(1) per call before any kernel
runs; behind it the kernels trust their inputs, and nothing else in fastgd
calls them. Kernels never raise: a training epoch returns a status.
"""

import ctypes
import functools
import math
from typing import Protocol

import numpy as np

from .._codes import ACTIVATIONS, BAD_ROW, HIDDEN_ACTIVATIONS, HYPER, LOSS_OUTPUTS, LOSSES, NOT_FINITE, OK, OPTIMIZERS
from .._layout import ACTIVATION, B_OFFSET, N_IN, N_OUT
from .._threads import blas_threads, pool

#: The record of a step's configuration, with the loss and optimizer codes, L2 and its scaling, the
#: clips, and every optimizer's hyper-parameters by name (the other optimizers' are ignored).
STEP = np.dtype([("loss", np.int64), ("optimizer", np.int64), ("l2", np.float64), ("l2_per_row", np.float64),
                 ("clip_value", np.float64), ("clip_norm", np.float64)] + [(name, np.float64) for name in HYPER])
STATUS = {OK: "ok", NOT_FINITE: "loss, weights or optimizer state not finite", BAD_ROW: "row index out of range"}
MAX_STEP = 2**62
MAX_THREADS = 1024
SYNC_LINE = 8  # int64 words between two threads' meeting counts (a cache line): the kernels' FASTGD_LINE
_NO_WEIGHTS = np.empty(0)  # every row weighs 1
MT19937_WORDS = 625  # an MT19937's state as the kernels take it: 624 words of key, then the position
_NO_TARGETS = object()  # a call without targets

_LOSS_NAMES = {code: name for name, code in LOSSES.items()}
_ACTIVATION_NAMES = {code: name for name, code in ACTIVATIONS.items()}
_RULES = {rule.code: (name, rule) for name, rule in OPTIMIZERS.items()}


class Backend(Protocol):
    """The functions a backend module provides (none of them checks its arguments)."""

    SHUFFLES: bool
    """Whether it has :meth:`shuffle`; if not, its orders are shuffled by ``RandomState.shuffle``."""

    def workspace(self, layout, dtype, rows: int, batch_rows: int, sparse: bool, keep_outputs: bool):
        """Scratch for up to ``rows`` rows per call, plus room to gather ``batch_rows`` rows of
        ``X`` (none with ``sparse``: sparse rows are read in place), ``Y`` and the weights (0:
        none); an object with ``layout``, ``dtype``, ``rows``, ``batch_rows``, ``sparse``,
        ``keep_outputs`` and ``outputs(m)``, the ``(m, n_out)`` output activations of the last pass.
        Without ``keep_outputs`` it may keep the outputs of fewer rows than ``rows`` (of one block
        of rows at a time): enough to train (every function but ``forward`` and ``evaluate``)."""

    def forward(self, layout, params, X, ws) -> None:
        """Forward pass of the rows of ``X``; outputs in ``ws.outputs(m)``."""

    def evaluate(self, layout, params, X, Y, weights, loss: int, ws) -> float:
        """Forward pass and mean data loss of ``(X, Y)`` (no L2 term), accumulated in float64."""

    def l2_penalty(self, layout, params, l2: float) -> float:
        """``l2 / 2 * sum(W**2)`` over every weight matrix (biases excluded), float64."""

    def backward(self, layout, params, X, Y, weights, config, ws, grads) -> float:
        """Forward and backward pass: ``grads`` filled (L2 term included); returns the batch loss."""

    def clip(self, grads, config) -> None:
        """Clip ``grads`` in place: each element to ``[-clip_value, clip_value]``, then the whole
        vector to L2 norm ``clip_norm`` (scaled by ``clip_norm / (norm + 1e-6)`` when below 1)."""

    def update(self, params, grads, state, config, lr: float, step: int) -> None:
        """One optimizer step on ``params`` in place (rules in :mod:`fastgd.optimizers`);
        ``step`` counts from 0. ``grads`` is spent (may be overwritten)."""

    def shuffle(self, order, generator) -> None:
        """Shuffle ``order`` (int64) in place exactly as ``RandomState.shuffle`` does, advancing the
        MT19937 state ``generator`` as it does: from the last entry down, entry ``i`` swaps with
        entry ``j``, a 32-bit draw masked to the bits of ``i`` and drawn again while above ``i``."""

    def train_epoch(self, layout, params, grads, state, X, Y, weights, order, batch_size: int, config,
                    lrs, step: int, ws) -> tuple[float, int, int]:
        """One epoch of every batch's forward, backward, clipping and update, in one call.

        Batch ``i`` is the rows ``order[i*batch_size:(i+1)*batch_size]`` (int64; the last may be
        short; a single batch takes ``X`` as it is) with learning rate ``lrs[i]`` (float64, one per
        batch; a line search starts from it and writes back the step it took), optimizer step
        ``step + i``. Returns ``(the batches' losses averaged over rows, steps taken, status)``: the epoch stops before
        the update of a batch whose loss is not finite (``NOT_FINITE``) or that names a row
        outside ``X`` (``BAD_ROW``); after its last step, weights or optimizer state that are not
        finite are ``NOT_FINITE`` too.
        """

    def batch_gradient(self, layout, params, grads, X, Y, weights, first: int, last: int, loss: int, ws) -> float:
        """``grads`` of the data loss of rows ``first`` to ``last`` of the batch ``(X, Y)``, that loss
        taken over the whole batch's total weight (no L2 term); returns it. The shares of a batch
        that threads compute (``ws`` for ``last - first`` rows, one per thread) add up to its
        gradient and loss: :meth:`batch_step` adds them."""

    def batch_step(self, layout, params, grads, parts, state, X, Y, weights, losses, config, lrs, step: int,
                   ws) -> tuple[float, int, int]:
        """The step of an epoch of one batch ``(X, Y)`` whose gradient was computed in shares:
        ``grads`` (the first share's) plus each row of ``parts`` (the others', ``(k, P)``), the
        shares' losses float64 ``losses``; then as :meth:`train_epoch`'s step: the L2 term, clipping and
        the update (or line search) with ``lrs[0]``, optimizer step ``step``. Returns what
        :meth:`train_epoch` returns."""

    def train_epoch_share(self, layout, params, grads, parts, state, X, Y, weights, order, batch_size: int, config,
                          lrs, step: int, ws, share: int, sync, losses, partials):
        """Optional (``Kernels.splits_batches``): thread ``share``'s part of :meth:`train_epoch` (no line
        search) on ``len(losses)`` threads, each calling it at once with a workspace of its own (``ws``,
        for ``ceil(batch_size / threads)`` rows and as many gathered rows). Of each batch, thread ``t``
        takes rows ``m*t//threads`` to ``m*(t+1)//threads``, their gradient over the batch's total
        weight in ``grads`` (thread 0) or ``parts[t - 1]``; then the threads take the step, each on its
        range ``P*t//threads`` to ``P*(t+1)//threads`` of the parameters. They meet in ``sync`` (int64,
        zeros, ``SYNC_LINE`` words a thread and a last line that, set, tells them to give up);
        ``losses`` (float64 ``(threads,)``) and ``partials`` (``(2 threads,)``) take their sums. Thread 0
        returns what :meth:`train_epoch` returns, the others None."""


def step_config(loss: str, optimizer: str = "sgd", hyper=None, l2: float = 0.0, clip_value: float = 0.0,
                clip_norm: float = 0.0, l2_per_row: bool = False) -> np.ndarray:
    """The step configuration, a ``(1,)`` array of dtype :data:`~fastgd.kernels.contract.STEP`: ``loss`` and ``optimizer``
    by name (``fastgd._codes``), ``hyper`` a mapping of the optimizer's hyper-parameters by name
    (None: all 0, which is plain SGD). With ``l2_per_row`` a batch of ``m`` rows gets the L2
    coefficient ``l2 / m`` (scikit-learn's ``alpha``, a penalty on the batch's summed loss)."""
    if loss not in LOSSES:
        raise ValueError(f"loss: unknown loss {loss!r}; choose one of {', '.join(map(repr, LOSSES))}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer: unknown update rule {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    rule = OPTIMIZERS[optimizer]
    config = np.zeros(1, STEP)
    config["loss"], config["optimizer"] = LOSSES[loss], rule.code
    config["l2"], config["clip_value"], config["clip_norm"] = l2, clip_value, clip_norm
    config["l2_per_row"] = bool(l2_per_row)
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
    codes (softmax and exp last only), and each ``W`` then ``b`` right after the layer before.
    A width goes to BLAS as a C int (a dimension and a leading dimension), so it stays below
    2**31; a layer's weights and every offset are int64, below 2**62."""
    try:
        table = np.array(layout, dtype=np.int64, copy=True, order="C")
    except (TypeError, ValueError, OverflowError) as error:
        raise TypeError(f"layout: expected an integer table of shape (n_layers, 5) ({error})") from None
    if table.ndim != 2 or table.shape[1] != 5 or len(table) == 0:
        raise ValueError(f"layout: expected shape (n_layers, 5) with n_layers >= 1, got {table.shape}")
    offset = 0
    for l, (n_in, n_out, activation, w, b) in enumerate(table.tolist()):
        if not (0 < n_in < 2**31 and 0 < n_out < 2**31):
            raise ValueError(f"layout: layer {l} has widths {n_in} x {n_out}; each must be in [1, 2**31) "
                             "(BLAS takes a width as a C int)")
        if l > 0 and n_in != table[l - 1, N_OUT]:
            raise ValueError(f"layout: layer {l} takes {n_in} inputs but layer {l - 1} gives {table[l - 1, N_OUT]}")
        if activation not in _ACTIVATION_NAMES or (_ACTIVATION_NAMES[activation] not in HIDDEN_ACTIVATIONS
                                                   and l < len(table) - 1):
            raise ValueError(f"layout: layer {l} has activation code {activation}, not a known "
                             f"{'output' if l == len(table) - 1 else 'hidden'} activation")
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


def _check_loss(loss, output):
    """The loss code ``loss`` once it is a known one that may follow an ``output`` activation."""
    if not isinstance(loss, (int, np.integer)) or isinstance(loss, bool) or int(loss) not in _LOSS_NAMES:
        raise ValueError(f"loss: expected a loss code {sorted(_LOSS_NAMES)}, got {loss!r}")
    name = _LOSS_NAMES[int(loss)]
    if output not in LOSS_OUTPUTS[name]:
        raise ValueError(f"loss: {name!r} cannot follow this layout's {output} output")
    return int(loss)


@functools.lru_cache(maxsize=256)
def _config_rule(output, raw):
    """``(number of state arrays, optimizer name)`` of the step configuration ``raw`` (its bytes),
    once it is checked against a layout whose last activation is ``output``; each configuration once."""
    record = np.frombuffer(raw, STEP)[0]
    _check_loss(int(record["loss"]), output)
    code = int(record["optimizer"])
    if code not in _RULES:
        raise ValueError(f"config: unknown optimizer code {code}; known: {sorted(_RULES)}")
    optimizer, rule = _RULES[code]
    for name in ("l2", "l2_per_row", "clip_value", "clip_norm", *rule.hyper):
        value = float(record[name])
        if not math.isfinite(value) or (name in ("l2", "clip_value", "clip_norm") and value < 0):
            raise ValueError(f"config: {name} must be finite{' and >= 0' if name[0] in 'lc' else ''}, "
                             f"got {value!r}")
    if optimizer == "line_search" and not (0 < record["rho"] < 1 and record["min_step"] > 0):
        raise ValueError("config: a line search needs 0 < rho < 1 and min_step > 0")
    return rule.slots(record), optimizer


def _run(kernel, *args):
    """``kernel(*args)``. A Ctrl-C that reaches Python while compiled code returns its result
    surfaces as a ``SystemError`` caused by the ``KeyboardInterrupt``: raise the interrupt itself."""
    try:
        return kernel(*args)
    except SystemError as error:
        if isinstance(error.__cause__ or error.__context__, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        raise


class Kernels:
    """The checked entry into one backend's kernels, for one layout and dtype.

    Holds a private read-only copy of ``layout``; every method checks its
    arguments (types, dtypes, shapes, contiguity, alignment, codes, capacity)
    against it before the backend runs, and raises ``TypeError`` or
    ``ValueError`` naming the argument. ``splits_batches``: whether epochs of
    several batches split each batch's rows across threads (see :meth:`epochs`).
    """

    def __init__(self, name: str, backend: Backend, layout, dtype):
        layout, dtype = check_layout(layout), np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype: must be float32 or float64, got {dtype}")
        last = layout[-1]
        for attribute, value in dict(name=name, backend=backend, layout=layout, dtype=dtype,
                                     splits_batches=hasattr(backend, "train_epoch_share"),
                                     n_params=int(last[B_OFFSET] + last[N_OUT]), n_in=int(layout[0, N_IN]),
                                     n_out=int(last[N_OUT]), output=_ACTIVATION_NAMES[int(last[ACTIVATION])]).items():
            object.__setattr__(self, attribute, value)

    def __setattr__(self, name, value):
        raise AttributeError(f"Kernels is read-only: {name} cannot be set")

    def __repr__(self):
        return f"Kernels({self.name!r}, {self.n_in} -> {self.n_out}, {self.n_params} params, {self.dtype})"

    # ---------------------------------------------------------------- checks
    def _params(self, params, name="params", writable=False):
        return _check_array(params, name, self.dtype, (self.n_params,), writable)

    def _rows(self, X, Y=_NO_TARGETS):
        """The number of rows of ``X`` (dense, or a :class:`CSR`) and ``Y`` (if given), at least 1 and below 2**31."""
        if type(X) is CSR:
            m = X.shape[0]
            if X.dtype != self.dtype or X.shape[1] != self.n_in or not 0 < m < 2**31:
                raise ValueError(f"X: expected sparse rows of {self.n_in} columns in {self.dtype}, got a {X!r}")
        else:
            m = X.shape[0] if isinstance(X, np.ndarray) and X.ndim == 2 and 0 < X.shape[0] < 2**31 else None
            _check_array(X, "X", self.dtype, (m, self.n_in))
        if Y is not _NO_TARGETS:
            _check_array(Y, "Y", self.dtype, (m, self.n_out))
        return m

    @staticmethod
    def _weights(weights, m):
        return _NO_WEIGHTS if weights is None else _check_array(weights, "weights", np.float64, (m,))

    def _workspace(self, ws, rows, batch_rows=0):
        if type(ws) is not getattr(self.backend, "Workspace", None) or ws.layout is not self.layout \
                or ws.dtype != self.dtype:
            raise TypeError(f"ws: expected a workspace made by this object's workspace(), got {type(ws).__name__}")
        if ws.rows < rows or ws.batch_rows < batch_rows:
            raise ValueError(f"ws: made for {ws.rows} rows and {ws.batch_rows} gathered rows; this call needs "
                             f"{rows} and {batch_rows}")
        return ws

    def _outputs_workspace(self, ws, rows):
        if not self._workspace(ws, rows).keep_outputs:
            raise ValueError("ws: made with keep_outputs=False, for training only; forward and evaluate need "
                             "workspace(rows), which keeps the outputs of every row")

    def _config(self, config):
        """``(config, slots, optimizer)``: the checked step configuration, its optimizer's number of
        state arrays and name."""
        if not isinstance(config, np.ndarray) or config.dtype != STEP or config.shape != (1,):
            raise TypeError(f"config: expected a (1,) array of dtype fastgd.kernels.STEP (step_config() makes "
                            f"one), got {_describe(config)}")
        if not config.flags.writeable or not config.flags.aligned:
            config = config.copy()
        return (config, *_config_rule(self.output, config.tobytes()))

    def _state(self, state, slots):
        return _check_array(state, "state", self.dtype, (slots, self.n_params), writable=True)

    # ---------------------------------------------------------------- the kernels
    def workspace(self, rows: int, batch_rows: int = 0, sparse: bool = False, keep_outputs: bool = True):
        """A workspace for up to ``rows`` rows per call and ``batch_rows`` gathered rows (of sparse
        ``X``, a :class:`CSR`, with ``sparse``). ``keep_outputs=False`` makes one for training only
        (no ``forward`` or ``evaluate``), which a compiled backend makes smaller: it keeps the
        outputs of one block of rows rather than of every row."""
        rows = _check_int(rows, "rows", 1, 2**31)
        batch_rows = _check_int(batch_rows, "batch_rows", 0, 2**31)
        for name, value in (("sparse", sparse), ("keep_outputs", keep_outputs)):
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"{name}: expected True or False, got {value!r}")
        return self.backend.workspace(self.layout, self.dtype, rows, batch_rows, bool(sparse), bool(keep_outputs))

    def forward(self, params, X, ws) -> np.ndarray:
        """Output activations ``(m, n_out)`` of the rows of ``X``: a view into ``ws``, valid until its next use."""
        self._params(params)
        m = self._rows(X)
        self._outputs_workspace(ws, m)
        _run(self.backend.forward, self.layout, params, X, ws)
        return ws.outputs(m)

    def evaluate(self, params, X, Y, loss: int, ws, weights=None) -> tuple[float, np.ndarray]:
        """``(mean data loss without the L2 term, output activations (m, n_out))`` on ``(X, Y)``,
        rows weighted by ``weights`` (float64 ``(m,)``; None: 1 each)."""
        self._params(params)
        m = self._rows(X, Y)
        weights = self._weights(weights, m)
        self._outputs_workspace(ws, m)
        loss = _check_loss(loss, self.output)
        return _run(self.backend.evaluate, self.layout, params, X, Y, weights, loss, ws), ws.outputs(m)

    def l2_penalty(self, params, l2: float) -> float:
        """``l2 / 2 * sum(W**2)`` over every weight matrix (biases excluded)."""
        self._params(params)
        l2 = _check_real(l2, "l2")
        return _run(self.backend.l2_penalty, self.layout, params, l2) if l2 else 0.0

    def backward(self, params, X, Y, config, ws, grads, weights=None) -> float:
        """Forward and backward pass on ``(X, Y)``, rows weighted by ``weights`` (float64 ``(m,)``;
        None: 1 each): fills ``grads`` (L2 included); returns the batch loss."""
        self._params(params)
        self._params(grads, "grads", writable=True)
        m = self._rows(X, Y)
        weights = self._weights(weights, m)
        self._workspace(ws, m)
        config, _, _ = self._config(config)
        return _run(self.backend.backward, self.layout, params, X, Y, weights, config, ws, grads)

    def clip(self, grads, config) -> None:
        """Clip ``grads`` in place as ``config`` says (see :meth:`~fastgd.kernels.contract.Backend.clip`)."""
        self._params(grads, "grads", writable=True)
        config, _, _ = self._config(config)
        _run(self.backend.clip, grads, config)

    def update(self, params, grads, state, config, lr: float, step: int) -> None:
        """One optimizer step on ``params`` in place; ``step`` counts from 0."""
        self._params(params, writable=True)
        self._params(grads, "grads", writable=True)
        config, slots, optimizer = self._config(config)
        if optimizer == "line_search":
            raise ValueError("config: a line search steps inside train_epoch, which evaluates its trial points")
        self._state(state, slots)
        _run(self.backend.update, params, grads, state, config, _check_real(lr, "lr"),
             _check_int(step, "step", 0, MAX_STEP))

    def train_epoch(self, params, grads, state, X, Y, order, batch_size: int, config, lrs, step: int, ws,
                    weights=None, rng=None, threads: int = 1):
        """One epoch over the rows of ``X`` in ``order``, rows weighted by ``weights`` (float64 ``(n,)``;
        None: 1 each), ``order`` first shuffled in place as ``rng.shuffle(order)`` would (a NumPy
        ``RandomState``; None: as it is), one batch split across ``threads`` threads (see :meth:`epochs`):
        ``(mean loss per row over the batches, steps taken, status)`` (see :meth:`~fastgd.kernels.contract.Backend.train_epoch`)."""
        return self.epochs(params, grads, state, X, Y, order, batch_size, config, ws, weights, rng, threads)(lrs, step)

    def epochs(self, params, grads, state, X, Y, order, batch_size: int, config, ws, weights=None,
               rng=None, threads: int = 1) -> "Epochs":
        """The buffers of a run of epochs, checked once: ``epochs(lrs, step)`` is
        ``train_epoch(params, ..., lrs, step, ws, weights, rng)``, checking only ``lrs`` and ``step``.
        Between calls, the contents of ``params``, ``grads``, ``state`` and ``order`` may change;
        their shapes and dtypes are fixed (the run keeps views of its own). With ``rng`` every
        epoch shuffles ``order`` first, as ``rng.shuffle`` would: in the backend's ``shuffle`` kernel,
        holding the generator's lock for the shuffle alone, when :func:`~fastgd.kernels.contract.generator_state` can read the
        state of ``rng``'s bit generator at that moment; else by ``rng.shuffle`` itself.

        ``threads``: an epoch of one batch splits its rows into as many consecutive shares, whose
        gradients as many threads compute at once (:meth:`~fastgd.kernels.contract.Backend.batch_gradient`), BLAS on one
        thread each; the same ``threads`` give the same results. So does each batch of an epoch of
        several where the backend ``splits_batches`` (not for a line search): the threads meet inside
        the compiled epoch at every step, each taking the step on its range of the parameters
        (``train_epoch_share``). Elsewhere epochs of several batches take 1."""
        self._params(params, writable=True)
        self._params(grads, "grads", writable=True)
        n = self._rows(X, Y)
        weights = self._weights(weights, n)
        batch_size = _check_int(batch_size, "batch_size", 1, 2**31)
        batches = -(-n // batch_size)
        config, slots, optimizer = self._config(config)
        self._state(state, slots)
        _check_array(order, "order", np.int64, (n,), writable=True)
        self._workspace(ws, *((n, 0) if batches == 1 else (batch_size, batch_size)))
        if batches > 1 and ws.sparse != (type(X) is CSR):
            raise ValueError(f"ws: made for {'sparse' if ws.sparse else 'dense'} rows to gather; X is "
                             f"{'dense' if ws.sparse else 'sparse'} (workspace(..., sparse={not ws.sparse}) makes one)")
        if rng is not None and type(rng) is not np.random.RandomState:
            raise TypeError(f"rng: expected a numpy.random.RandomState or None, got {type(rng).__name__}")
        threads = min(_check_int(threads, "threads", 1, MAX_THREADS + 1), batch_size,
                      self.n_params if batches > 1 else n)  # a range of the parameters each, or of the rows
        if threads > 1 and batches > 1 and (not self.splits_batches or optimizer == "line_search"):
            raise ValueError(f"threads: the {self.name} backend takes each batch of an epoch of several batches "
                             f"on one thread{' with a line search' if self.splits_batches else ''}")
        order = order.view()
        views = [a.view() if isinstance(a, np.ndarray) else a for a in (params, grads, state, X, Y, weights)]
        arguments = (self.layout, *views, order, batch_size, config.copy())
        parts = np.empty((threads - 1, self.n_params), self.dtype)  # the gradients of shares 1 on
        if threads == 1:
            shares = None
        elif batches == 1:  # shares 1 on: rows, workspace and gradient (a row of ``parts``, one view kept)
            bounds = [n * k // threads for k in range(threads + 1)]
            shares = (bounds[1], [(first, last, self.workspace(last - first, sparse=ws.sparse, keep_outputs=False),
                                   part) for first, last, part in zip(bounds[1:-1], bounds[2:], parts)],
                      parts, np.empty(threads))
        else:  # shares 1 on of every batch: workspaces; the threads' meeting places, and their losses
            rows = -(-batch_size // threads)
            shares = ([self.workspace(rows, rows, sparse=ws.sparse, keep_outputs=False) for _ in range(threads - 1)],
                      parts, np.zeros(SYNC_LINE * (threads + 1), np.int64), np.empty(threads), np.empty(2 * threads))
        return Epochs(self, arguments, batches, optimizer == "line_search", ws, rng, shares)


class Epochs:
    """A run of epochs over buffers checked once (made by :meth:`Kernels.epochs <fastgd.kernels.Kernels.epochs>`)."""

    __slots__ = ("_kernels", "_arguments", "_batches", "_line_search", "_rng", "_shares", "_epoch")

    def __init__(self, kernels, arguments, batches, line_search, ws, rng, shares):
        self._kernels, self._batches, self._line_search = kernels, batches, line_search
        self._arguments, self._rng, self._shares = (arguments, ws), rng, shares
        self._epoch = (self._one_thread if shares is None else self._one_batch if batches == 1
                       else self._mini_batches)

    def __call__(self, lrs, step: int) -> tuple[float, int, int]:
        """One epoch with learning rates ``lrs`` (float64, one per batch) from optimizer step ``step``:
        ``(mean loss per row over the batches, steps taken, status)``."""
        _check_array(lrs, "lrs", np.float64, (self._batches,), writable=True)
        if self._line_search and not np.isfinite(lrs).all():
            raise ValueError("lrs: a line search needs finite learning rates")  # it would search forever
        step = _check_int(step, "step", 0, MAX_STEP - self._batches)
        arguments, ws = self._arguments
        if self._rng is not None:
            self._shuffle(arguments[7])
        return self._epoch(lrs, step)

    def _one_thread(self, lrs, step):
        arguments, ws = self._arguments
        return _run(self._kernels.backend.train_epoch, *arguments, lrs, step, ws)

    def _shuffle(self, order):
        """``self._rng.shuffle(order)``, in the backend's kernel where it can read the generator's state."""
        bits = self._rng._bit_generator  # held while its state is written: re-seeding the RandomState replaces it
        words = generator_state(bits) if self._kernels.backend.SHUFFLES else None
        if words is None:
            self._rng.shuffle(order)
            return
        with bits.lock:
            _run(self._kernels.backend.shuffle, order, words)

    def _one_batch(self, lrs, step):
        """The epoch of one batch, its rows' gradient computed in shares on threads."""
        backend = self._kernels.backend
        (layout, params, grads, state, X, Y, weights, _, _, config), ws = self._arguments
        first_rows, shares, parts, losses = self._shares
        loss = int(config["loss"][0])
        with blas_threads(1):  # the threads are the shares'
            futures = [pool(len(shares)).submit(_run, backend.batch_gradient, layout, params, part, X, Y, weights,
                                                 first, last, loss, share_ws)
                       for first, last, share_ws, part in shares]
            try:
                losses[0] = _run(backend.batch_gradient, layout, params, grads, X, Y, weights, 0, first_rows, loss, ws)
            finally:  # the other shares write into this run's buffers: never leave them running
                for k, future in enumerate(futures, 1):
                    losses[k] = future.result()
            return _run(backend.batch_step, layout, params, grads, parts, state, X, Y, weights, losses, config, lrs,
                        step, ws)

    def _mini_batches(self, lrs, step):
        """An epoch of mini-batches, each batch's rows in shares on threads that meet at every step
        (:meth:`~fastgd.kernels.contract.Backend.train_epoch_share`), BLAS on one thread each."""
        (layout, params, grads, state, X, Y, weights, order, batch_size, config), ws = self._arguments
        workspaces, parts, sync, losses, partials = self._shares
        threads = len(losses)
        sync[:] = 0
        share = functools.partial(self._kernels.backend.train_epoch_share, layout, params, grads, parts, state, X, Y,
                                  weights, order, batch_size, config, lrs, step)
        others = []
        with blas_threads(1):
            try:
                for t, share_ws in enumerate(workspaces, 1):
                    others.append(pool(threads - 1).submit(_share, share, share_ws, t, sync, losses, partials))
                return _share(share, ws, 0, sync, losses, partials)
            except BaseException:  # before thread 0 ran (or while it was handing out the shares)
                sync[SYNC_LINE * threads] = 1  # abandoned: the others stop waiting
                raise
            finally:  # the others write into this run's buffers: never leave them running
                for future in others:
                    future.result()


def _share(share, ws, t, sync, losses, partials):
    """Thread ``t``'s share of an epoch of mini-batches; if it cannot run, the others stop waiting for it."""
    try:
        return _run(share, ws, t, sync, losses, partials)
    except BaseException:
        sync[SYNC_LINE * len(losses)] = 1  # abandoned
        raise
