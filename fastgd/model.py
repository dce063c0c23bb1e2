"""The model API: validate at the door, allocate once, dispatch to a backend's kernels."""

import time
import warnings
from typing import Sequence

import numpy as np
from sklearn.utils import check_random_state

from ._codes import DEFAULT_LOSS, LINE_SEARCH, LOSS_OUTPUTS, LOSSES
from ._layout import he_normal, make_layout, n_params, weight_views
from ._threads import blas_threads_for
from ._validation import check_dtype, check_int, check_nonnegative, check_positive, check_targets, check_X
from .errors import TrainingDiverged
from .kernels import resolve, resolve_saved
from .callbacks import Callback, EpochLog, History, ProgressBar
from .layers import architecture
from .optimizers import SGD, Optimizer
from .persistence import save

# Rows per forward call when predicting or evaluating, so memory stays bounded.
CHUNK_ROWS = 4096


class MLP:
    """Multilayer perceptron trained by batch, mini-batch or stochastic gradient descent.

    Parameters
    ----------
    sizes : list of int, or list of layers
        Widths ``[n_in, h1, ..., n_out]``, or layer objects
        ``[Dense(n_in, h1), ReLU(), ..., Dense(h, n_out), Softmax()]``.
    hidden : {"relu", "sigmoid", "tanh", "identity"}
        Activation after every hidden layer (when ``sizes`` are widths).
    output : {"softmax", "sigmoid", "identity"}
        Activation of the output layer (when ``sizes`` are widths).
    loss : {"cross_entropy", "binary_cross_entropy", "mse"} or None
        None picks the output's natural loss: softmax -> cross_entropy,
        sigmoid -> binary_cross_entropy, identity -> mse. ``mse`` may also
        follow a sigmoid output.
    backend : {"auto", "numpy", "numba", "cython"}
        Kernel set; "auto" takes the fastest available (``backend_`` says which).
    dtype : {"float64", "float32"}
        Dtype of the weights and of every computation.
    random_state : int, numpy.random.RandomState or None
        Seeds He-normal initialisation and, on the same generator, each
        epoch's shuffling order.

    Attributes
    ----------
    params : ndarray of shape (n_params,)
        Every weight and bias in one flat buffer (layout in ``layout``).
    layout : ndarray of int64, shape (n_layers, 5)
        ``n_in, n_out, activation code, W offset, b offset`` per layer.
    optimizer : Optimizer
        The optimizer the next ``fit(optimizer=None)`` continues with.
    classes_ : ndarray or None
        Class labels (classifiers, after the first fit).
    """

    def __init__(self, sizes: Sequence, hidden: str = "relu", output: str = "softmax",
                 loss: str | None = None, backend: str = "auto", dtype="float64", random_state=None):
        sizes, activations = architecture(sizes, hidden, output)
        output = activations[-1]
        loss = DEFAULT_LOSS[output] if loss is None else loss
        if loss not in LOSSES:
            raise ValueError(f"loss: unknown loss {loss!r}; choose one of {', '.join(map(repr, LOSSES))}")
        if output not in LOSS_OUTPUTS[loss]:
            raise ValueError(f"loss: {loss!r} needs a {' or '.join(LOSS_OUTPUTS[loss])} output, got {output!r}")
        if output == "softmax" and sizes[-1] < 2:
            raise ValueError("sizes: a softmax output needs at least 2 units")
        self.dtype = check_dtype(dtype)
        self.backend_, self._kernels = resolve(backend)
        self.sizes, self.activations, self.loss = sizes, activations, loss
        self.layout = make_layout(sizes, activations)
        self.params = np.empty(n_params(self.layout), dtype=self.dtype)
        self._rng = check_random_state(random_state)
        he_normal(self.layout, self.params, self._rng)
        self._set_optimizer(SGD(lr=0.01))
        self.l2 = 0.0
        self.classes_ = None
        self.stop_training = False

    # ------------------------------------------------------------------ properties
    @property
    def is_classifier(self) -> bool:
        return self.activations[-1] in ("softmax", "sigmoid")

    @property
    def weights(self) -> list:
        """``[W0, b0, W1, b1, ...]`` as views into ``params`` (writes go through)."""
        return weight_views(self.layout, self.params)

    def get_weights(self) -> list:
        """Copies ``[W0, b0, W1, b1, ...]``; ``W`` of shape (n_in, n_out), ``b`` of shape (n_out,)."""
        return [w.copy() for w in self.weights]

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        """Copy ``[W0, b0, ...]`` into the model, after checking every shape, dtype and value."""
        views = self.weights
        if len(weights) != len(views):
            raise ValueError(f"weights: expected {len(views)} arrays [W0, b0, ...], got {len(weights)}")
        checked = []
        for i, (new, view) in enumerate(zip(weights, views)):
            new = np.asarray(new)
            name = f"weights[{i}]"
            if new.dtype.kind not in "fiu":
                raise TypeError(f"{name}: expected a real numeric array, got dtype {new.dtype}")
            if new.shape != view.shape:
                raise ValueError(f"{name}: expected shape {view.shape}, got {new.shape}")
            if not np.all(np.isfinite(new)):
                raise ValueError(f"{name}: contains NaN or infinity")
            checked.append(new)
        for new, view in zip(checked, views):
            view[...] = new

    @property
    def optimizer(self) -> Optimizer:
        return self._optimizer

    def _set_optimizer(self, optimizer):
        self._optimizer = optimizer
        self._state = np.zeros((optimizer.n_slots, len(self.params)), dtype=self.dtype)
        self._step = 0

    def _restore_training_state(self, optimizer, state, step, l2, classes):
        """Optimizer, its state and step count, L2 and class labels, as a checkpoint holds them."""
        self._set_optimizer(optimizer)
        self._state[...] = state
        self._step, self.l2, self.classes_ = step, l2, classes

    def _restore(self, snapshot):
        """Back to ``(params, optimizer state, step count)`` copied before an epoch."""
        self.params[...], self._state[...], self._step = snapshot

    # ------------------------------------------------------------------ persistence
    def __getstate__(self):
        """Arrays and names only: the kernel module is looked up again when unpickled."""
        state = self.__dict__.copy()
        del state["_kernels"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.params, self._state = np.array(self.params), np.array(self._state)  # writable, even from a memmap
        self.backend_, self._kernels = resolve_saved(self.backend_)

    def save(self, path) -> None:
        """Write the model to ``path`` (an ``.npz`` of plain arrays and a JSON header), atomically.

        The file holds the weights, the optimizer with its state and step count,
        the shuffling generator's position, L2 and class labels: ``fastgd.load``
        gives a model that predicts bit-identically and resumes training as if
        never saved.
        """
        save(self, path)

    # ------------------------------------------------------------------ targets
    def _encode(self, y, name, n_rows, classes):
        """Targets as a C-contiguous ``(n_rows, n_out)`` array of the model dtype, and the class labels."""
        y = check_targets(y, name, n_rows)
        k = self.sizes[-1]
        if not self.is_classifier:
            if y.dtype.kind not in "biuf":
                raise TypeError(f"{name}: regression targets must be numeric, got dtype {y.dtype}")
            Y = y.reshape(n_rows, -1)
            if Y.shape[1] != k:
                raise ValueError(f"{name}: expected {k} target column(s), one per output unit, got {Y.shape[1]}")
            return np.ascontiguousarray(Y, dtype=self.dtype), None
        if y.ndim == 2:
            if y.shape[1] != k:
                raise ValueError(f"{name}: one-hot rows must have {k} columns (one per output unit), got {y.shape[1]}")
            if y.dtype.kind not in "biuf" or np.any(y < 0) or np.any(y > 1):
                raise ValueError(f"{name}: one-hot / indicator entries must be numbers in [0, 1]")
            if self.activations[-1] == "softmax" and not np.allclose(y.sum(axis=1), 1):
                raise ValueError(f"{name}: one-hot (or class-probability) rows must each sum to 1")
            return np.ascontiguousarray(y, dtype=self.dtype), np.arange(max(k, 2))
        if self.activations[-1] == "sigmoid" and k > 1:
            raise ValueError(f"{name}: a sigmoid output of {k} units takes an indicator matrix of shape (n, {k})")
        n_classes = max(k, 2)
        if classes is None:
            try:
                found = np.unique(y)
            except TypeError as error:
                raise TypeError(f"{name}: labels cannot be sorted ({error})") from None
            if y.dtype.kind in "iu" and found[0] >= 0 and found[-1] < n_classes:
                classes = np.arange(n_classes, dtype=y.dtype)
            elif len(found) != n_classes:
                raise ValueError(f"{name}: {len(found)} distinct labels {found[:10].tolist()} but the output layer "
                                 f"has {k} unit(s) for {n_classes} classes; use labels 0..{n_classes - 1} or one-hot rows")
            else:
                classes = found
        index = np.searchsorted(classes, y)
        known = index < len(classes)
        known[known] = classes[index[known]] == y[known]
        if not known.all():
            raise ValueError(f"{name}: unknown label(s) {np.unique(y[~known])[:10].tolist()}; "
                             f"the model's classes are {classes.tolist()}")
        if self.activations[-1] == "sigmoid":
            return index.astype(self.dtype).reshape(-1, 1), classes
        Y = np.zeros((n_rows, k), dtype=self.dtype)
        Y[np.arange(n_rows), index] = 1
        return Y, classes

    # ------------------------------------------------------------------ evaluation
    def _workspace(self, rows, batch_rows=0):
        return self._kernels.workspace(self.layout, self.dtype, rows, batch_rows)

    def _outputs(self, X, Y=None, ws=None):
        """Network outputs ``(n, n_out)`` and, with targets ``Y``, the mean data loss."""
        n = len(X)
        ws = ws or self._workspace(min(n, CHUNK_ROWS))
        outputs = np.empty((n, self.sizes[-1]), dtype=self.dtype)
        loss_sum = 0.0
        for start in range(0, n, CHUNK_ROWS):
            rows = slice(start, start + CHUNK_ROWS)
            if Y is None:
                outputs[rows] = self._kernels.forward(self.layout, self.params, X[rows], ws)
            else:
                value, outputs[rows] = self._kernels.evaluate(
                    self.layout, self.params, X[rows], Y[rows], LOSSES[self.loss], ws)
                loss_sum += value * len(outputs[rows])
        return outputs, loss_sum / n

    def _metrics(self, X, Y, ws=None):
        """``(loss, accuracy)``; loss includes the L2 term of the last fit, accuracy is None for regression."""
        outputs, data_loss = self._outputs(X, Y, ws)
        value = data_loss + self._kernels.l2_penalty(self.layout, self.params, self.l2)
        if not self.is_classifier:
            return value, None
        if self.activations[-1] == "softmax":
            hits = outputs.argmax(axis=1) == Y.argmax(axis=1)
        else:
            hits = np.all((outputs > 0.5) == (Y > 0.5), axis=1)
        return value, float(hits.mean())

    def _check_fitted_classes(self):
        if self.is_classifier and self.classes_ is None:
            raise RuntimeError("this classifier has not been fitted yet: call fit(X, y) first")

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, ``(n, n_classes)``: a binary sigmoid output gives ``[1 - p, p]``."""
        if not self.is_classifier:
            raise TypeError("predict_proba: only a softmax or sigmoid output gives probabilities; use predict")
        X = check_X(X, self.dtype, n_features=self.sizes[0])
        outputs, _ = self._outputs(X)
        if self.activations[-1] == "sigmoid" and self.sizes[-1] == 1:
            return np.hstack([1 - outputs, outputs])
        return outputs

    def predict(self, X) -> np.ndarray:
        """Class labels ``(n,)`` (indicator rows ``(n, k)`` for a multi-label sigmoid output),
        or regression values ``(n,)`` for one output unit, ``(n, k)`` for more."""
        X = check_X(X, self.dtype, n_features=self.sizes[0])
        self._check_fitted_classes()
        outputs, _ = self._outputs(X)
        if not self.is_classifier:
            return outputs[:, 0] if self.sizes[-1] == 1 else outputs
        if self.activations[-1] == "softmax":
            return self.classes_[outputs.argmax(axis=1)]
        if self.sizes[-1] == 1:
            return self.classes_[(outputs[:, 0] > 0.5).astype(np.intp)]
        return (outputs > 0.5).astype(np.intp)

    def evaluate(self, X, y):
        """``(loss, accuracy)`` for a classifier, ``loss`` for regression.

        The loss is the mean data loss plus the L2 term of the last fit's ``l2``.
        """
        X = check_X(X, self.dtype, n_features=self.sizes[0])
        self._check_fitted_classes()
        Y, _ = self._encode(y, "y", len(X), self.classes_)
        value, accuracy = self._metrics(X, Y)
        return (value, accuracy) if self.is_classifier else value

    # ------------------------------------------------------------------ training
    def fit(self, X, y, *, epochs: int = 1, batch_size: int | None = None, optimizer: Optimizer | None = None,
            l2: float = 0.0, clip_value: float | None = None, clip_norm: float | None = None,
            shuffle: bool = True, validation_data=None, train_metrics: bool = True,
            callbacks: Sequence[Callback] = (), verbose: int = 0, on_divergence: str = "raise") -> History:
        """Train by gradient descent; continues from the current weights.

        ``batch_size=None`` is full-batch gradient descent, ``1`` stochastic,
        anything else mini-batch (the last batch may be short). Returns a
        :class:`History`: per epoch ``loss`` (mean batch loss while training),
        ``train_loss``/``train_accuracy`` (whole training set after the epoch,
        unless ``train_metrics=False``), ``val_loss``/``val_accuracy`` and
        ``epoch_time`` (seconds of training, metrics excluded), and for a line
        search ``step_size`` (the epoch's mean accepted step). Losses include
        the L2 term ``l2 / 2 * sum(W**2)``.

        ``optimizer=None`` continues with the current optimizer and its state
        (the first fit's default is ``SGD(lr=0.01)``); a new optimizer starts
        from fresh state. Each step's gradient is clipped element-wise to
        ``[-clip_value, clip_value]``, then to global L2 norm ``clip_norm`` (as
        ``torch.nn.utils.clip_grad_norm_``), before the update.

        When the loss stops being finite, the fit stops, the model goes back to
        the weights and optimizer state of its last finite epoch, and
        ``TrainingDiverged`` is raised with the history (``on_divergence="warn"``:
        a warning, and the history is returned). An interruption (Ctrl-C) during
        an epoch puts back the weights of the epoch before and re-raises; the
        history so far is in ``history_`` either way.
        """
        # Everything is checked before anything about the model changes.
        X = check_X(X, self.dtype, n_features=self.sizes[0])
        Y, classes = self._encode(y, "y", len(X), self.classes_)
        epochs = check_int(epochs, "epochs")
        n = len(X)
        batch_size = n if batch_size is None else min(check_int(batch_size, "batch_size"), n)
        l2 = check_nonnegative(l2, "l2")
        clips = [0.0 if bound is None else check_positive(bound, name)
                 for bound, name in ((clip_value, "clip_value"), (clip_norm, "clip_norm"))]
        if optimizer is not None and not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer: expected a fastgd optimizer such as fastgd.SGD(lr=0.01), got {optimizer!r}")
        callbacks = list(callbacks)
        for callback in callbacks:
            if not callable(getattr(callback, "on_epoch_end", None)):
                raise TypeError(f"callbacks: {callback!r} has no on_epoch_end(epoch, logs) method")
        if on_divergence not in ("raise", "warn"):
            raise ValueError(f"on_divergence: expected 'raise' or 'warn', got {on_divergence!r}")
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose: expected 0 (silent), 1 (a progress bar) or 2 (a line per epoch), "
                             f"got {verbose!r}")
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("validation_data: expected a pair (X_val, y_val)")
            X_val = check_X(validation_data[0], self.dtype, "validation_data[0]", self.sizes[0])
            Y_val, _ = self._encode(validation_data[1], "validation_data[1]", len(X_val), classes)

        self.classes_, self.l2 = classes, l2
        if optimizer is not None:
            self._set_optimizer(optimizer)
        n_batches = -(-n // batch_size)
        ws = self._workspace(batch_size, batch_size if n_batches > 1 else 0)
        eval_rows = min(CHUNK_ROWS, max(n, len(X_val) if validation_data is not None else 0))
        eval_ws = self._workspace(eval_rows) if train_metrics or validation_data is not None else None
        grads = np.zeros_like(self.params)
        codes = LOSSES[self.loss], self._optimizer.code
        self.history_ = history = History()
        display = {0: [], 1: [ProgressBar(epochs)], 2: [EpochLog(epochs)]}[verbose]
        callbacks = [history] + callbacks + display
        self.stop_training = False
        for callback in callbacks:
            callback.model = self
            _hook(callback, "on_train_begin")
        diverged = None
        try:
            with blas_threads_for(self.layout, batch_size):
                for epoch in range(epochs):
                    order = self._rng.permutation(n) if shuffle else np.arange(n)
                    lrs = self._optimizer.learning_rates(self._step, n_batches)
                    last = self.params.copy(), self._state.copy(), self._step
                    start = time.perf_counter()
                    try:  # an interruption anywhere in here leaves the weights of the epoch before
                        mean_loss, steps = self._kernels.train_epoch(
                            self.layout, self.params, grads, self._state, X, Y, order, batch_size, codes[0], l2,
                            codes[1], self._optimizer.hyper(), lrs, self._step, *clips, ws)
                        self._step += steps
                    except KeyboardInterrupt:
                        self._restore(last)
                        raise
                    elapsed = time.perf_counter() - start
                    if steps < n_batches or not np.all(np.isfinite(self.params)):
                        self._restore(last)
                        diverged = (f"training diverged in epoch {epoch + 1} (loss not finite); stopped and kept "
                                    "the weights of the last finite epoch")
                        break
                    logs = {"loss": mean_loss}
                    if codes[1] == LINE_SEARCH:
                        logs["step_size"] = float(lrs.mean())
                    if train_metrics:
                        logs["train_loss"], logs["train_accuracy"] = self._metrics(X, Y, eval_ws)
                        if not np.isfinite(logs["train_loss"]):  # the epoch's last steps overflowed
                            self._restore(last)
                            diverged = (f"training diverged in epoch {epoch + 1} (loss not finite after it); "
                                        "stopped and kept the weights of the last finite epoch")
                            break
                    if validation_data is not None:
                        logs["val_loss"], logs["val_accuracy"] = self._metrics(X_val, Y_val, eval_ws)
                    if not self.is_classifier:
                        logs = {k: v for k, v in logs.items() if not k.endswith("accuracy")}
                    logs["epoch_time"] = elapsed
                    for callback in callbacks:
                        callback.on_epoch_end(epoch, logs)
                    if self.stop_training:
                        break
        finally:
            for callback in callbacks:
                _hook(callback, "on_train_end")
        if diverged and on_divergence == "raise":
            raise TrainingDiverged(diverged, history)
        if diverged:
            warnings.warn(diverged, RuntimeWarning, stacklevel=2)
        return history

    def __repr__(self):
        return (f"MLP({self.sizes}, activations={self.activations}, loss={self.loss!r}, "
                f"backend={self.backend_!r}, dtype={self.dtype.name!r})")


def _hook(callback, name):
    """Call a callback's optional hook ``name`` if it has one."""
    method = getattr(callback, name, None)
    if callable(method):
        method()
