"""scikit-learn estimators: ``MLPClassifier`` and ``MLPRegressor`` on fastgd's kernels.

The parameters scikit-learn's own MLP estimators have mean what they mean
there, their defaults are the same, and so are the steps: with the same data
and ``random_state`` (an int or a ``RandomState``) a float64 fit draws the
same initial weights, validation split and shuffled batches from one
generator, takes scikit-learn's SGD (Sutskever's momentum, its learning-rate
schedules) and Adam (epsilon-hat) steps with a fresh optimizer each ``fit``,
and keeps its ``n_iter_``, ``t_``, ``loss_curve_``, ``best_loss_`` and
validation scores, to rounding (``tests/test_sklearn_steps.py``).

Where scikit-learn's gradient differs from the kernels' by a constant factor
``s`` (``s = n_outputs / 2`` for squared error, which scikit-learn halves and
sums over outputs; ``s = n_outputs`` for multi-label log-loss and the Poisson
loss, which it sums over outputs), the wrapper converts: L2 ``alpha / s`` per
row of each batch, SGD's rate times ``s``, Adam's ``eps`` over ``s``. Reported
losses are scaled as scikit-learn reports them (squared error: halved mean;
multi-label and Poisson: summed over outputs); for multi-output squared error
its L2 term is then reported with the data term's factor, ``1/2``, where
scikit-learn's carries ``s``.

``solver="lbfgs"`` is scikit-learn's too: SciPy's L-BFGS-B over the flat
parameter buffer (visited in scikit-learn's order: every weight matrix, then
every bias), each evaluation one full-batch forward and backward pass of the
kernels, with scikit-learn's objective and ``max_iter``, ``max_fun`` and
``tol``.

``activation`` takes scikit-learn's four (``"identity"``, ``"logistic"``, ``"tanh"``,
``"relu"``) and fastgd's other hidden activations, as ``torch.nn.functional`` defines
them: ``"leaky_relu"`` (slope 0.01; another as ``"leaky_relu(negative_slope=0.2)"``),
``"elu"`` (``"elu(alpha=...)"``), ``"gelu"``, ``"gelu_tanh"`` (its tanh approximation),
``"silu"`` and ``"softplus"``.

``dropout`` (fastgd's; 0 by default, scikit-learn's behaviour) is the rate of inverted dropout
of the hidden layers in training, one for all or one per hidden layer (see ``fastgd.MLP``);
the masks' seed is drawn from ``random_state``'s generator.

``solver`` may also be a fastgd optimizer (``fastgd.RMSprop(...)``, ...),
used as given on the kernels' objective (no conversion).

A fit checks and encodes its data once, then runs every epoch in one call of
fastgd's training loop; scikit-learn's stopping rules (``tol``,
``n_iter_no_change``, ``early_stopping``) and its ``"invscaling"`` and
``"adaptive"`` learning rates apply between epochs, as a callback. A fit
that diverges raises scikit-learn's ``ValueError`` (also a
``fastgd.TrainingDiverged``) and keeps the weights of its last finite
iteration; with ``early_stopping`` it scores the rest NaN and keeps the best.
"""

import math
import numbers
import warnings

import numpy as np
import scipy.optimize
import scipy.sparse
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import r2_score
from sklearn.model_selection import train_test_split
from sklearn.utils import check_array, check_random_state, column_or_1d
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.multiclass import check_classification_targets, type_of_target, unique_labels
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted, validate_data

from ._codes import HIDDEN_ACTIVATIONS, activation_rule
from ._layout import B_OFFSET, N_IN, N_OUT, W_OFFSET, glorot_uniform
from ._threads import blas_threads_for
from ._validation import (check_int, check_nonnegative, check_outputs, check_positive, check_real,
                          check_weight_range, kernel_array)
from .errors import NonFiniteWeights, TrainingDiverged
from .kernels import CSR
from .layers import dropout_rates
from .network import MLP
from .optimizers import SGD, Adam, Optimizer, check_optimizer
from .training import FitOptions, forward_chunks

__all__ = ["MLPClassifier", "MLPRegressor"]

# scikit-learn's activation names and ours; every other hidden activation of fastgd by its own name.
ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}
SOLVERS = ("sgd", "adam", "lbfgs")
LEARNING_RATES = ("constant", "invscaling", "adaptive")
# The regressor's losses, by scikit-learn's name: the output activation each takes.
LOSSES = {"squared_error": "identity", "poisson": "exp"}
# SciPy 1.15 deprecated L-BFGS-B's iprint; scikit-learn passes it (for verbose) only to older SciPy.
LBFGS_TAKES_IPRINT = tuple(int(part) for part in scipy.__version__.split(".")[:2]) < (1, 15)


def _stochastic(estimator):
    """Whether ``partial_fit`` is there: scikit-learn's ``lbfgs`` has none."""
    return estimator.solver != "lbfgs"


def _keep(estimator, arguments):
    """Store the arguments of ``__init__`` (its ``locals()``) as attributes of the same names, unchanged,
    as scikit-learn's estimators do."""
    for name, value in arguments.items():
        if name != "self":
            setattr(estimator, name, value)


def _hidden_activation(name):
    """fastgd's spelling of the estimators' ``activation``; ValueError if it is not one."""
    if name in ACTIVATIONS:
        return ACTIVATIONS[name]
    try:
        if activation_rule(name)[0] in HIDDEN_ACTIVATIONS and name not in ACTIVATIONS.values():
            return name
    except ValueError:
        pass
    others = [a for a in HIDDEN_ACTIVATIONS if a not in ACTIVATIONS.values()]
    raise ValueError(f"activation: expected one of {list(ACTIVATIONS) + others}, got {name!r}")


def _check(condition, message):
    if not condition:
        raise ValueError(message)


class _BaseMLP(BaseEstimator):
    """What the classifier and the regressor share: parameters, checks and the epoch loop."""

    # ---------------------------------------------------------------- checks
    def _check_params(self):
        sizes = np.atleast_1d(self.hidden_layer_sizes) if not isinstance(self.hidden_layer_sizes, str) else None
        _check(sizes is not None and sizes.ndim == 1 and sizes.dtype.kind in "iu" and np.all(sizes >= 1),
               f"hidden_layer_sizes: expected positive integers, got {self.hidden_layer_sizes!r}")
        _hidden_activation(self.activation)
        dropout_rates(self.dropout, len(sizes))
        _check(isinstance(self.solver, Optimizer) or self.solver in SOLVERS,
               f"solver: expected one of {list(SOLVERS)} or a fastgd optimizer, got {self.solver!r}")
        _check(self.learning_rate in LEARNING_RATES, f"learning_rate: expected one of {list(LEARNING_RATES)}, "
                                                     f"got {self.learning_rate!r}")
        if self.batch_size != "auto":
            check_int(self.batch_size, "batch_size")
        for name in ("alpha", "power_t", "tol", "epsilon"):
            check_nonnegative(getattr(self, name), name)
        check_positive(self.learning_rate_init, "learning_rate_init")
        check_real(self.momentum, "momentum", 0.0, 1.0)
        for name in ("beta_1", "beta_2", "validation_fraction"):
            check_real(getattr(self, name), name, 0.0, 1.0, high_open=True)
        _check(not self.early_stopping or self.validation_fraction > 0,
               "validation_fraction: must be > 0 with early_stopping")
        check_int(self.max_iter, "max_iter")
        check_int(self.max_fun, "max_fun")
        _check(self.dtype is None or self.dtype in ("float32", "float64", np.float32, np.float64),
               f"dtype: expected None (the dtype of X), 'float32' or 'float64', got {self.dtype!r}")
        if self.n_iter_no_change != np.inf:
            check_int(self.n_iter_no_change, "n_iter_no_change")
        return [int(s) for s in sizes]

    def _check_split(self, targets, stratify=None):
        """With ``early_stopping`` (of a stochastic solver), that the validation split of ``targets``
        (stratified on ``stratify``) can be made as scikit-learn makes it (its stratification's errors
        first) and has the 2 rows it needs; before anything is built or drawn."""
        if not (self.early_stopping and _stochastic(self)):
            return
        n = len(targets)
        if stratify is not None:
            train_test_split(np.arange(n), test_size=self.validation_fraction, stratify=stratify, random_state=0)
        if math.ceil(self.validation_fraction * n) < 2:
            raise ValueError("The validation set is too small. Increase 'validation_fraction' or the size of your "
                             f"dataset (validation_fraction={self.validation_fraction} of {n} rows).")

    def _stratify(self, targets):
        """What scikit-learn stratifies the validation split of ``targets`` on (None: nothing)."""
        return None

    def _check_incremental(self):
        if self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True")

    # ---------------------------------------------------------------- the network
    def _scale(self, n_outputs):
        """``s`` with ``gradient_sklearn = s * gradient_kernels`` (see the module docstring)."""
        return 1.0

    def _loss_scale(self, n_outputs):
        """The factor from the kernels' data loss to the one scikit-learn reports."""
        return self._scale(n_outputs)

    def _start_optimizer(self):
        """A fresh optimizer, as scikit-learn starts one each ``fit`` (and at the first ``partial_fit``):
        its steps exactly (Sutskever's momentum, Adam's epsilon-hat). SGD's learning rate is the
        training state's ``lr_scale``, which scikit-learn's schedules set."""
        training, scale = self.model_.training, self._scale(self.model_.sizes[-1])
        if isinstance(self.solver, Optimizer):  # used as given, on the kernels' own objective
            training.reset(check_optimizer(self.solver, "solver"))
        elif self.solver == "sgd":
            training.reset(SGD(lr=scale, momentum=self.momentum, sutskever=True,
                               nesterov=bool(self.nesterovs_momentum and self.momentum > 0)))
            training.lr_scale = self.learning_rate_init
        else:
            training.reset(Adam(lr=self.learning_rate_init, beta1=self.beta_1, beta2=self.beta_2,
                                eps=self.epsilon / scale, eps_hat=True))

    def _build(self, hidden, X, n_outputs, output, rng):
        """A new network for rows like ``X`` (its dtype) with scikit-learn's initial weights, drawn
        from ``rng`` as it draws them."""
        sizes = [X.shape[1], *hidden, n_outputs]
        self.model_ = MLP(sizes, hidden=_hidden_activation(self.activation), output=output, backend=self.backend,
                          dtype=X.dtype, random_state=0, dropout=self.dropout)
        glorot_uniform(self.model_.kernels.layout, self.model_.params, rng,
                       2.0 if self.activation == "logistic" else 6.0)
        if any(self.model_.dropout):
            self.model_.training.dropout_seed = int(rng.randint(2**63))
        self.n_iter_, self.t_ = 0, 0
        if _stochastic(self):
            self.loss_curve_ = []
            self._no_improvement_count = 0
            self.best_loss_ = None if self.early_stopping else np.inf
            self.validation_scores_ = [] if self.early_stopping else None
            self.best_validation_score_ = -np.inf if self.early_stopping else None
            self._best_params = self.model_.params.copy()
        self._optimizer_started = False

    def _fit(self, X, targets, rng, incremental, sample_weight):
        """Train ``self.model_`` on ``X`` and ``targets`` (class indices, indicator rows or values), rows
        weighted by ``sample_weight`` (checked; None: 1 each), for ``max_iter`` epochs (one with
        ``incremental``) as scikit-learn does: its validation split and shuffling drawn from ``rng``,
        its stopping and learning-rate rules."""
        net = self.model_
        if not _stochastic(self):
            return self._fit_lbfgs(X, targets, sample_weight)
        if not incremental or not self._optimizer_started:
            self._start_optimizer()
            self._optimizer_started = True
        n = X.shape[0]
        validation = None
        if self.early_stopping:
            arrays = (X, targets) if sample_weight is None else (X, targets, sample_weight)
            split = train_test_split(*arrays, random_state=rng, test_size=self.validation_fraction,
                                     stratify=self._stratify(targets))
            X, X_val, targets, y_val = split[:4]
            sample_weight, weight_val = split[4:] if sample_weight is not None else (None, None)
            n = X.shape[0]
            validation = _kernel_rows(X_val, net.dtype), y_val, weight_val
        batch_size = min(200, n) if self.batch_size == "auto" else min(self.batch_size, n)
        if self.batch_size != "auto" and self.batch_size > n:
            warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going to be clipped",
                          UserWarning, stacklevel=3)
        rules = _ScikitLearnRules(self, validation, incremental, n)
        options = FitOptions(epochs=1 if incremental else self.max_iter, batch_size=batch_size,
                             l2=self.alpha / self._scale(net.sizes[-1]), l2_per_row=True,
                             shuffle=bool(self.shuffle), reshuffle=True, train_metrics=False, callbacks=[rules])
        self.n_iter_ = 0
        try:  # X is checked already (validate_data)
            net._train_rows(_kernel_rows(X, net.dtype), targets, options, rng, sample_weight)
        except TrainingDiverged as error:
            rules.diverged(error)
        if not incremental and not rules.converged:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and the "
                          "optimization hasn't converged yet.", ConvergenceWarning, stacklevel=3)
        if self.early_stopping:  # the best weights; trained on in place by a warm start, as scikit-learn's
            net.params[...] = self._best_params
            self._best_params = net.params
        return self

    def _fit_lbfgs(self, X, targets, sample_weight):
        """Train ``self.model_`` as scikit-learn's ``lbfgs`` solver does: SciPy's L-BFGS-B on the
        full-batch objective, the kernels' loss and gradient in scikit-learn's scale (module docstring)."""
        net = self.model_
        params, X = net.params, _kernel_rows(X, net.dtype)
        rows = len(X) if sample_weight is None else float(sample_weight.sum())
        scale, loss_scale = self._scale(net.sizes[-1]), self._loss_scale(net.sizes[-1])
        order = _sklearn_order(net.kernels.layout)
        start = params.copy()
        options = {"maxfun": self.max_fun, "maxiter": self.max_iter, "gtol": self.tol,
                   **({"iprint": 1 if self.verbose else -1} if LBFGS_TAKES_IPRINT else {})}
        with net._full_batch(X, targets, self.alpha / scale, sample_weight) as gradient, \
                blas_threads_for(net.kernels.layout, len(X)):

            def loss_and_gradient(x):
                params[order] = x
                loss, grads = gradient()
                penalty = net.kernels.l2_penalty(params, self.alpha / (scale * rows))  # in ``loss``, as the data's
                return loss_scale * (loss - penalty) + scale * penalty, scale * grads[order]

            result = scipy.optimize.minimize(loss_and_gradient, params[order].astype(np.float64),
                                             method="L-BFGS-B", jac=True, options=options)
        self.n_iter_ = _lbfgs_iterations(result, self.max_iter)
        self.loss_ = float(result.fun)
        params[order] = result.x
        if not np.isfinite(params).all():
            params[...] = start
            raise NonFiniteWeights("Solver produced non-finite parameter weights. The input data may contain large "
                                   "values and need to be preprocessed. (The model keeps the weights it started "
                                   "from.)", None)
        return self

    def _update_no_improvement_count(self, early_stopping):
        if early_stopping:
            score = self.validation_scores_[-1]
            if score < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                self._best_params = self.model_.params.copy()
        else:
            loss = self.loss_curve_[-1]
            if loss > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            self.best_loss_ = min(self.best_loss_, loss)
        return self._no_improvement_count

    def _validate(self, X, y, reset):
        """Checked ``X`` (aligned C-contiguous, or a SciPy sparse matrix) in the model's dtype (on a ``reset``:
        ``dtype``, or ``X``'s where it is float32 or float64 and ``dtype`` is None, else float64, as
        scikit-learn), and ``y``."""
        X, y = validate_data(self, X, y, reset=reset, dtype=(np.float64, np.float32), multi_output=True,
                             order="C", accept_sparse=["csr", "csc"])
        dtype = (self.dtype or X.dtype) if reset else self.model_.dtype
        return (X.astype(dtype, copy=False) if scipy.sparse.issparse(X) else kernel_array(X, dtype)), y

    # ---------------------------------------------------------------- scikit-learn's attributes
    @property
    def coefs_(self):
        """Weight matrices ``(n_in, n_out)`` per layer, copies."""
        check_is_fitted(self, "model_")
        return self.model_.get_weights()[::2]

    @property
    def intercepts_(self):
        """Bias vectors per layer, copies."""
        check_is_fitted(self, "model_")
        return self.model_.get_weights()[1::2]

    @property
    def n_layers_(self):
        check_is_fitted(self, "model_")
        return len(self.model_.sizes)

    @property
    def n_outputs_(self):
        check_is_fitted(self, "model_")
        return self.model_.sizes[-1]

    @property
    def out_activation_(self):
        check_is_fitted(self, "model_")
        return {"sigmoid": "logistic"}.get(self.model_.activations[-1], self.model_.activations[-1])

    def _outputs(self, X):
        check_is_fitted(self, "model_")
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32), order="C",
                          accept_sparse=["csr", "csc"])
        return check_outputs(self._network_outputs(_kernel_rows(X, self.model_.dtype)))

    def _network_outputs(self, X):
        """The network's outputs ``(n, n_out)`` for checked rows ``X``."""
        return forward_chunks(self.model_.kernels, self.model_.params, X)[0]


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multilayer perceptron classifier with scikit-learn's interface (see the module docstring).

    Binary problems get one sigmoid output unit, multi-class problems a softmax
    layer, multi-label indicator targets one sigmoid unit per label; all with
    log-loss. ``backend`` and ``dtype`` choose fastgd's kernels.

    ``class_weight`` is scikit-learn's other classifiers' (its MLP has none): None, ``"balanced"``
    or ``{label: weight}`` (a list of them, one per label, for multi-label targets). It multiplies
    ``sample_weight``; ``"balanced"`` weighs a row of class ``c`` ``n_samples / (n_classes *
    bincount(y)[c])`` over the ``y`` of each ``fit``. ``partial_fit`` takes a dict, not
    ``"balanced"``, whose counts one batch cannot give.
    """

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam", alpha=0.0001,
                 batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5, max_iter=200,
                 shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-8, n_iter_no_change=10, max_fun=15000, class_weight=None, dropout=0.0, backend="auto",
                 dtype=None):
        _keep(self, locals())

    def _check_params(self):
        weights = self.class_weight
        _check(weights is None or weights == "balanced" or isinstance(weights, (dict, list)),
               f"class_weight: expected None, 'balanced', a dict or a list of dicts, got {weights!r}")
        return super()._check_params()

    def _scale(self, n_outputs):
        return float(n_outputs) if self._multilabel else 1.0

    def _prepare(self, X, y, sample_weight, first, incremental, classes=None):
        """``(X, targets, sample_weight)``: checked ``X``, the targets for the network (class indices
        (n,) or an indicator matrix (n, k)) and the rows' weights, ``class_weight`` applied. On a
        ``first`` fit ``classes_`` is set (from ``classes``, the first ``partial_fit``'s, where given),
        once everything is checked; later, ``y``'s labels are checked against it as scikit-learn checks
        them."""
        X, y = self._validate(X, y, first)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        kind = type_of_target(y, input_name="y")
        if kind not in ("binary", "multiclass", "multilabel-indicator"):
            check_classification_targets(y)  # scikit-learn's error for a target that is not classes
            raise ValueError(f"y: {kind} targets are not supported; expected class labels or an indicator matrix")
        multilabel = kind == "multilabel-indicator" if first else self._multilabel
        if not first:
            known = self.classes_
        elif classes is not None and not multilabel:
            known = unique_labels(classes)
        else:  # unique_labels(y) as it would say, without typing y again where its dtype says enough
            known = np.unique(y) if y.dtype.kind in "biuU" and not multilabel else unique_labels(y)
        if not multilabel and (not first or classes is not None):
            labels = unique_labels(y)
            if self.warm_start and set(labels) != set(known):
                raise ValueError("warm_start can only be used where `y` has the same classes as in the previous "
                                 f"call to fit. Previously got {known}, `y` has {labels}")
            if not self.warm_start and len(np.setdiff1d(labels, known, assume_unique=True)):
                raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has {known}. "
                                 f"'y' has {labels}.")
        targets = np.asarray(y, dtype=np.float64) if multilabel else np.searchsorted(known, y)
        sample_weight = _weights(sample_weight, X)
        if self.class_weight is not None:
            _check(not (incremental and self.class_weight == "balanced"),
                   "class_weight: 'balanced' is not supported by partial_fit (one batch cannot give the class "
                   "counts); pass the weights as a dict, e.g. from sklearn.utils.class_weight.compute_class_weight("
                   "'balanced', classes=classes, y=y) over the whole target")
            weights = compute_sample_weight(self.class_weight, y)
            sample_weight = _weights(weights if sample_weight is None else weights * sample_weight, X)
        if not incremental:
            self._check_split(targets, self._stratify(targets, known))
        if first:
            self._multilabel, self.classes_ = multilabel, known
        return X, targets, sample_weight

    def _build_for(self, hidden, X, rng):
        """The network for ``classes_``: one sigmoid unit (binary, or scikit-learn's one class),
        softmax (multi-class) or a sigmoid unit per label (multi-label)."""
        if self._multilabel:
            self._build(hidden, X, len(self.classes_), "sigmoid", rng)
        elif len(self.classes_) <= 2:
            self._build(hidden, X, 1, "sigmoid", rng)
        else:
            self._build(hidden, X, len(self.classes_), "softmax", rng)

    def fit(self, X, y, sample_weight=None):
        """Train from scratch (or, with ``warm_start``, from the last fit) for up to ``max_iter`` epochs;
        ``sample_weight`` (n,) weighs each row's loss, as scikit-learn's."""
        hidden = self._check_params()
        first = not (self.warm_start and hasattr(self, "model_"))
        X, targets, sample_weight = self._prepare(X, y, sample_weight, first, incremental=False)
        rng = check_random_state(self.random_state)
        if first:
            self._build_for(hidden, X, rng)
        return self._fit(X, targets, rng, incremental=False, sample_weight=sample_weight)

    @available_if(_stochastic)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over ``(X, y)``; the first call needs ``classes`` (every label there will be), the
        fourth argument (after ``sample_weight``, as in scikit-learn) or by keyword."""
        self._check_incremental()
        first = not hasattr(self, "model_")
        if first:
            hidden = self._check_params()
            if classes is None:  # given as the third argument, they would be sample_weight, as in scikit-learn
                hint = "" if sample_weight is None else " (the third argument is sample_weight: pass classes=...)"
                raise ValueError("classes must be passed on the first call to partial_fit." + hint)
        elif classes is not None and not np.array_equal(self.classes_, unique_labels(classes)):
            raise ValueError(f"`classes={classes!r}` is not the same as on last call to partial_fit, was: "
                             f"{self.classes_!r}")
        X, targets, sample_weight = self._prepare(X, y, sample_weight, first, incremental=True, classes=classes)
        rng = check_random_state(self.random_state)
        if first:
            self._build_for(hidden, X, rng)
        return self._fit(X, targets, rng, incremental=True, sample_weight=sample_weight)

    def _validation_score(self, X, targets, weights):
        hits = np.all(np.reshape(self._predict_indices(self._network_outputs(X)) == targets, (len(X), -1)), axis=1)
        return float(np.average(hits, weights=weights))

    def _stratify(self, targets, classes=None):
        """Binary targets are stratified on (``classes``: by default ``classes_``)."""
        binary = targets.ndim == 1 and len(self.classes_ if classes is None else classes) <= 2
        return (targets == 1)[:, None] if binary else None

    def _predict_indices(self, outputs):
        if self._multilabel:
            return (outputs > 0.5).astype(int)
        if len(self.classes_) == 1:  # scikit-learn's one class is predicted whatever the output
            return np.zeros(len(outputs), dtype=int)
        if outputs.shape[1] == 1:
            return (outputs[:, 0] > 0.5).astype(int)
        return outputs.argmax(axis=1)

    def predict(self, X):
        """Class labels (n,), or an indicator matrix (n, k) for multi-label targets."""
        indices = self._predict_indices(self._outputs(X))
        return indices if self._multilabel else self.classes_[indices]

    def predict_proba(self, X):
        """Class probabilities (n, n_classes) in the order of ``classes_``."""
        proba = self._outputs(X)
        if proba.shape[1] == 1 and not self._multilabel:
            return np.hstack([1 - proba, proba])
        return proba

    def predict_log_proba(self, X):
        return np.log(self.predict_proba(X))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        tags.input_tags.sparse = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multilayer perceptron regressor with scikit-learn's interface (see the module docstring):
    ``loss="squared_error"``, identity outputs and squared error (halved, as scikit-learn's), or
    ``loss="poisson"``, exp outputs and half the Poisson deviance (targets >= 0)."""

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5,
                 max_iter=200, shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False,
                 momentum=0.9, nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1, beta_1=0.9,
                 beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000, dropout=0.0, backend="auto",
                 dtype=None):
        _keep(self, locals())

    def _check_params(self):
        _check(self.loss in LOSSES, f"loss: expected one of {list(LOSSES)}, got {self.loss!r}")
        return super()._check_params()

    def _scale(self, n_outputs):
        # scikit-learn's Poisson loss is summed over outputs, its squared error halved and summed.
        return float(n_outputs) if self.loss == "poisson" else n_outputs / 2

    def _loss_scale(self, n_outputs):
        return float(n_outputs) if self.loss == "poisson" else 0.5

    def _prepare(self, X, y, first):
        X, y = self._validate(X, y, first)
        y = np.asarray(y, dtype=np.float64)
        if first:
            self._y_1d = y.ndim == 1
        return X, y.reshape(len(y), -1)

    def fit(self, X, y, sample_weight=None):
        """Train from scratch (or, with ``warm_start``, from the last fit) for up to ``max_iter`` epochs;
        ``sample_weight`` (n,) weighs each row's loss, as scikit-learn's."""
        hidden = self._check_params()
        first = not (self.warm_start and hasattr(self, "model_"))
        X, Y = self._prepare(X, y, first)
        sample_weight = _weights(sample_weight, X)
        self._check_split(Y)
        rng = check_random_state(self.random_state)
        if first:
            self._build(hidden, X, Y.shape[1], LOSSES[self.loss], rng)
        return self._fit(X, Y, rng, incremental=False, sample_weight=sample_weight)

    @available_if(_stochastic)
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over ``(X, y)``."""
        self._check_incremental()
        first = not hasattr(self, "model_")
        hidden = self._check_params() if first else None
        X, Y = self._prepare(X, y, first)
        sample_weight = _weights(sample_weight, X)
        rng = check_random_state(self.random_state)
        if first:
            self._build(hidden, X, Y.shape[1], LOSSES[self.loss], rng)
        return self._fit(X, Y, rng, incremental=True, sample_weight=sample_weight)

    def _validation_score(self, X, Y, weights):
        outputs = self._network_outputs(X)
        return float(r2_score(Y, outputs, sample_weight=weights)) if np.isfinite(outputs).all() else np.nan

    def predict(self, X):
        """Predictions (n,) for a 1-D target, (n, k) otherwise."""
        values = self._outputs(X)
        return values[:, 0] if self._y_1d else values

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.input_tags.sparse = True
        return tags



def _kernel_rows(X, dtype):
    """Checked rows ``X`` as the kernels take them: aligned and C-contiguous in ``dtype``, or, from a
    SciPy sparse matrix, sparse rows (:class:`fastgd.kernels.CSR`, not densified)."""
    return CSR(X, dtype) if scipy.sparse.issparse(X) else kernel_array(X, dtype)


def _weights(sample_weight, X):
    """``sample_weight`` checked as scikit-learn's MLP estimators check it (a number weighs every row
    alike), as the float64 array the kernels take (None stays None), once a batch's loss can be divided
    by their total (``check_weight_range``)."""
    if sample_weight is None:
        return None
    n = X.shape[0]
    if isinstance(sample_weight, numbers.Number):
        weights = np.full(n, sample_weight)
    else:
        weights = check_array(sample_weight, accept_sparse=False, ensure_2d=False, dtype=[np.float64, np.float32],
                              order="C", input_name="sample_weight")
        if weights.ndim != 1:
            raise ValueError(f"Sample weights must be 1D array or scalar, got {weights.ndim}D array. Expected "
                             f"either a scalar value or a 1D array of length {n}.")
        if weights.shape != (n,):
            raise ValueError(f"sample_weight.shape == {weights.shape}, expected {(n,)}!")
    if np.all(weights == 0):
        raise ValueError("Sample weights must contain at least one non-zero number.")
    return check_weight_range(kernel_array(weights, np.float64), "sample_weight")


def _lbfgs_iterations(result, max_iter):
    """The iterations SciPy's L-BFGS-B ``result`` took (at most ``max_iter``), warning as scikit-learn
    does when it stopped short of convergence."""
    n_iter = min(result.nit, max_iter)
    if result.status != 0:
        advice = (f"\nIncrease the number of iterations to improve the convergence (max_iter={max_iter})."
                  if n_iter == max_iter else "")
        warnings.warn(f"lbfgs failed to converge after {n_iter} iteration(s) (status={result.status}):\n"
                      f"{result.message}\n{advice}\nYou might also want to scale the data as shown in:\n"
                      "    https://scikit-learn.org/stable/modules/preprocessing.html", ConvergenceWarning, stacklevel=5)
    return n_iter


def _sklearn_order(layout):
    """Indices into ``params`` in scikit-learn's packing of its parameters: every ``W`` (row-major),
    then every ``b``."""
    weights = [np.arange(w, w + n_in * n_out) for n_in, n_out, w in layout[:, [N_IN, N_OUT, W_OFFSET]]]
    biases = [np.arange(b, b + n_out) for n_out, b in layout[:, [N_OUT, B_OFFSET]]]
    return np.concatenate(weights + biases)


class _ScikitLearnRules:
    """scikit-learn's bookkeeping after each epoch (``n_iter_``, ``t_``, ``loss_``, ``loss_curve_``,
    validation scores), its learning-rate rules and its stopping rule, as a callback of
    fastgd's training loop; ``converged`` says whether the stopping rule ended the fit."""

    def __init__(self, estimator, validation, incremental, n):
        self.estimator, self.validation, self.incremental, self.n = estimator, validation, incremental, n
        self.loss_scale = estimator._loss_scale(estimator.model_.sizes[-1])
        self.converged = False

    def on_epoch_end(self, epoch, logs):
        self._record(logs["loss"] * self.loss_scale)
        est, training = self.estimator, self.model.training
        sgd = est.solver == "sgd"
        if sgd and est.learning_rate == "invscaling":
            training.lr_scale = est.learning_rate_init / (est.t_ + 1) ** est.power_t
        if est._no_improvement_count > est.n_iter_no_change:
            if sgd and est.learning_rate == "adaptive" and training.lr_scale > 1e-6:
                training.lr_scale /= 5
                est._no_improvement_count = 0
            else:
                self.converged = True
                self.model.stop_training = True

    def _record(self, loss, score=None):
        """One iteration's numbers, and the no-improvement count, as scikit-learn keeps them
        (``score``: the validation score, when it is not to be measured)."""
        est = self.estimator
        est.n_iter_ += 1
        est.t_ += self.n
        est.loss_ = loss
        est.loss_curve_.append(loss)
        if est.verbose:
            print(f"Iteration {est.n_iter_}, loss = {loss:.8f}")
        if self.validation is not None:
            est.validation_scores_.append(est._validation_score(*self.validation) if score is None else score)
            if est.verbose:
                print(f"Validation score: {est.validation_scores_[-1]:f}")
        est._update_no_improvement_count(self.validation is not None)

    def diverged(self, error):
        """After ``TrainingDiverged``: scikit-learn's ``ValueError``; with early stopping, as scikit-learn
        trains on, NaN for every later iteration (the best weights are then put back)."""
        est = self.estimator
        if self.validation is None:
            raise NonFiniteWeights("Solver produced non-finite parameter weights. The input data may contain large "
                                   f"values and need to be preprocessed. (Iteration {est.n_iter_ + 1} diverged; the "
                                   f"model keeps the weights of iteration {est.n_iter_}.)", error.history) from None
        while est.n_iter_ < (1 if self.incremental else est.max_iter):
            self._record(np.nan, np.nan)
