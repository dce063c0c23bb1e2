"""Learning-rate schedules: pure functions of the step number (0, 1, 2, ...).

A schedule maps an array of step numbers to their learning rates (float64),
so a fit evaluates one epoch's rates in one call and hands them to the
compiled loop as an array. Steps count optimizer steps (batches), not epochs.
Any Python callable ``step -> lr`` may stand in for a schedule.
"""

import numpy as np

from ._validation import check_int, check_nonnegative, check_positive

__all__ = ["Schedule", "Constant", "StepDecay", "ExponentialDecay", "InverseScaling", "CosineAnnealing"]


class Schedule:
    """Base of the schedules: ``schedule(steps)`` gives the rate of each step."""

    def __call__(self, steps: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def get_params(self, deep: bool = True) -> dict:
        """The constructor's arguments, by name (scikit-learn's ``clone`` reads them)."""
        return dict(vars(self))

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"


class Constant(Schedule):
    """``lr`` at every step."""

    def __init__(self, lr: float):
        self.lr = check_positive(lr, "lr")

    def __call__(self, steps):
        return np.full(np.shape(steps), self.lr)


class StepDecay(Schedule):
    """``lr * gamma ** (step // step_size)``: multiplied by ``gamma`` every ``step_size`` steps."""

    def __init__(self, lr: float, step_size: int, gamma: float = 0.1):
        self.lr = check_positive(lr, "lr")
        self.step_size = check_int(step_size, "step_size")
        self.gamma = check_positive(gamma, "gamma")

    def __call__(self, steps):
        return self.lr * self.gamma ** (np.asarray(steps) // self.step_size)


class ExponentialDecay(Schedule):
    """``lr * gamma ** step``."""

    def __init__(self, lr: float, gamma: float):
        self.lr = check_positive(lr, "lr")
        self.gamma = check_positive(gamma, "gamma")

    def __call__(self, steps):
        return self.lr * self.gamma ** np.asarray(steps, dtype=np.float64)


class InverseScaling(Schedule):
    """``lr / (step + 1) ** power_t``, scikit-learn's ``learning_rate="invscaling"``
    (its ``t`` counts from 1)."""

    def __init__(self, lr: float, power_t: float = 0.5):
        self.lr = check_positive(lr, "lr")
        self.power_t = check_nonnegative(power_t, "power_t")

    def __call__(self, steps):
        return self.lr / (np.asarray(steps, dtype=np.float64) + 1) ** self.power_t


class CosineAnnealing(Schedule):
    """Linear warm-up from ``lr / warmup_steps`` to ``lr`` over ``warmup_steps`` steps, then
    ``min_lr + (lr - min_lr) (1 + cos(pi s / S)) / 2`` over the ``S = total_steps - warmup_steps``
    steps after it, then ``min_lr``."""

    def __init__(self, lr: float, total_steps: int, min_lr: float = 0.0, warmup_steps: int = 0):
        self.lr = check_positive(lr, "lr")
        self.total_steps = check_int(total_steps, "total_steps")
        self.min_lr = check_nonnegative(min_lr, "min_lr")
        self.warmup_steps = check_int(warmup_steps, "warmup_steps", minimum=0)
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr: must not exceed lr ({self.lr!r}), got {min_lr!r}")
        if self.warmup_steps >= self.total_steps:
            raise ValueError(f"warmup_steps: must be less than total_steps ({self.total_steps}), got {warmup_steps!r}")

    def __call__(self, steps):
        steps = np.asarray(steps, dtype=np.float64)
        progress = np.clip((steps - self.warmup_steps) / (self.total_steps - self.warmup_steps), 0.0, 1.0)
        annealed = self.min_lr + (self.lr - self.min_lr) * 0.5 * (1 + np.cos(np.pi * progress))
        if not self.warmup_steps:
            return annealed
        return np.where(steps < self.warmup_steps, self.lr * (steps + 1) / self.warmup_steps, annealed)
