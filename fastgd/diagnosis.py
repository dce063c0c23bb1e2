"""Naming the state of training from its learning curves."""

from dataclasses import dataclass

import numpy as np

from ._validation import check_int, check_nonnegative, check_real
from .callbacks import History

STATES = ("diverging", "overfitting", "underfitting", "converged", "improving")


@dataclass
class Diagnosis:
    """``state`` (one of ``STATES``), a ``message`` saying what to do, and ``best_epoch``
    (0-based: lowest validation loss, else lowest training loss)."""

    state: str
    message: str
    best_epoch: int


def diagnose(history, window: int = 5, plateau: float = 1e-3, overfit: float = 0.05, diverge: float = 1.5,
             min_accuracy: float = 0.8, max_loss: float | None = None) -> Diagnosis:
    """The state of training from a :class:`History` (or its ``history`` dict), tested in order:

    - **diverging**: a loss is not finite, or the last training loss exceeds
      ``diverge`` times its minimum;
    - **overfitting**: the validation loss has risen more than ``overfit``
      (relative) above its minimum, reached over ``window`` epochs ago, while
      the training loss kept falling;
    - **underfitting**: the training loss has stopped falling (less than
      ``plateau`` relative improvement over the last ``window`` epochs) while
      still high: training accuracy below ``min_accuracy``, or, without
      accuracy, loss above ``max_loss`` (when given);
    - **converged**: stopped falling, not high;
    - **improving**: still falling.

    The training curve is ``train_loss`` when logged, else ``loss``.
    """
    logs = history.history if isinstance(history, History) else dict(history)
    window = check_int(window, "window")
    plateau, overfit = check_nonnegative(plateau, "plateau"), check_nonnegative(overfit, "overfit")
    diverge = check_real(diverge, "diverge", 1.0, low_open=True)
    key = "train_loss" if "train_loss" in logs else "loss"
    if key not in logs or len(logs[key]) < 2:
        raise ValueError("history: needs a loss for at least 2 epochs")
    train = np.asarray(logs[key], dtype=np.float64)
    val = np.asarray(logs["val_loss"], dtype=np.float64) if "val_loss" in logs else None
    last = len(train) - 1
    finite = np.isfinite(train)
    if not finite.all() or (val is not None and not np.isfinite(val).all()) or train[-1] > diverge * train.min():
        best_train = int(np.argmin(np.where(finite, train, np.inf))) if finite.any() else 0
        return Diagnosis("diverging", "the loss is growing: lower the learning rate (try fastgd.lr_find) or "
                                      "clip gradients (clip_norm)", best_train)
    best = int(np.argmin(val if val is not None else train))
    if val is not None and val[-1] > val[best] * (1 + overfit) and last - best > window and train[-1] < train[best]:
        return Diagnosis("overfitting", f"validation loss is lowest after {best + 1} epochs (best_epoch={best}) "
                                        "and rising while training loss falls: stop early "
                                        f"(fastgd.EarlyStopping(patience={window})), add l2 or data", best)
    start = train[max(0, last - window)]
    if (start - train[-1]) / max(abs(start), np.finfo(float).tiny) >= plateau:
        return Diagnosis("improving", "the loss is still falling: train longer", best)
    accuracy = logs.get("train_accuracy")
    high = accuracy[-1] < min_accuracy if accuracy else (max_loss is not None and train[-1] > max_loss)
    if high:
        return Diagnosis("underfitting", "the loss has stopped falling while still high: a larger network, a "
                                         "larger learning rate or less l2", best)
    return Diagnosis("converged", "the loss has reached a plateau", best)
