"""The one checked door into a backend's kernels: :class:`Kernels`."""

import functools
import math

import numpy as np

from .._codes import ACTIVATIONS, LOSS_OUTPUTS, LOSSES, OPTIMIZERS
from .._layout import ACTIVATION, B_OFFSET, N_IN, N_OUT
from .buffers import (MAX_STEP, MAX_THREADS, STEP, UNITS_ROWS, CSR, _check_array, _check_int, _check_real,
                      _describe, check_layout)
from .runner import EpochRunner, _run
from .protocol import Backend

_NO_WEIGHTS = np.empty(0)  # every row weighs 1
_NO_TARGETS = object()  # a call without targets

_LOSS_NAMES = {code: name for name, code in LOSSES.items()}
_ACTIVATION_NAMES = {code: name for name, code in ACTIVATIONS.items()}
_RULES = {rule.code: (name, rule) for name, rule in OPTIMIZERS.items()}


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
    return len(rule.slots(record)), optimizer


class Kernels:
    """The checked entry into one backend's kernels, for one layout and dtype.

    Holds a private read-only copy of ``layout``; every method checks its
    arguments (types, dtypes, shapes, contiguity, alignment, codes, capacity)
    against it before the backend runs, and raises ``TypeError`` or
    ``ValueError`` naming the argument. ``splits_batches``: whether epochs of
    several batches split each batch's rows across threads; ``splits_units``: whether epochs of one row a
    step, and of small dense batches, split each layer between threads (see :meth:`epoch_runner`).
    """

    def __init__(self, name: str, backend: Backend, layout, dtype):
        layout, dtype = check_layout(layout), np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype: must be float32 or float64, got {dtype}")
        last = layout[-1]
        for attribute, value in dict(name=name, backend=backend, layout=layout, dtype=dtype,
                                     splits_batches=hasattr(backend, "train_epoch_share"),
                                     splits_units=hasattr(backend, "train_epoch_units"),
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
            raise ValueError("ws: made with keep_outputs=False, for training only; forward and data_loss need "
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
        (no ``forward`` or ``data_loss``), which a compiled backend makes smaller: it keeps the
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

    def data_loss(self, params, X, Y, loss: int, ws, weights=None) -> tuple[float, np.ndarray]:
        """``(mean data loss without the L2 term, output activations (m, n_out))`` on ``(X, Y)``,
        rows weighted by ``weights`` (float64 ``(m,)``; None: 1 each)."""
        self._params(params)
        m = self._rows(X, Y)
        weights = self._weights(weights, m)
        self._outputs_workspace(ws, m)
        loss = _check_loss(loss, self.output)
        return _run(self.backend.data_loss, self.layout, params, X, Y, weights, loss, ws), ws.outputs(m)

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
        """Clip ``grads`` in place as ``config`` says (see :meth:`~fastgd.kernels.protocol.Backend.clip`)."""
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
        ``RandomState``; None: as it is), one batch split across ``threads`` threads (see :meth:`epoch_runner`):
        ``(mean loss per row over the batches, steps taken, status)`` (see
        :meth:`~fastgd.kernels.protocol.Backend.train_epoch`)."""
        run = self.epoch_runner(params, grads, state, X, Y, order, batch_size, config, ws, weights, rng, threads)
        return run(lrs, step)

    def epoch_runner(self, params, grads, state, X, Y, order, batch_size: int, config, ws, weights=None,
               rng=None, threads: int = 1) -> "EpochRunner":
        """The buffers of a run of epochs, checked once: ``epochs(lrs, step)`` is
        ``train_epoch(params, ..., lrs, step, ws, weights, rng)``, checking only ``lrs`` and ``step``.
        Between calls, the contents of ``params``, ``grads``, ``state`` and ``order`` may change;
        their shapes and dtypes are fixed (the run keeps views of its own). With ``rng`` every
        epoch shuffles ``order`` first, as ``rng.shuffle`` would: in the backend's ``shuffle`` kernel,
        holding the generator's lock for the shuffle alone, when
        :func:`~fastgd.kernels.buffers.generator_state` can read the
        state of ``rng``'s bit generator at that moment; else by ``rng.shuffle`` itself.

        ``threads``: an epoch of one batch splits its rows into as many consecutive shares, whose
        gradients as many threads compute at once (:meth:`~fastgd.kernels.protocol.Backend.batch_gradient`), BLAS on one
        thread each; the same ``threads`` give the same results. So does each batch of an epoch of
        several where the backend ``splits_batches``, and the batch of a line search's epoch of one: the
        threads meet inside the compiled epoch at every step, each taking the step on its range of the
        parameters, and each trial point's loss on its rows (``train_epoch_share``); but each step of one
        row, or of a dense batch of at most ``UNITS_ROWS`` rows, through several layers (each, for a batch,
        with at least ``threads`` inputs) where the backend ``splits_units``: each thread takes a part of
        every layer, its rows or its units of ``W`` (``train_epoch_units``), the same step to rounding.
        Elsewhere epochs of several batches take 1."""
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
        threads = _check_int(threads, "threads", 1, MAX_THREADS + 1)
        narrowest = int(self.layout[:, N_IN].min())
        stochastic = batch_size == 1 and batches > 1
        # One row a step, or a small dense batch: a part of every layer each thread (its rows or units of W, every
        # part of a layer at least a row of W).
        units = (batches > 1 and self.splits_units and len(self.layout) > 1
                 and (stochastic or batch_size <= UNITS_ROWS and type(X) is not CSR and threads <= narrowest))
        # A line search's trial points need every thread too: its single batch's threads meet as mini-batches' do.
        meets = batches > 1 or optimizer == "line_search" and self.splits_batches
        threads = min(threads, narrowest if units or stochastic else min(batch_size, n),
                      self.n_params if meets else n)  # a range of the parameters each, or of the rows
        if threads > 1 and stochastic and not units:
            raise ValueError(f"threads: the {self.name} backend takes steps of one row on one thread"
                             + (" but through several layers" if self.splits_units else ""))
        if threads > 1 and batches > 1 and not units and not self.splits_batches:
            raise ValueError(f"threads: the {self.name} backend takes each batch of an epoch of several batches "
                             "on one thread")
        order = order.view()
        views = [a.view() if isinstance(a, np.ndarray) else a for a in (params, grads, state, X, Y, weights)]
        arguments = (self.layout, *views, order, batch_size, config.copy())
        parts = np.empty((threads - 1, self.n_params), self.dtype)  # the gradients of shares 1 on
        if threads == 1:
            shares = None
        elif not meets:  # shares 1 on: rows, workspace and gradient (a row of ``parts``, one view kept)
            bounds = [n * k // threads for k in range(threads + 1)]
            shares = (bounds[1], [(first, last, self.workspace(last - first, sparse=ws.sparse, keep_outputs=False),
                                   part) for first, last, part in zip(bounds[1:-1], bounds[2:], parts)],
                      parts, np.empty(threads))
        elif units:  # every thread: a workspace, its packed weights, gradient and state; parts of sums, step
            # sums and losses
            workspaces = [self.workspace(batch_size, batch_size, sparse=ws.sparse, keep_outputs=False)
                          for _ in range(threads)]
            shares = (workspaces, np.zeros((threads, 2 + slots, self.n_params), self.dtype),
                      np.zeros((2, threads, len(workspaces[0].acts)), self.dtype), np.empty(2 * threads))
        else:  # shares 1 on of every batch: workspaces (a single batch's rows are read where they are), and the
            # threads' losses
            rows = -(-min(batch_size, n) // threads)
            shares = ([self.workspace(rows, rows if batches > 1 else 0, sparse=ws.sparse, keep_outputs=False)
                       for _ in range(threads - 1)], parts, np.empty(threads), np.empty(4 * threads))
        return EpochRunner(self, arguments, batches, optimizer == "line_search", ws, rng, shares,
                           "train_epoch_units" if units else "train_epoch_share" if meets else "batch_gradient")
