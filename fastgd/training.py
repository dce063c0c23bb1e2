"""The training loop (epochs, divergence, interruption, callbacks, history) and the training state.

:func:`train` runs every epoch of a fit over arrays that are already
checked: ``MLP.fit``, the scikit-learn estimators and the tools call it.
Everything that changes while a model trains lives in its
:class:`~fastgd.training.TrainingState`, which the model file saves.
"""

import numbers
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from ._codes import LOSSES, NOT_FINITE, OK
from ._threads import blas_threads, pool, results, share_threads_for, threads_for, units_threads_for
from ._validation import check_bool, check_int, check_nonnegative, check_positive
from .callbacks import EpochLog, History, ProgressBar
from .diagnosis import scale_advice
from .errors import TrainingDiverged
from .kernels import step_config
from .kernels.buffers import STATUS
from .optimizers import Optimizer, check_optimizer

# Rows per forward call when predicting or evaluating, so memory stays bounded.
CHUNK_ROWS = 4096


class TrainingState:
    """Everything that changes while a model trains, saved with it.

    Attributes
    ----------
    optimizer : Optimizer
        The optimizer spec (immutable); :meth:`reset` starts another.
    state : ndarray of shape (optimizer.n_slots, n_params)
        The optimizer's state arrays, zeros at the start; ``slots`` names them.
    step : int
        Optimizer steps taken (schedules and Adam's bias correction count them).
    lr_scale : float
        Multiplies every learning rate; ``ReduceLROnPlateau`` and scikit-learn's
        adaptive rate lower it.
    rng : numpy.random.RandomState
        The shuffling generator.
    l2 : float
        L2 strength of the last fit (``MLP.evaluate`` reports the loss with it).
    l2_per_row : bool
        Whether the last fit divided ``l2`` by each batch's rows (or total weight), as
        scikit-learn's ``alpha``; ``evaluate`` then divides it by the rows it evaluates.
    dropout_seed : int
        Keys the dropout masks (with the step, row and unit), in [0, 2**64).
    """

    def __init__(self, optimizer: Optimizer, n_params: int, dtype, rng: np.random.RandomState, *, state=None,
                 step: int = 0, lr_scale: float = 1.0, l2: float = 0.0, l2_per_row: bool = False,
                 dropout_seed: int = 0):
        self._optimizer = check_optimizer(optimizer)
        shape = (optimizer.n_slots, n_params)
        self._state = np.zeros(shape, dtype) if state is None else np.array(state, dtype=dtype, order="C")
        if self._state.shape != shape:
            raise ValueError(f"state: {type(optimizer).__name__} keeps {shape[0]} arrays of {n_params} values; "
                             f"got shape {self._state.shape}")
        self.step, self.lr_scale, self.rng, self.l2, self.l2_per_row = step, lr_scale, rng, l2, l2_per_row
        self.dropout_seed = dropout_seed
        self._lock, self._fitting, self._workspaces = threading.RLock(), False, {}

    @property
    def optimizer(self) -> Optimizer:
        return self._optimizer

    @property
    def state(self) -> np.ndarray:
        return self._state

    @property
    def slots(self) -> dict[str, np.ndarray]:
        """The optimizer's state arrays by name (``{"exp_avg": ..., "exp_avg_sq": ...}`` for Adam), as
        views of the rows of ``state``."""
        return dict(zip(self._optimizer.slots, self._state))

    @property
    def step(self) -> int:
        return self._step

    @step.setter
    def step(self, value):
        self._step = check_int(value, "step", minimum=0)

    @property
    def lr_scale(self) -> float:
        return self._lr_scale

    @lr_scale.setter
    def lr_scale(self, value):
        self._lr_scale = check_nonnegative(value, "lr_scale")

    @property
    def rng(self) -> np.random.RandomState:
        return self._rng

    @rng.setter
    def rng(self, value):
        if type(value) is not np.random.RandomState:
            raise TypeError(f"rng: expected a numpy.random.RandomState, got {value!r}")
        self._rng = value

    @property
    def l2(self) -> float:
        return self._l2

    @l2.setter
    def l2(self, value):
        self._l2 = check_nonnegative(value, "l2")

    @property
    def l2_per_row(self) -> bool:
        return self._l2_per_row

    @l2_per_row.setter
    def l2_per_row(self, value):
        self._l2_per_row = check_bool(value, "l2_per_row")

    @property
    def dropout_seed(self) -> int:
        return self._dropout_seed

    @dropout_seed.setter
    def dropout_seed(self, value):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or not 0 <= value < 2**64:
            raise ValueError(f"dropout_seed: expected an integer in [0, 2**64), got {value!r}")
        self._dropout_seed = int(value)

    def reset(self, optimizer: Optimizer) -> None:
        """Start ``optimizer`` from fresh state: zeros, step 0, scale 1."""
        with self.exclusive():
            self._optimizer = check_optimizer(optimizer)
            self._state = np.zeros((optimizer.n_slots, self._state.shape[1]), self._state.dtype)
            self.step, self.lr_scale = 0, 1.0

    def learning_rates(self, n_steps: int, out: np.ndarray | None = None) -> np.ndarray:
        """The learning rate of each of the next ``n_steps`` steps, float64 (written into ``out``, a
        float64 array of ``n_steps``, when given)."""
        rates = self._optimizer.learning_rates(self._step, n_steps, out)
        if self._lr_scale != 1:
            rates *= self._lr_scale
        return rates

    def workspace(self, purpose, kernels, *args, **kwargs):
        """``kernels.workspace(*args, **kwargs)``, kept for the next fit that asks the same of ``purpose``
        (a name): fits after the first reuse its buffers rather than allocate them and fault their pages in
        again. Only the fit under way (:meth:`fitting`) may ask; the buffers are not saved with the model."""
        key = (kernels, args, tuple(kwargs.items()))
        kept = self._workspaces.get(purpose)
        if kept is None or kept[0] != key:
            kept = self._workspaces[purpose] = key, kernels.workspace(*args, **kwargs)
        return kept[1]

    @contextmanager
    def exclusive(self):
        """Hold the model to train it. The thread holding it may enter again, except from a fit's
        epochs (:meth:`fitting`: a callback cannot train the model the fit trains); another thread
        at the same time is refused."""
        if not self._lock.acquire(blocking=False):
            raise RuntimeError("fit: this model is already being trained (by another thread); "
                               "train a copy of it (copy.deepcopy) to train two at once")
        try:
            if self._fitting:
                raise RuntimeError("fit: this model is being trained by a fit under way, which called this back; "
                                   "a callback cannot train the model too (train a copy of it: copy.deepcopy)")
            yield
        finally:
            self._lock.release()

    @contextmanager
    def fitting(self):
        """Hold the model (:meth:`exclusive`) while a fit's epochs and callbacks run."""
        with self.exclusive():
            self._fitting = True
            try:
                yield
            finally:
                self._fitting = False

    def __getstate__(self):
        state = self.__dict__.copy()
        del state["_lock"], state["_fitting"], state["_workspaces"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._state = np.array(self._state)  # writable, even from a memmap
        self._lock, self._fitting, self._workspaces = threading.RLock(), False, {}


@dataclass(frozen=True)
class FitOptions:
    """The settings of one fit, checked when made (each error names the argument).

    ``batch_size=None`` is full-batch gradient descent, ``1`` stochastic, anything
    else mini-batch (the last batch may be short); with ``shuffle`` each epoch takes
    the rows in a new random order, with ``reshuffle`` the order of the epoch before
    permuted (scikit-learn's estimators' stream). ``l2_per_row``: a batch of ``m``
    rows gets L2 coefficient ``l2 / m``. Each step's gradient is clipped
    element-wise to ``[-clip_value, clip_value]``, then to global L2 norm
    ``clip_norm``. ``verbose``: 0 silent, 1 a progress bar, 2 a line per epoch.
    """

    epochs: int = 1
    batch_size: int | None = None
    l2: float = 0.0
    clip_value: float | None = None
    clip_norm: float | None = None
    shuffle: bool = True
    train_metrics: bool = True
    callbacks: tuple = ()
    verbose: int = 0
    on_divergence: str = "raise"
    reshuffle: bool = False
    l2_per_row: bool = False

    def __post_init__(self):
        check_int(self.epochs, "epochs")
        if self.batch_size is not None:
            check_int(self.batch_size, "batch_size")
        object.__setattr__(self, "l2", check_nonnegative(self.l2, "l2"))
        for name in ("clip_value", "clip_norm"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, check_positive(getattr(self, name), name))
        check_bool(self.shuffle, "shuffle")
        check_bool(self.reshuffle, "reshuffle")
        check_bool(self.l2_per_row, "l2_per_row")
        check_bool(self.train_metrics, "train_metrics")
        try:
            callbacks = tuple(self.callbacks)
        except TypeError:
            raise TypeError(f"callbacks: expected a list of callbacks, got {self.callbacks!r}") from None
        for callback in callbacks:
            if not callable(getattr(callback, "on_epoch_end", None)):
                raise TypeError(f"callbacks: {callback!r} has no on_epoch_end(epoch, logs) method")
        object.__setattr__(self, "callbacks", callbacks)
        if self.verbose not in (0, 1, 2) or isinstance(self.verbose, bool):
            raise ValueError(f"verbose: expected 0 (silent), 1 (a progress bar) or 2 (a line per epoch), "
                             f"got {self.verbose!r}")
        if self.on_divergence not in ("raise", "warn"):
            raise ValueError(f"on_divergence: expected 'raise' or 'warn', got {self.on_divergence!r}")


def forward_chunks(kernels, params, X, Y=None, loss=None, workspaces=None, weights=None):
    """``(outputs (n, n_out), mean data loss)`` of the rows of ``X`` in chunks of ``CHUNK_ROWS``
    rows; the loss (no L2 term; rows weighted by ``weights``, None: 1 each) needs targets ``Y``
    and a loss code, else it is None. ``workspaces``: one per thread that takes chunks at once
    (each BLAS on one thread); None: one thread, its workspace made here."""
    n = len(X)
    workspaces = workspaces or [kernels.workspace(min(n, CHUNK_ROWS))]
    result = np.empty((n, kernels.n_out), dtype=kernels.dtype)
    starts = range(0, n, CHUNK_ROWS)
    sums = np.zeros(len(starts))  # each chunk's weighted loss, added in order whatever thread took it

    def take(thread):
        ws = workspaces[thread]
        for i in range(thread, len(starts), len(workspaces)):
            rows = slice(starts[i], starts[i] + CHUNK_ROWS)
            if Y is None:
                result[rows] = kernels.forward(params, X[rows], ws)
                continue
            chunk = None if weights is None else weights[rows]
            count = len(result[rows]) if chunk is None else float(chunk.sum())
            if count:
                value, result[rows] = kernels.data_loss(params, X[rows], Y[rows], loss, ws, chunk)
                sums[i] = value * count
            else:  # rows that all weigh 0 have no mean loss and add nothing to the sum: their outputs only
                result[rows] = kernels.forward(params, X[rows], ws)

    threads = min(len(workspaces), len(starts))
    if threads == 1:
        take(0)
    else:
        with blas_threads(1):
            others = [pool(threads - 1).submit(take, thread) for thread in range(1, threads)]
            try:
                take(0)
            finally:  # the others write into ``result``: never leave them running
                results(others)
    return result, (float(sums.sum()) / (n if weights is None else float(weights.sum())) if Y is not None else None)


def loss_and_accuracy(net, X, Y, workspaces=None, weights=None):
    """``(loss, accuracy)`` of ``net`` on checked rows ``(X, Y)`` (weighted by ``weights``, None: 1 each):
    the mean data loss plus the L2 term of the last fit (``net.training``: ``l2``, over the rows' number or
    total weight with ``l2_per_row``); accuracy is None for regression. ``workspaces``: as :func:`forward_chunks`
    takes them."""
    training = net.training
    result, data_loss = forward_chunks(net.kernels, net.params, X, Y, LOSSES[net.loss], workspaces, weights)
    l2 = training.l2 / (len(X) if weights is None else float(weights.sum())) if training.l2_per_row else training.l2
    return data_loss + net.kernels.l2_penalty(net.params, l2), net.task.accuracy(result, Y)


def train(net, X, Y, options: FitOptions, validation=None, weights=None) -> History:
    """Train ``net`` on checked rows ``(X, Y)`` (C-contiguous, the model dtype, ``Y`` encoded by
    ``net.task``) for ``options.epochs`` epochs, continuing from its weights and training state.
    ``weights``: checked float64 weights of the rows (None: 1 each), for the training loss.

    ``validation``: checked rows ``(X_val, Y_val)`` or None. Returns the :class:`~fastgd.callbacks.History`
    (also in ``net.history_``): per epoch ``loss`` (the batches' losses while training, averaged over rows),
    ``train_loss``/``train_accuracy`` (whole training set after the epoch, unless
    ``options.train_metrics`` is False), ``val_loss``/``val_accuracy``, ``epoch_time``
    (seconds of training, metrics excluded) and, for a line search, ``step_size``.

    When the loss stops being finite the model goes back to the weights and training state
    of its last finite epoch and ``TrainingDiverged`` is raised with the history (or, with
    ``on_divergence="warn"``, warned about). An interruption (Ctrl-C) or error during an epoch
    or its metrics puts back the weights of the epoch before and re-raises.
    """
    kernels, training, params = net.kernels, net.training, net.params
    n = len(X)
    batch_size = n if options.batch_size is None else min(options.batch_size, n)
    n_batches = -(-n // batch_size)
    with training.fitting():
        training.l2, training.l2_per_row = options.l2, options.l2_per_row
        optimizer = training.optimizer
        config = step_config(net.loss, optimizer.rule, optimizer.hyper(), options.l2, options.clip_value or 0.0,
                             options.clip_norm or 0.0, options.l2_per_row, training.dropout_seed)
        ws = training.workspace("train", kernels, batch_size, batch_size if n_batches > 1 else 0,
                                sparse=not isinstance(X, np.ndarray), keep_outputs=False)
        needs_metrics = options.train_metrics or validation is not None
        # The metrics take chunks of rows on as many threads as a step of one chunk repays.
        eval_rows = min(CHUNK_ROWS, max(n, len(validation[0]) if validation else 0))
        eval_ws = [training.workspace(("metrics", t), kernels, eval_rows)
                   for t in range(threads_for(kernels.layout, CHUNK_ROWS))] if needs_metrics else None
        grads, state, rows, lrs = np.zeros_like(params), training.state, np.arange(n), np.empty(n_batches)
        order = rows.copy()
        # Each epoch shuffles the order in the kernel: rng.permutation(n), or (reshuffle) the order before permuted.
        # An epoch of one batch splits its rows across the threads it repays; so do mini-batches where the
        # backend's threads meet inside its epoch, and otherwise leave the threads to BLAS; steps of one row
        # split every layer between threads where the backend's threads meet inside its epoch.
        threads = threads_for(kernels.layout, batch_size)
        if n_batches == 1:
            shares = threads
        elif batch_size == 1:
            shares = units_threads_for(kernels.layout) \
                if kernels.splits_units and len(kernels.layout) > 1 else 1
        else:
            shares = share_threads_for(kernels.layout, batch_size) if kernels.splits_batches else 1
        train_epoch = kernels.epoch_runner(params, grads, state, X, Y, order, batch_size, config, ws, weights,
                                     training.rng if options.shuffle else None, shares)
        last = np.empty_like(params), np.empty_like(state)  # the weights and state an epoch started from
        line_search = optimizer.rule == "line_search"
        classifies = net.task.classifies
        net.history_ = history = History(logged_names(options, validation is not None, line_search, classifies),
                                         {"epochs": options.epochs, "batch_size": options.batch_size,
                                          "steps": n_batches})
        display = {0: [], 1: [ProgressBar(options.epochs)], 2: [EpochLog(options.epochs)]}[options.verbose]
        callbacks = [*options.callbacks, *display]
        net.stop_training = False
        for callback in [history, *callbacks]:
            callback.model = net
            _hook(callback, "on_train_begin")
        diverged = None
        try:
            with blas_threads(threads):
                for epoch in range(options.epochs):
                    if options.shuffle and not options.reshuffle:
                        np.copyto(order, rows)
                    training.learning_rates(n_batches, lrs)
                    np.copyto(last[0], params)
                    np.copyto(last[1], state)
                    first_step = training.step
                    start = time.perf_counter()
                    # A fault before the history records the epoch leaves the weights of the epoch before.
                    try:
                        mean_loss, steps, status = train_epoch(lrs, first_step)
                        training.step = first_step + steps
                        elapsed = time.perf_counter() - start
                        if status != OK:
                            _restore(params, training, last, first_step)
                            if status != NOT_FINITE:
                                raise RuntimeError(f"train_epoch: {STATUS.get(status, status)}")
                            diverged = (f"training diverged in epoch {epoch + 1} (its loss, weights or optimizer "
                                        "state stopped being finite); stopped and kept the weights of the last "
                                        "finite epoch")
                            break
                        logs = {"loss": mean_loss}
                        if line_search:
                            logs["step_size"] = float(lrs.mean())
                        if options.train_metrics:
                            logs["train_loss"], logs["train_accuracy"] = loss_and_accuracy(net, X, Y, eval_ws, weights)
                            if not np.isfinite(logs["train_loss"]):  # the epoch's last steps overflowed
                                _restore(params, training, last, first_step)
                                diverged = (f"training diverged in epoch {epoch + 1} (loss not finite after it); "
                                            "stopped and kept the weights of the last finite epoch")
                                break
                        if validation is not None:
                            logs["val_loss"], logs["val_accuracy"] = loss_and_accuracy(net, *validation, eval_ws)
                        if not classifies:
                            logs.pop("train_accuracy", None)
                            logs.pop("val_accuracy", None)
                        logs["epoch_time"] = elapsed
                        history.on_epoch_end(epoch, logs)
                    except BaseException:  # Ctrl-C, or an error in the metrics
                        _restore(params, training, last, first_step)
                        raise
                    for callback in callbacks:
                        callback.on_epoch_end(epoch, logs)
                    if net.stop_training:
                        break
        finally:
            for callback in [history, *callbacks]:
                _hook(callback, "on_train_end")
    if diverged:
        diverged = f"{diverged}: lower the learning rate (or clip gradients: clip_norm=1.0)"
        unscaled = scale_advice(X)
        diverged += f"; {unscaled}" if unscaled else ""
    if diverged and options.on_divergence == "raise":
        raise TrainingDiverged(diverged, history)
    if diverged:
        warnings.warn(diverged, RuntimeWarning, stacklevel=3)
    return history


def logged_names(options, validation: bool, line_search: bool, classifies: bool) -> list:
    """The names a fit logs each epoch, in order (``validation``: whether it has validation data)."""
    names = ["loss", *(["step_size"] if line_search else [])]
    for prefix, measured in (("train", options.train_metrics), ("val", validation)):
        if measured:
            names += [f"{prefix}_loss", *([f"{prefix}_accuracy"] if classifies else [])]
    return [*names, "epoch_time"]


def check_monitors(callbacks, names):
    """Every callback that watches a metric (its ``monitor``) watches one of the ``names`` the fit logs."""
    for callback in callbacks:
        monitor = getattr(callback, "monitor", None)
        if isinstance(monitor, str) and monitor not in names:
            hint = {"val": "; pass validation_data=(X_val, y_val)", "train": "; leave train_metrics=True"}
            raise ValueError(f"callbacks: {type(callback).__name__} monitors {monitor!r}, which this fit does not log "
                             f"(it logs {', '.join(names)}){hint.get(monitor.split('_')[0], '')}")


def _restore(params, training, last, step):
    """Back to the weights and optimizer state ``last`` copied before an epoch, and its first ``step``."""
    params[...], training.state[...] = last
    training.step = step


def _hook(callback, name):
    """Call a callback's optional hook ``name`` if it has one."""
    method = getattr(callback, name, None)
    if callable(method):
        method()
