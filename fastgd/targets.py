"""Targets: labels or values -> the rows ``(n, n_out)`` the kernels train on, and outputs -> predictions.

Whether a model classifies follows from its loss: cross-entropy (softmax
output) and binary cross-entropy (sigmoid output) classify; squared error
regresses, whatever the output activation (a sigmoid output then fits
values in [0, 1]).
"""

from dataclasses import dataclass

import numpy as np

from ._codes import CLASSIFYING_LOSSES
from ._validation import check_targets, kernel_array

LABEL_KINDS = "biufUS"  # class labels are numbers, strings or bytes: data a model file holds without pickle
MAX_LABEL_CHARS = 1024


def typed_labels(classes, name):
    """Class labels as a typed array (numbers, strings or bytes) holding the same values.

    Object labels must all be strings, or all numbers of one type (they become an array of
    that type); anything else raises ``TypeError`` naming ``name``, as do labels longer than
    ``MAX_LABEL_CHARS`` characters (``ValueError``).
    """
    classes = np.asarray(classes)
    if classes.dtype.kind == "O":
        values = [v.item() if isinstance(v, np.generic) else v for v in classes.tolist()]
        typed = np.array(values)
        if typed.dtype.kind not in LABEL_KINDS or [type(v) for v in typed.tolist()] != [type(v) for v in values]:
            kinds = ", ".join(sorted({type(v).__name__ for v in values}))
            raise TypeError(f"{name}: labels must all be strings or all numbers of one type; got {kinds}")
        classes = typed
    if classes.dtype.kind not in LABEL_KINDS:
        raise TypeError(f"{name}: labels must be numbers or strings, got dtype {classes.dtype}")
    width = classes.dtype.itemsize // (4 if classes.dtype.kind == "U" else 1)
    if classes.dtype.kind in "US" and width > MAX_LABEL_CHARS:
        raise ValueError(f"{name}: labels longer than {MAX_LABEL_CHARS} characters are not supported")
    return classes


@dataclass(frozen=True)
class Task:
    """What the outputs of a network mean: ``kind`` is "classes" (softmax, one class per row),
    "binary" (one sigmoid unit, two classes), "labels" (a sigmoid unit per label) or "values"
    (regression); ``n_out`` output units; targets in ``dtype``."""

    kind: str
    n_out: int
    dtype: np.dtype
    nonnegative: bool = False  # values: a Poisson regression's counts or rates

    @classmethod
    def of(cls, loss, output, n_out, dtype):
        if loss not in CLASSIFYING_LOSSES:
            kind = "values"
        elif output == "softmax":
            kind = "classes"
        else:
            kind = "binary" if n_out == 1 else "labels"
        return cls(kind, n_out, np.dtype(dtype), loss == "poisson")

    @property
    def classifies(self) -> bool:
        return self.kind != "values"

    @property
    def n_classes(self) -> int:
        return 2 if self.kind == "binary" else self.n_out

    def encode(self, y, name, n_rows, classes=None):
        """``(Y, classes)``: targets ``y`` as an aligned C-contiguous ``(n_rows, n_out)`` array of the model
        dtype, and the class labels (None for regression; found in ``y`` when ``classes`` is None)."""
        y = check_targets(y, name, n_rows)
        k = self.n_out
        if self.kind == "values":
            if y.dtype.kind not in "biuf":
                raise TypeError(f"{name}: regression targets must be numeric, got dtype {y.dtype}")
            Y = y.reshape(n_rows, -1)
            if Y.shape[1] != k:
                raise ValueError(f"{name}: expected {k} target column(s), one per output unit, got {Y.shape[1]}")
            if self.nonnegative and np.any(Y < 0):
                raise ValueError(f"{name}: Poisson regression needs targets >= 0; got {float(Y.min()):g}")
            return kernel_array(Y, self.dtype), None
        if y.ndim == 2:
            if y.shape[1] == 1 and k > 1:
                raise ValueError(f"{name}: a column of shape {y.shape}; pass class labels as a 1-D array "
                                 f"({name}.ravel()) or one-hot rows of {k} columns (one per output unit)")
            if y.shape[1] != k:
                raise ValueError(f"{name}: one-hot rows must have {k} columns (one per output unit), got {y.shape[1]}")
            if y.dtype.kind not in "biuf" or np.any(y < 0) or np.any(y > 1):
                raise ValueError(f"{name}: one-hot / indicator entries must be numbers in [0, 1]")
            if self.kind == "classes" and not np.allclose(y.sum(axis=1), 1):
                raise ValueError(f"{name}: one-hot (or class-probability) rows must each sum to 1")
            return kernel_array(y, self.dtype), np.arange(self.n_classes)
        if self.kind == "labels":
            raise ValueError(f"{name}: a sigmoid output of {k} units takes an indicator matrix of shape (n, {k})")
        n_classes = self.n_classes
        if classes is None:
            try:
                found = np.unique(y)
            except TypeError as error:
                raise TypeError(f"{name}: labels cannot be sorted ({error})") from None
            typed_labels(found, name)  # labels a model file can hold
            if y.dtype.kind in "iu" and found[0] >= 0 and found[-1] < n_classes:
                classes = np.arange(n_classes, dtype=y.dtype)
            elif len(found) > n_classes:
                softmax = "" if self.kind == "classes" else ", output='softmax'"
                raise ValueError(f"{name}: {len(found)} classes {found[:10].tolist()} but the output layer has {k} "
                                 f"unit(s), for {n_classes} classes: widen it to {len(found)} units "
                                 f"(MLP([..., {len(found)}]{softmax}))")
            elif len(found) < n_classes:
                raise ValueError(f"{name}: {len(found)} distinct labels {found[:10].tolist()} but the output layer "
                                 f"has {k} unit(s) for {n_classes} classes; use labels 0..{n_classes - 1} or "
                                 "one-hot rows")
            else:
                classes = found
        index = np.searchsorted(classes, y)
        known = index < len(classes)
        known[known] = classes[index[known]] == y[known]
        if not known.all():
            raise ValueError(f"{name}: unknown label(s) {np.unique(y[~known])[:10].tolist()}; "
                             f"the model's classes are {classes.tolist()}")
        if self.kind == "binary":
            return index.astype(self.dtype).reshape(-1, 1), classes
        Y = np.zeros((n_rows, k), dtype=self.dtype)
        Y[np.arange(n_rows), index] = 1
        return Y, classes

    def predict(self, outputs, classes):
        """Predictions from network outputs ``(n, n_out)``: class labels ``(n,)``, indicator rows
        ``(n, k)`` (labels), or values ``(n,)`` for one output unit, ``(n, k)`` for more."""
        if self.kind == "values":
            return outputs[:, 0] if self.n_out == 1 else outputs
        if self.kind == "classes":
            return classes[outputs.argmax(axis=1)]
        if self.kind == "binary":
            return classes[(outputs[:, 0] > 0.5).astype(np.intp)]
        return (outputs > 0.5).astype(np.intp)

    def probabilities(self, outputs):
        """Class probabilities ``(n, n_classes)``: a binary sigmoid output gives ``[1 - p, p]``."""
        return np.hstack([1 - outputs, outputs]) if self.kind == "binary" else outputs

    def accuracy(self, outputs, Y):
        """Fraction of rows predicted right (every label right, for "labels"); None for regression."""
        if self.kind == "values":
            return None
        if self.kind == "classes":
            hits = outputs.argmax(axis=1) == Y.argmax(axis=1)
        else:
            hits = np.all((outputs > 0.5) == (Y > 0.5), axis=1)
        return float(hits.mean())
