"""The network: architecture, weights, forward pass and predictions, and ``fit`` at its door."""

import numbers
import warnings
from contextlib import contextmanager
from typing import Sequence

import numpy as np

from . import persistence
from ._codes import DEFAULT_LOSS, LOSS_OUTPUTS, LOSSES
from ._layout import he_normal, make_layout, weight_views
from ._validation import check_dtype, check_outputs, check_sample_weight, check_X
from .callbacks import Callback, History
from .errors import ModelFileError
from .kernels import kernels_for, resolve_saved, step_config
from .layers import architecture, layers_of
from .optimizers import SGD, Optimizer, check_optimizer
from .targets import Task
from .training import FitOptions, TrainingState, check_monitors, forward_chunks, logged_names, loss_and_accuracy, train

__all__ = ["MLP", "load"]


class MLP:
    """Multilayer perceptron trained by batch, mini-batch or stochastic gradient descent.

    Parameters
    ----------
    sizes : list of int, or list of layers
        Widths ``[n_in, h1, ..., n_out]``, or layer objects
        ``[Dense(n_in, h1), ReLU(), Dropout(0.2), ..., Dense(h, n_out), Softmax()]``.
    hidden : str or fastgd.layers.Activation
        Activation after every hidden layer (when ``sizes`` are widths): ``"relu"``,
        ``"sigmoid"``, ``"tanh"``, ``"identity"``, or as ``torch.nn.functional`` defines
        them, ``"leaky_relu"`` (slope 0.01), ``"elu"``, ``"gelu"``, ``"gelu_tanh"`` (its
        tanh approximation), ``"silu"``, ``"softplus"``; another slope or alpha as a layer
        (``LeakyReLU(0.2)``) or spelt as a model spells it (``"leaky_relu(negative_slope=0.2)"``).
    output : {"softmax", "sigmoid", "identity", "exp"}
        Activation of the output layer (when ``sizes`` are widths).
    loss : {"cross_entropy", "binary_cross_entropy", "mse", "poisson"} or None
        None picks the output's natural loss: softmax -> cross_entropy,
        sigmoid -> binary_cross_entropy, identity -> mse, exp -> poisson
        (half the Poisson deviance, for targets >= 0). ``mse`` may also
        follow a sigmoid output. Cross-entropy and binary cross-entropy
        classify; squared error and Poisson regress.
    backend : {"auto", "numpy", "numba", "cython"}
        Kernel set; "auto" takes the fastest available (``backend_`` says which).
    dtype : {"float64", "float32"}
        Dtype of the weights and of every computation.
    random_state : int, numpy.random.RandomState or None
        Seeds He-normal initialisation and, on the same generator, each
        epoch's shuffling order. The model owns its generator: an int seeds a
        new one, None seeds one from NumPy's global generator (so
        ``np.random.seed`` makes it reproducible); a ``RandomState`` given is
        used as it is.
    dropout : float or list of float
        Inverted dropout of the hidden layers in training (one rate, or one per hidden
        layer; 0: none): each step drops each unit with that probability and scales the
        others by ``1 / (1 - p)``; predictions, ``evaluate`` and the metrics use every
        unit. The masks come from a counter-based generator keyed by a seed drawn from
        the model's generator when it is made, the step, the row and the unit: every
        backend and thread count drops the same units.

    Attributes
    ----------
    params : ndarray of shape (n_params,)
        Every weight and bias in one flat buffer (layout in ``layout``); it can
        be written into, not replaced.
    layout : ndarray of int64, shape (n_layers, 7)
        ``n_in, n_out, activation code, W offset, b offset, activation parameter, dropout``
        per layer (a read-only copy; the last two hold float64 numbers' bits).
    kernels : fastgd.kernels.Kernels
        The checked entry into the backend's kernels for this network.
    training : TrainingState
        Optimizer, its state and step count, learning-rate scale, shuffling
        generator and the last fit's L2: what the next ``fit`` continues from.
    classes_ : ndarray or None
        Class labels (classifiers, after the first fit).
    """

    def __init__(self, sizes: Sequence, hidden: str = "relu", output: str = "softmax",
                 loss: str | None = None, backend: str = "auto", dtype="float64", random_state=None,
                 dropout: float | Sequence[float] = 0.0):
        sizes, activations, dropout = architecture(sizes, hidden, output, dropout)
        loss = _check_loss(loss, activations[-1], sizes[-1])
        dtype = check_dtype(dtype)
        entry = kernels_for(backend, make_layout(sizes, activations, dropout), dtype)
        params = np.empty(entry.n_params, dtype=dtype)
        rng = _own_generator(random_state)
        he_normal(entry.layout, params, rng)
        training = TrainingState(SGD(lr=0.01), len(params), dtype, rng,
                                 dropout_seed=int(rng.randint(2**63)) if any(dropout) else 0)
        self._assemble(sizes, activations, dropout, loss, entry, params, training)

    def _assemble(self, sizes, activations, dropout, loss, entry, params, training, classes=None):
        """Take checked parts as they are: the kernel entry, weights, training state and labels."""
        self.sizes, self.activations, self.dropout, self.loss, self.dtype = (sizes, activations, dropout, loss,
                                                                             entry.dtype)
        self._kernels, self._params = entry, params
        self.training = training
        self.task = Task.of(loss, activations[-1], sizes[-1], entry.dtype)
        self.classes_ = classes
        self.stop_training = False

    # ------------------------------------------------------------------ properties
    @property
    def backend_(self) -> str:
        return self._kernels.name

    @property
    def kernels(self):
        return self._kernels

    @property
    def params(self) -> np.ndarray:
        return self._params

    @property
    def layout(self) -> np.ndarray:
        return self._kernels.layout.copy()

    @property
    def training(self) -> TrainingState:
        return self._training

    @training.setter
    def training(self, value: TrainingState):
        if not isinstance(value, TrainingState) or value.state.shape[1:] != self._params.shape \
                or value.state.dtype != self.dtype:
            raise TypeError(f"training: expected a TrainingState for {len(self._params)} {self.dtype} parameters")
        self._training = value

    @property
    def optimizer(self) -> Optimizer:
        """The optimizer the next ``fit(optimizer=None)`` continues with."""
        return self._training.optimizer

    @property
    def is_classifier(self) -> bool:
        return self.task.classifies

    @property
    def weights(self) -> list:
        """``[W0, b0, W1, b1, ...]`` as views into ``params`` (writes go through)."""
        return weight_views(self._kernels.layout, self._params)

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

    # ------------------------------------------------------------------ files and pickles
    def __getstate__(self):
        """Arrays and names only: the kernel entry is made again when unpickled."""
        state = self.__dict__.copy()
        state["_kernels"] = self._kernels.name
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._params = np.array(self._params)  # writable, even from a memmap
        layout = make_layout(self.sizes, self.activations, self.dropout)
        self._kernels = kernels_for(resolve_saved(state["_kernels"]), layout, self.dtype)

    def save(self, path) -> None:
        """Write the model to ``path`` (an ``.npz`` of plain arrays and a JSON header), atomically.

        The file holds the weights, the optimizer with its state and step count,
        the learning-rate scale, the shuffling generator's position, L2 and class
        labels: ``fastgd.load`` gives a model that predicts bit-identically and
        resumes training as if never saved.
        """
        persistence.save(path, self)

    # ------------------------------------------------------------------ predictions
    def _check_fitted_classes(self):
        if self.task.classifies and self.classes_ is None:
            raise RuntimeError("this classifier has not been fitted yet: call fit(X, y) first")

    def _outputs(self, X):
        X = check_X(X, self.dtype, n_features=self.sizes[0], sparse=True)
        return check_outputs(forward_chunks(self._kernels, self._params, X)[0])

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, ``(n, n_classes)``: a binary sigmoid output gives ``[1 - p, p]``."""
        if not self.task.classifies:
            raise TypeError("predict_proba: only a classifier (cross-entropy or binary cross-entropy loss) gives "
                            "probabilities; use predict")
        return self.task.probabilities(self._outputs(X))

    def predict(self, X) -> np.ndarray:
        """Class labels ``(n,)`` (indicator rows ``(n, k)`` for a multi-label sigmoid output),
        or regression values ``(n,)`` for one output unit, ``(n, k)`` for more."""
        self._check_fitted_classes()
        return self.task.predict(self._outputs(X), self.classes_)

    def evaluate(self, X, y, sample_weight=None):
        """``(loss, accuracy)`` for a classifier, ``loss`` for regression.

        The loss is the mean data loss (weighted by ``sample_weight``, as ``fit`` weighs rows) plus
        the L2 term of the last fit's ``l2``, over the rows' number (or total weight) where that fit
        took it over each batch's, as the scikit-learn estimators' ``alpha`` is.
        """
        X = check_X(X, self.dtype, n_features=self.sizes[0], sparse=True)
        weights = None if sample_weight is None else check_sample_weight(sample_weight, "sample_weight", len(X))
        self._check_fitted_classes()
        Y, _ = self.task.encode(y, "y", len(X), self.classes_)
        loss, accuracy = loss_and_accuracy(self, X, Y, weights=weights)
        if not np.isfinite(loss):
            raise ValueError("X: the loss is not finite on these rows; the inputs are too large for the network's "
                             "weights, or the weights are not finite")
        return (loss, accuracy) if self.task.classifies else loss

    def encode(self, X, y, classes=None, names=("X", "y")):
        """``(X, Y, classes)``: ``X`` checked, C-contiguous in the model dtype (sparse: the kernels'
        sparse rows, ``fastgd.kernels.CSR``), and targets ``y``
        as the rows ``(n, n_out)`` the kernels train on, for ``classes`` (default: the model's;
        on a first fit, the labels found in ``y``). Errors name the arguments ``names``."""
        X = check_X(X, self.dtype, names[0], self.sizes[0], sparse=True)
        Y, classes = self.task.encode(y, names[1], len(X), self.classes_ if classes is None else classes)
        return X, Y, classes

    # ------------------------------------------------------------------ training
    def fit(self, X, y, *, epochs: int | None = None, batch_size: int | None = None, optimizer: Optimizer | None = None,
            l2: float = 0.0, clip_value: float | None = None, clip_norm: float | None = None,
            shuffle: bool = True, validation_data=None, train_metrics: bool = True,
            callbacks: Sequence[Callback] = (), verbose: int = 0, on_divergence: str = "raise",
            sample_weight=None) -> History:
        """Train by gradient descent; continues from the current weights.

        ``batch_size=None`` is full-batch gradient descent, ``1`` stochastic,
        anything else mini-batch (the last batch may be short). ``epochs=None`` is one
        epoch: with a full batch, a single gradient step, which the fit warns of; pass
        ``epochs`` (and ``batch_size``) to train a model. ``fastgd.diagnose(history)``
        says what to change. Returns a
        :class:`~fastgd.callbacks.History`: per epoch ``loss`` (the batches' losses while training, averaged over rows),
        ``train_loss``/``train_accuracy`` (whole training set after the epoch,
        unless ``train_metrics=False``), ``val_loss``/``val_accuracy`` and
        ``epoch_time`` (seconds of training, metrics excluded), and for a line
        search ``step_size`` (the epoch's mean accepted step). Losses include
        the L2 term ``l2 / 2 * sum(W**2)``.

        ``sample_weight``: one weight ``>= 0`` per row of ``X`` (not all 0, none
        subnormal, their total finite in float64); each batch's loss and
        gradient are then weighted means over its rows, taken over its total
        weight, as scikit-learn takes them (``train_loss`` too):
        a row weighs against the other rows of its batch, so with
        ``batch_size=1`` weights change nothing. A batch whose rows all weigh 0
        has no mean: its loss is NaN, and the fit stops as diverged.

        ``optimizer=None`` continues with the current optimizer and its state
        (the first fit's default is ``SGD(lr=0.01)``); a new optimizer starts
        from fresh state. Each step's gradient is clipped element-wise to
        ``[-clip_value, clip_value]``, then to global L2 norm ``clip_norm`` (as
        ``torch.nn.utils.clip_grad_norm_``), before the update.

        When the loss stops being finite, the fit stops, the model goes back to
        the weights and optimizer state of its last finite epoch, and
        ``TrainingDiverged`` is raised with the history (``on_divergence="warn"``:
        a warning, and the history is returned). An interruption (Ctrl-C) or
        error during an epoch or its metrics puts back the weights of the epoch
        before and re-raises; ``history_`` holds the epochs the model has taken.
        """
        # Everything is checked before anything about the model changes.
        X, Y, classes = self.encode(X, y)
        weights = None if sample_weight is None else check_sample_weight(sample_weight, "sample_weight", len(X))
        one_step = epochs is None and batch_size is None and X.shape[0] > 1
        options = FitOptions(epochs=1 if epochs is None else epochs, batch_size=batch_size, l2=l2,
                             clip_value=clip_value, clip_norm=clip_norm,
                             shuffle=shuffle, train_metrics=train_metrics, callbacks=callbacks, verbose=verbose,
                             on_divergence=on_divergence)
        if optimizer is not None:
            check_optimizer(optimizer)
        validation = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("validation_data: expected a pair (X_val, y_val)")
            X_val, Y_val, _ = self.encode(*validation_data, classes, ("validation_data[0]", "validation_data[1]"))
            validation = X_val, Y_val
        fit_optimizer = self._training.optimizer if optimizer is None else optimizer
        check_monitors(options.callbacks, logged_names(options, validation is not None,
                                                       fit_optimizer.rule == "line_search", self.task.classifies))
        # The first epoch's learning rates: a schedule that gives a bad one is refused now.
        batches = -(-len(X) // min(options.batch_size or len(X), len(X)))
        fit_optimizer.learning_rates(self._training.step if optimizer is None else 0, batches)
        if one_step:
            warnings.warn("fit with its defaults takes a single gradient step (one epoch of one full batch): pass "
                          "epochs=... (and batch_size=...) to train the model", UserWarning, stacklevel=2)
        with self._training.exclusive():
            self.classes_ = classes
            if optimizer is not None:
                self._training.reset(optimizer)
            return train(self, X, Y, options, validation, weights)

    # ---------------------------------------------------------------- the estimators' entry
    def _encoded(self, targets, n_rows):
        """``(Y, classes)``: checked ``targets`` (class indices, indicator rows or values) as the kernels'
        target rows, with the class labels the model then has (indices 0..k-1; None for regression)."""
        return self.task.encode(targets, "y", n_rows, np.arange(self.task.n_classes) if self.task.classifies else None)

    def _train_rows(self, X, targets, options: FitOptions, rng: np.random.RandomState, weights=None) -> History:
        """Train on checked rows ``X`` (as the kernels take them) and ``targets`` (see ``_encoded``) with
        ``options``, shuffling with ``rng`` from now on: the estimators' ``fit``."""
        Y, classes = self._encoded(targets, X.shape[0])
        with self._training.exclusive():
            self.classes_, self._training.rng = classes, rng
            return train(self, X, Y, options, weights=weights)

    @contextmanager
    def _full_batch(self, X, targets, l2: float, weights=None):
        """Yields ``gradient()``: ``(loss, grads)`` of the data loss plus ``l2 / 2 * sum(W**2)`` over the
        batch's rows (or total weight) at the current ``params``, over checked rows ``X`` and
        ``targets``; the model trains meanwhile (the estimators' L-BFGS solver)."""
        Y, classes = self._encoded(targets, X.shape[0])
        config = step_config(self.loss, l2=l2, l2_per_row=True)
        ws, grads = self.kernels.workspace(X.shape[0], keep_outputs=False), np.empty_like(self.params)
        with self._training.exclusive():
            self.classes_, self._training.l2, self._training.l2_per_row = classes, l2, True
            yield lambda: (self.kernels.backward(self.params, X, Y, config, ws, grads, weights), grads)

    def __repr__(self):
        dropout = f"dropout={self.dropout}, " if any(self.dropout) else ""
        return (f"MLP({self.sizes}, activations={self.activations}, loss={self.loss!r}, {dropout}"
                f"backend={self.backend_!r}, dtype={self.dtype.name!r})")


def _check_loss(loss, output, n_out):
    """The loss (None: the output's natural loss), checked against the output layer."""
    loss = DEFAULT_LOSS[output] if loss is None else loss
    if loss not in LOSSES:
        raise ValueError(f"loss: unknown loss {loss!r}; choose one of {', '.join(map(repr, LOSSES))}")
    if output not in LOSS_OUTPUTS[loss]:
        raise ValueError(f"loss: {loss!r} needs output={' or '.join(map(repr, LOSS_OUTPUTS[loss]))}, "
                         f"got output={output!r}")
    if output == "softmax" and n_out < 2:
        raise ValueError("sizes: a softmax output needs at least 2 units; for one output unit choose "
                         "output='identity' (regression) or output='sigmoid' (two classes)")
    return loss


def _own_generator(random_state):
    """The model's shuffling generator: a new one seeded by an int (None: seeded from NumPy's global
    generator, so ``np.random.seed`` makes it reproducible), or the ``RandomState`` given."""
    if isinstance(random_state, np.random.RandomState):
        return random_state
    if random_state is None:
        random_state = np.random.randint(2**32, dtype=np.uint64)
    if not isinstance(random_state, numbers.Integral) or isinstance(random_state, bool):
        raise ValueError(f"random_state: expected an int, a numpy.random.RandomState or None, got {random_state!r}")
    return np.random.RandomState(random_state)


def load(path) -> MLP:
    """The model saved at ``path`` (see :meth:`MLP.save`), on the backend it was saved
    with, or, when that one is not available here, the fastest available (with a warning).

    The model owns the generator restored from the file; NumPy's global state is untouched.
    """
    saved = persistence.load(path)
    try:
        architecture(layers_of(saved.sizes, saved.activations, saved.dropout), hidden=None, output=None)
        loss = _check_loss(saved.loss, saved.activations[-1], saved.sizes[-1])
    except (TypeError, ValueError) as error:
        raise ModelFileError(f"architecture: {error}") from None
    net = MLP.__new__(MLP)
    layout = make_layout(saved.sizes, saved.activations, saved.dropout)
    entry = kernels_for(resolve_saved(saved.backend), layout, saved.dtype)
    net._assemble(saved.sizes, saved.activations, saved.dropout, loss, entry, saved.params, saved.training,
                  saved.classes)
    return net
