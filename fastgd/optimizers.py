"""Optimizer specs: immutable hyper-parameters, checked once, and nothing else.

Each spec names its update rule in the table ``fastgd._codes.OPTIMIZERS``,
which says what hyper-parameters the rule reads (by name) and how many state
arrays it keeps; every backend applies the rule inside its kernels, and the
model keeps the state (``MLP.training``). The learning rate of each step
comes from :meth:`Optimizer.learning_rates`: a number, a
:mod:`fastgd.schedules` schedule or any callable ``step -> lr``.

Adding an optimizer: an entry in the table, a spec here, and its update rule
in each backend.
"""

import dataclasses
from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np

from ._codes import OPTIMIZERS
from ._validation import check_bool, check_nonnegative, check_positive, check_real
from .schedules import Constant, Schedule

__all__ = ["Optimizer", "SGD", "Momentum", "Adam", "AdamW", "RMSprop", "Adagrad", "BacktrackingLineSearch"]

LearningRate = float | Schedule | Callable[[int], float]


def _as_schedule(lr, name):
    if isinstance(lr, Schedule) or (callable(lr) and not isinstance(lr, type)):
        return lr
    return Constant(check_positive(lr, name))


def _fraction(value, name):
    """A decay rate in [0, 1)."""
    return check_real(value, name, 0.0, 1.0, high_open=True)


@dataclass(frozen=True)
class Optimizer:
    """Base of the optimizer specs: an immutable value naming its update ``rule`` in the table.

    ``hyper()`` gives the rule's hyper-parameters by name, ``slots`` the names of
    the state arrays it keeps (``n_slots`` their number), ``learning_rates(step, n)`` the rates of
    ``n`` steps. A new spec with other values: ``dataclasses.replace(spec, lr=0.1)``.
    """

    rule: ClassVar[str]
    learning_rate: ClassVar[str] = "lr"  # the field that holds the learning rate or its schedule

    def __post_init__(self):
        schedule = _as_schedule(getattr(self, self.learning_rate), self.learning_rate)
        object.__setattr__(self, "_schedule", schedule)
        if type(schedule) is Constant:  # a plain float, whatever number type it was given as
            self._set(**{self.learning_rate: schedule.lr})

    def _set(self, **values):
        """Store checked (normalised) field values; the spec is frozen afterwards."""
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def hyper(self) -> dict:
        """The rule's hyper-parameters by name, as floats (flags 0 or 1)."""
        return {name: float(getattr(self, name)) for name in OPTIMIZERS[self.rule].hyper}

    @property
    def slots(self) -> tuple[str, ...]:
        """Names of the state arrays shaped like ``params`` the rule keeps, in order (``exp_avg``,
        ``exp_avg_sq`` ... as PyTorch names them)."""
        return OPTIMIZERS[self.rule].slots(self.hyper())

    @property
    def n_slots(self) -> int:
        """Number of state arrays shaped like ``params`` the rule keeps."""
        return len(self.slots)

    def learning_rates(self, step: int, n_steps: int, out: np.ndarray | None = None) -> np.ndarray:
        """Learning rate of each of the ``n_steps`` steps from ``step`` on, float64 (written into ``out``,
        a float64 array of ``n_steps``, when given)."""
        if type(self._schedule) is Constant:  # checked when made
            out = np.empty(n_steps) if out is None else out
            out.fill(self._schedule.lr)
            return out
        steps = np.arange(step, step + n_steps)
        if isinstance(self._schedule, Schedule):
            rates = np.asarray(self._schedule(steps), dtype=np.float64)
        else:
            rates = np.array([self._schedule(int(s)) for s in steps], dtype=np.float64)
        if rates.shape != (n_steps,) or not np.all(np.isfinite(rates)) or np.any(rates < 0):
            raise ValueError(f"{self.learning_rate}: the schedule must give one finite rate >= 0 per step; for "
                             f"steps {step}..{step + n_steps - 1} it gave {rates[:5]!r}...")
        if out is None:
            return rates
        out[...] = rates
        return out

    def get_params(self, deep: bool = True) -> dict:
        """The constructor's arguments, by name (scikit-learn's ``clone`` reads them)."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"


@dataclass(frozen=True, repr=False)
class SGD(Optimizer):
    """Stochastic gradient descent, as ``torch.optim.SGD``::

        g = g + weight_decay * w
        b = g at the first step, else momentum * b + (1 - dampening) * g   (with momentum)
        g = g + momentum * b if nesterov else b                           (with momentum)
        w = w - lr * g

    With ``sutskever=True`` the buffer holds steps instead, as in Sutskever et al. (2013)
    and scikit-learn (the same steps at a constant rate; not when the rate changes)::

        v = momentum * v - lr * g                                         (v = 0 at the start)
        w = w + (momentum * v - lr * g if nesterov else v)
    """

    lr: LearningRate = 0.01
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    sutskever: bool = False
    rule: ClassVar[str] = "sgd"

    def __post_init__(self):
        super().__post_init__()
        self._set(momentum=check_nonnegative(self.momentum, "momentum"),
                  dampening=check_real(self.dampening, "dampening", 0.0, 1.0),
                  weight_decay=check_nonnegative(self.weight_decay, "weight_decay"),
                  nesterov=check_bool(self.nesterov, "nesterov"), sutskever=check_bool(self.sutskever, "sutskever"))
        if self.sutskever and self.dampening != 0:
            raise ValueError(f"sutskever: the step-holding buffer has no dampening (got dampening={self.dampening!r})")
        if self.nesterov and (self.momentum == 0 or self.dampening != 0):
            raise ValueError("nesterov: needs momentum > 0 and dampening = 0 "
                             f"(got momentum={self.momentum!r}, dampening={self.dampening!r})")


@dataclass(frozen=True, repr=False)
class Momentum(Optimizer):
    """Gradient descent with momentum as an exponential moving average.

    Each step::

        v = beta * v + (1 - beta) * g     (v = 0 at the start)
        w = w - lr * v
    """

    lr: LearningRate = 0.01
    beta: float = 0.9
    rule: ClassVar[str] = "momentum"

    def __post_init__(self):
        super().__post_init__()
        self._set(beta=_fraction(self.beta, "beta"))


@dataclass(frozen=True, repr=False)
class Adam(Optimizer):
    """Adam, as ``torch.optim.Adam`` (step ``t`` counts from 1)::

        g = g + weight_decay * w
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g**2
        v_max = max(v_max, v)                                         (amsgrad)
        w = w - lr / (1 - beta1**t) * m / (sqrt(v or v_max) / sqrt(1 - beta2**t) + eps)

    With ``eps_hat=True``, ``eps`` is the paper's epsilon-hat, added before the bias
    correction as Keras and scikit-learn do: ``w = w - lr * sqrt(1 - beta2**t) / (1 -
    beta1**t) * m / (sqrt(v or v_max) + eps)``.
    """

    lr: LearningRate = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    amsgrad: bool = False
    eps_hat: bool = False
    rule: ClassVar[str] = "adam"
    decoupled: ClassVar[bool] = False

    def __post_init__(self):
        super().__post_init__()
        self._set(beta1=_fraction(self.beta1, "beta1"), beta2=_fraction(self.beta2, "beta2"),
                  eps=check_nonnegative(self.eps, "eps"), weight_decay=check_nonnegative(self.weight_decay,
                                                                                        "weight_decay"),
                  amsgrad=check_bool(self.amsgrad, "amsgrad"), eps_hat=check_bool(self.eps_hat, "eps_hat"))


@dataclass(frozen=True, repr=False)
class AdamW(Adam):
    """Adam with decoupled weight decay, as ``torch.optim.AdamW``: ``w = w * (1 - lr *
    weight_decay)`` first, then Adam's step without decay in the gradient."""

    weight_decay: float = 1e-2
    decoupled: ClassVar[bool] = True


@dataclass(frozen=True, repr=False)
class RMSprop(Optimizer):
    """RMSprop, as ``torch.optim.RMSprop``.

    Each step::

        s = alpha * s + (1 - alpha) * g**2
        a = alpha * a + (1 - alpha) * g                                   (centered)
        d = sqrt(s - a**2 if centered else s) + eps
        b = momentum * b + g / d;  w = w - lr * b     (with momentum; else w = w - lr * g / d)
    """

    lr: LearningRate = 1e-2
    alpha: float = 0.99
    eps: float = 1e-8
    momentum: float = 0.0
    centered: bool = False
    rule: ClassVar[str] = "rmsprop"

    def __post_init__(self):
        super().__post_init__()
        self._set(alpha=_fraction(self.alpha, "alpha"), eps=check_nonnegative(self.eps, "eps"),
                  momentum=check_nonnegative(self.momentum, "momentum"),
                  centered=check_bool(self.centered, "centered"))


@dataclass(frozen=True, repr=False)
class Adagrad(Optimizer):
    """Adagrad, as ``torch.optim.Adagrad``: ``s = s + g**2``, ``w = w - lr * g / (sqrt(s) + eps)``."""

    lr: LearningRate = 1e-2
    eps: float = 1e-10
    rule: ClassVar[str] = "adagrad"

    def __post_init__(self):
        super().__post_init__()
        self._set(eps=check_nonnegative(self.eps, "eps"))


@dataclass(frozen=True, repr=False)
class BacktrackingLineSearch(Optimizer):
    """Gradient descent with an Armijo backtracking line search on each batch.

    From ``a = alpha0``, accept ``w - a g`` once ``f(w - a g) <= f(w) - c a ||g||^2``
    (``f``: the batch loss, L2 term included), else ``a = rho * a``; once ``a`` falls
    below ``min_step``, take ``fallback_step``. The accepted steps of a fit are in its
    history (``step_size``: each epoch's mean). ``alpha0`` may be a schedule too.
    """

    alpha0: LearningRate = 1.0
    rho: float = 0.5
    c: float = 1e-4
    min_step: float = 1e-10
    fallback_step: float = 1e-6
    rule: ClassVar[str] = "line_search"
    learning_rate: ClassVar[str] = "alpha0"

    def __post_init__(self):
        super().__post_init__()
        self._set(rho=check_real(self.rho, "rho", 0.0, 1.0, low_open=True, high_open=True),
                  c=check_real(self.c, "c", 0.0, 1.0, low_open=True, high_open=True),
                  min_step=check_positive(self.min_step, "min_step"),
                  fallback_step=check_nonnegative(self.fallback_step, "fallback_step"))


SPECS = {cls.__name__: cls for cls in (SGD, Momentum, Adam, AdamW, RMSprop, Adagrad, BacktrackingLineSearch)}


def check_optimizer(optimizer, name="optimizer") -> Optimizer:
    """``optimizer`` once it is one of fastgd's own specs (a subclass is refused: its update
    rule would have to be compiled into every backend)."""
    if type(optimizer) not in SPECS.values():
        why = (f"; {type(optimizer).__name__} subclasses one, and a new update rule would have to be compiled "
               "into every backend" if isinstance(optimizer, Optimizer) else "")
        raise TypeError(f"{name}: expected a fastgd optimizer ({', '.join(SPECS)}), such as fastgd.SGD(lr=0.01); "
                        f"got {optimizer!r}{why}")
    return optimizer
