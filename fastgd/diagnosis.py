"""Naming the state of training from its learning curves."""

from dataclasses import dataclass

import numpy as np

from ._validation import check_int, check_nonnegative, check_real, check_X
from .callbacks import History

__all__ = ["Diagnosis", "diagnose"]

STATES = ("diverging", "oscillating", "overfitting", "underfitting", "converged", "improving")
SCALER = "sklearn.preprocessing.StandardScaler"


@dataclass
class Diagnosis:
    """``state`` (one of ``STATES``), a ``message`` saying what to do, and ``best_epoch``
    (0-based: lowest validation loss, else lowest training loss)."""

    state: str
    message: str
    best_epoch: int


def input_scale(X) -> float:
    """The largest root mean square of a column of ``X`` (a checked array or the kernels' sparse rows)."""
    if isinstance(X, np.ndarray):
        squares = np.einsum("ij,ij->j", X, X, dtype=np.float64)
    else:
        squares = np.bincount(X.indices, weights=np.square(X.data, dtype=np.float64), minlength=X.shape[1])
    return float(np.sqrt(squares.max() / X.shape[0]))


def scale_advice(X, max_scale: float = 10.0) -> str:
    """What to say of inputs ``X`` whose largest column root mean square is above ``max_scale`` or below
    its inverse (but not 0); "" when they are near unit scale."""
    scale = input_scale(X)
    if 1 / max_scale <= scale <= max_scale or scale == 0:
        return ""
    return f"scale the inputs (e.g. {SCALER}; a column's root mean square is {scale:.3g}, far from 1)"


def diagnose(history, window: int = 5, plateau: float = 1e-3, overfit: float = 0.05, diverge: float = 1.5,
             min_accuracy: float = 0.8, max_loss: float | None = None, *, swing: float = 0.1, X=None,
             max_scale: float = 10.0) -> Diagnosis:
    """The state of training from a :class:`~fastgd.callbacks.History` (or its ``history`` dict), tested in order:

    - **diverging**: a loss is not finite, or the last training loss exceeds
      ``diverge`` times its minimum (or its minimum plus ``diverge - 1`` times a
      thousandth of the first epoch's loss, if more);
    - **oscillating**: over the last ``window`` epochs the training loss rose,
      in all, by more than ``swing`` times its lowest value there (or than
      that thousandth), and by more than it fell overall (the learning rate is
      too large);
    - **overfitting**: the validation loss has risen more than ``overfit``
      (relative) above its minimum, reached ``window`` or more epochs ago,
      while the training loss kept falling;
    - **underfitting**: the training loss has stopped falling (less than
      ``plateau`` relative improvement over the last ``window`` epochs) while
      still high: training accuracy below ``min_accuracy``, or, without
      accuracy, loss above ``max_loss`` (when given);
    - **converged**: stopped falling, not high; or still falling while the
      validation loss has not fallen for ``window`` epochs (more epochs will
      not help);
    - **improving**: still falling; a single epoch counts as improving (the
      message says to train more epochs).

    The training curve is ``train_loss`` when logged, else ``loss``. ``X``: the
    training inputs, when given; if a column's root mean square is above
    ``max_scale`` (or all are below ``1 / max_scale``), the message says to
    scale them.
    """
    logs = history.history if isinstance(history, History) else dict(history)
    window = check_int(window, "window")
    plateau, overfit = check_nonnegative(plateau, "plateau"), check_nonnegative(overfit, "overfit")
    swing = check_nonnegative(swing, "swing")
    diverge = check_real(diverge, "diverge", 1.0, low_open=True)
    max_scale = check_real(max_scale, "max_scale", 1.0, low_open=True)
    unscaled = scale_advice(check_X(X, np.float64, sparse=True), max_scale) if X is not None else ""
    key = "train_loss" if "train_loss" in logs else "loss"
    if key not in logs or len(logs[key]) < 1:
        raise ValueError("history: needs a loss for at least 1 epoch")
    state, message, best = _state(logs, key, getattr(history, "params", {}), window, plateau, overfit, diverge,
                                  min_accuracy, max_loss, swing)
    if unscaled and state == "underfitting":
        message = f"the loss has stopped falling while still high: {unscaled}"
    elif unscaled:
        message = f"{message}; {unscaled}"
    return Diagnosis(state, message, best)


def _state(logs, key, params, window, plateau, overfit, diverge, min_accuracy, max_loss, swing):
    """``(state, message, best_epoch)`` of the curves ``logs`` (``params``: the fit's, when known)."""
    train = np.asarray(logs[key], dtype=np.float64)
    val = np.asarray(logs["val_loss"], dtype=np.float64) if "val_loss" in logs else None
    last = len(train) - 1
    finite = np.isfinite(train)
    floor = 1e-3 * train[0] if finite[0] else 0.0  # changes below a thousandth of the first epoch's loss are noise
    if not finite.all() or (val is not None and not np.isfinite(val).all()) \
            or train[-1] - train.min() > (diverge - 1) * max(train.min(), floor):
        best_train = int(np.argmin(np.where(finite, train, np.inf))) if finite.any() else 0
        return "diverging", ("the loss is growing: lower the learning rate (try fastgd.lr_find) or clip gradients "
                             "(clip_norm)"), best_train
    best = int(np.argmin(val if val is not None else train))
    one_step = params.get("steps") == 1
    if len(train) == 1:
        if one_step:
            return "improving", ("one epoch of one full batch is one gradient step: train more epochs (epochs=...) "
                                 "or pass batch_size=..."), 0
        return "improving", "one epoch is too few to judge: train more epochs (epochs=...)", 0
    span = train[max(0, last - window):]
    steps = np.diff(span)
    rises, lowest = steps[steps > 0].sum(), max(span.min(), floor, np.finfo(float).tiny)
    if rises > swing * lowest and rises > span[0] - span[-1]:
        return "oscillating", (f"the loss swings between epochs (over the last {len(steps)} epochs its rises add up to "
                               f"{rises / lowest:.0%} of its lowest value): lower the learning rate (try "
                               "fastgd.lr_find)"), best
    if val is not None and val[-1] > val[best] * (1 + overfit) and last - best >= window and train[-1] < train[best]:
        return "overfitting", (f"validation loss is lowest after {best + 1} epochs (best_epoch={best}) and rising "
                               f"while training loss falls: stop early (fastgd.EarlyStopping(patience={window})), "
                               "add l2 or data"), best
    start = train[max(0, last - window)]
    if (start - train[-1]) / max(abs(start), np.finfo(float).tiny) >= plateau:
        if val is not None and last - best >= window:
            return "converged", (f"the validation loss is lowest after {best + 1} epochs (best_epoch={best}) and has "
                                 f"not fallen since, while the training loss falls: more epochs will not help; add "
                                 "data or l2 to go lower"), best
        if one_step:
            return "improving", ("the loss is still falling: train longer (more epochs), or pass batch_size=... "
                                 "(each full-batch epoch is one gradient step)"), best
        return "improving", "the loss is still falling: train longer", best
    accuracy = logs.get("train_accuracy")
    high = accuracy[-1] < min_accuracy if accuracy else (max_loss is not None and train[-1] > max_loss)
    if high:
        return "underfitting", ("the loss has stopped falling while still high: a larger network, a larger "
                                "learning rate or less l2"), best
    return "converged", "the loss has reached a plateau", best
