"""Optimizer specs: hyper-parameters, checked once, plus the flat state they need.

An optimizer here holds no arrays of its own: the model allocates its state
(``n_slots`` arrays shaped like ``params``, zeros at the start) and every
backend applies the update rule named by ``code`` inside its kernels, with
``hyper()`` giving the other hyper-parameters in the kernels' order. The
learning rate of each step comes from ``learning_rates``: a number, a
:mod:`fastgd.schedules` schedule or any callable ``step -> lr``.
"""

import inspect
from typing import Callable

import numpy as np

from . import _codes
from ._validation import check_bool, check_nonnegative, check_positive, check_real
from .schedules import Constant, Schedule

LearningRate = float | Schedule | Callable[[int], float]


def _as_schedule(lr, name="lr"):
    if isinstance(lr, Schedule) or (callable(lr) and not isinstance(lr, type)):
        return lr
    return Constant(check_positive(lr, name))


def _fraction(value, name):
    """A decay rate in [0, 1)."""
    return check_real(value, name, 0.0, 1.0, high_open=True)


class Optimizer:
    """Base of the optimizer specs: ``code``, ``n_slots``, ``hyper()`` and ``learning_rates()``."""

    code: int
    n_slots = 0

    def __init__(self, lr: LearningRate, name: str = "lr"):
        setattr(self, name, lr)
        self._schedule = _as_schedule(lr, name)
        self.lr_scale = 1.0  # multiplies every rate; ReduceLROnPlateau lowers it

    def hyper(self) -> np.ndarray:
        """Hyper-parameters other than the learning rate, float64, in the kernels' order."""
        return np.zeros(0)

    def learning_rates(self, step: int, n_steps: int) -> np.ndarray:
        """Learning rate of each of the ``n_steps`` steps from ``step`` on, float64."""
        steps = np.arange(step, step + n_steps)
        if isinstance(self._schedule, Schedule):
            rates = np.asarray(self._schedule(steps), dtype=np.float64)
        else:
            rates = np.array([self._schedule(int(s)) for s in steps], dtype=np.float64)
        rates *= self.lr_scale
        if rates.shape != (n_steps,) or not np.all(np.isfinite(rates)) or np.any(rates < 0):
            raise ValueError(f"lr: the schedule must give one finite rate >= 0 per step; for steps {step}.."
                             f"{step + n_steps - 1} it gave {rates[:5]!r}...")
        return rates

    def get_params(self, deep: bool = True) -> dict:
        """The constructor's arguments, by name (scikit-learn's ``clone`` reads them)."""
        return {name: getattr(self, name) for name in list(inspect.signature(type(self).__init__).parameters)[1:]}

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"


class SGD(Optimizer):
    """Stochastic gradient descent, as ``torch.optim.SGD``::

        g = g + weight_decay * w
        b = g at the first step, else momentum * b + (1 - dampening) * g   (with momentum)
        g = g + momentum * b if nesterov else b                           (with momentum)
        w = w - lr * g
    """

    code = _codes.SGD

    def __init__(self, lr: LearningRate = 0.01, momentum: float = 0.0, dampening: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0):
        super().__init__(lr)
        self.momentum = check_nonnegative(momentum, "momentum")
        self.dampening = check_real(dampening, "dampening", 0.0, 1.0)
        self.weight_decay = check_nonnegative(weight_decay, "weight_decay")
        nesterov = check_bool(nesterov, "nesterov")
        if nesterov and (self.momentum == 0 or self.dampening != 0):
            raise ValueError("nesterov: needs momentum > 0 and dampening = 0 "
                             f"(got momentum={momentum!r}, dampening={dampening!r})")
        self.nesterov = nesterov
        self.n_slots = 1 if self.momentum else 0

    def hyper(self):
        return np.array([self.momentum, self.dampening, self.nesterov, self.weight_decay])


class Momentum(Optimizer):
    """Gradient descent with momentum as an exponential moving average::

        v = beta * v + (1 - beta) * g     (v = 0 at the start)
        w = w - lr * v
    """

    code = _codes.MOMENTUM
    n_slots = 1

    def __init__(self, lr: LearningRate = 0.01, beta: float = 0.9):
        super().__init__(lr)
        self.beta = _fraction(beta, "beta")

    def hyper(self):
        return np.array([self.beta])


class Adam(Optimizer):
    """Adam, as ``torch.optim.Adam`` (step ``t`` counts from 1)::

        g = g + weight_decay * w
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g**2
        v_max = max(v_max, v)                                         (amsgrad)
        w = w - lr / (1 - beta1**t) * m / (sqrt(v or v_max) / sqrt(1 - beta2**t) + eps)
    """

    code = _codes.ADAM
    decoupled = False

    def __init__(self, lr: LearningRate = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False):
        super().__init__(lr)
        self.beta1 = _fraction(beta1, "beta1")
        self.beta2 = _fraction(beta2, "beta2")
        self.eps = check_nonnegative(eps, "eps")
        self.weight_decay = check_nonnegative(weight_decay, "weight_decay")
        self.amsgrad = check_bool(amsgrad, "amsgrad")
        self.n_slots = 3 if self.amsgrad else 2

    def hyper(self):
        return np.array([self.beta1, self.beta2, self.eps, self.weight_decay, self.amsgrad, self.decoupled])


class AdamW(Adam):
    """Adam with decoupled weight decay, as ``torch.optim.AdamW``: ``w = w * (1 - lr *
    weight_decay)`` first, then Adam's step without decay in the gradient."""

    decoupled = True

    def __init__(self, lr: LearningRate = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False):
        super().__init__(lr, beta1, beta2, eps, weight_decay, amsgrad)


class RMSprop(Optimizer):
    """RMSprop, as ``torch.optim.RMSprop``::

        s = alpha * s + (1 - alpha) * g**2
        a = alpha * a + (1 - alpha) * g                                   (centered)
        d = sqrt(s - a**2 if centered else s) + eps
        b = momentum * b + g / d;  w = w - lr * b     (with momentum; else w = w - lr * g / d)
    """

    code = _codes.RMSPROP

    def __init__(self, lr: LearningRate = 1e-2, alpha: float = 0.99, eps: float = 1e-8, momentum: float = 0.0,
                 centered: bool = False):
        super().__init__(lr)
        self.alpha = _fraction(alpha, "alpha")
        self.eps = check_nonnegative(eps, "eps")
        self.momentum = check_nonnegative(momentum, "momentum")
        self.centered = check_bool(centered, "centered")
        # Slots: squares, then gradient average (centered), then momentum buffer.
        self.n_slots = 3 if self.momentum else (2 if self.centered else 1)

    def hyper(self):
        return np.array([self.alpha, self.eps, self.momentum, self.centered])


class Adagrad(Optimizer):
    """Adagrad, as ``torch.optim.Adagrad``: ``s = s + g**2``, ``w = w - lr * g / (sqrt(s) + eps)``."""

    code = _codes.ADAGRAD
    n_slots = 1

    def __init__(self, lr: LearningRate = 1e-2, eps: float = 1e-10):
        super().__init__(lr)
        self.eps = check_nonnegative(eps, "eps")

    def hyper(self):
        return np.array([self.eps])


class BacktrackingLineSearch(Optimizer):
    """Gradient descent with an Armijo backtracking line search on each batch.

    From ``a = alpha0``, accept ``w - a g`` once ``f(w - a g) <= f(w) - c a ||g||^2``
    (``f``: the batch loss, L2 term included), else ``a = rho * a``; once ``a`` falls
    below ``min_step``, take ``fallback_step``. The accepted steps of a fit are in its
    history (``step_size``: each epoch's mean). ``alpha0`` may be a schedule too.
    """

    code = _codes.LINE_SEARCH
    n_slots = 1  # the trial point

    def __init__(self, alpha0: LearningRate = 1.0, rho: float = 0.5, c: float = 1e-4, min_step: float = 1e-10,
                 fallback_step: float = 1e-6):
        super().__init__(alpha0, "alpha0")
        self.rho = check_real(rho, "rho", 0.0, 1.0, low_open=True, high_open=True)
        self.c = check_real(c, "c", 0.0, 1.0, low_open=True, high_open=True)
        self.min_step = check_positive(min_step, "min_step")
        self.fallback_step = check_nonnegative(fallback_step, "fallback_step")

    def hyper(self):
        return np.array([self.rho, self.c, self.min_step, self.fallback_step])
