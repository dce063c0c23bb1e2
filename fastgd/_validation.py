"""Argument checks at the door: each error names the argument and what was wrong."""

import numbers

import numpy as np


def _named(name, error):
    """scikit-learn's message, said once about ``name``: "Input X contains NaN." -> "X: contains NaN."."""
    message = str(error).removeprefix(f"Input {name} ")
    return message if message.startswith(f"{name}:") else f"{name}: {message}"


def check_X(X, dtype, name="X", n_features=None, sparse=False):
    """``X`` as an aligned C-contiguous 2-D array of ``dtype`` with finite values (no copy when it already is);
    with ``sparse``, a SciPy sparse matrix becomes the kernels' sparse rows (``fastgd.kernels.CSR``)."""
    if _ready(X, dtype, n_features):
        return X
    if np.ndim(X) == 1:
        raise ValueError(f"{name}: expected a 2-D array (n_samples, n_features), got a 1-D array of {len(X)} "
                         f"values; use {name}.reshape(-1, 1) for one feature or {name}.reshape(1, -1) for one sample")
    from sklearn.utils import check_array  # here: importing scikit-learn takes a second, not every use needs it

    try:
        X = check_array(X, dtype=dtype, order="C", ensure_all_finite=True, input_name=name,
                        ensure_min_samples=1, ensure_min_features=1, accept_sparse=["csr", "csc"] if sparse else False)
    except TypeError as error:
        raise TypeError(_named(name, error)) from None
    except ValueError as error:
        raise ValueError(_named(name, error)) from None
    if isinstance(X, np.ndarray):
        X = kernel_array(X, dtype)
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"{name}: expected {n_features} features (columns), got {X.shape[1]}")
    if not isinstance(X, np.ndarray):
        from .kernels import CSR

        X = CSR(X, dtype)
    return X


def _ready(X, dtype, n_features):
    """Whether ``X`` is already what :func:`check_X` makes of it: a non-empty aligned C-contiguous 2-D
    NumPy array of ``dtype`` whose sum is finite (so are its values). Anything else takes scikit-learn's
    checks, which also say what is wrong."""
    if not (type(X) is np.ndarray and X.ndim == 2 and X.dtype == dtype and X.flags.c_contiguous and X.flags.aligned
            and X.size > 0 and (n_features is None or X.shape[1] == n_features)):
        return False
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(X.sum()))


def kernel_array(array, dtype):
    """``array`` as the kernels take it: C-contiguous and aligned, of ``dtype`` (a copy only when it is not)."""
    array = np.ascontiguousarray(array, dtype=dtype)
    return array if array.flags.aligned else array.copy()


def check_targets(y, name, n_rows):
    """``y`` as an array with one row per sample; NaN/inf rejected for numeric targets."""
    if hasattr(y, "toarray"):
        raise TypeError(f"{name}: sparse targets are not supported; pass a dense array")
    y = np.asarray(y)
    if y.ndim not in (1, 2) or (y.ndim == 2 and y.shape[1] == 0):
        raise ValueError(f"{name}: expected a 1-D array of labels/values or a 2-D array of rows, got shape {y.shape}")
    if len(y) != n_rows:
        raise ValueError(f"{name}: has {len(y)} rows but X has {n_rows}")
    if y.dtype.kind in "fc" and not np.all(np.isfinite(y)):
        raise ValueError(f"{name}: contains NaN or infinity")
    return y


def check_sample_weight(weights, name, n_rows):
    """Per-row weights as an aligned C-contiguous float64 array of ``n_rows`` finite values >= 0, not all 0, in
    the range :func:`check_weight_range` checks."""
    try:
        weights = kernel_array(weights, np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name}: expected one number per row ({error})") from None
    if weights.shape != (n_rows,):
        raise ValueError(f"{name}: expected shape ({n_rows},), one weight per row, got {weights.shape}")
    if not np.isfinite(weights).all() or (weights < 0).any() or not weights.any():
        raise ValueError(f"{name}: weights must be finite and >= 0, and not all 0")
    return check_weight_range(weights, name)


def check_weight_range(weights, name):
    """Float64 ``weights`` once every batch's total weight is a number to divide by: their total
    magnitude is finite, and none is subnormal (dividing by one overflows)."""
    magnitudes = np.abs(weights)
    with np.errstate(over="ignore"):
        total = magnitudes.sum()
    if not np.isfinite(total):
        raise ValueError(f"{name}: the weights add up to more than a float64 holds (about 1.8e308); scale them "
                         "down")
    tiny = np.finfo(np.float64).tiny
    subnormal = np.flatnonzero((magnitudes < tiny) & (magnitudes > 0))
    if len(subnormal):
        row = subnormal[0]
        raise ValueError(f"{name}: {len(subnormal)} weight(s) below {tiny:.4g}, the smallest normal float64 (the "
                         f"first: {weights[row]:.4g} in row {row}), too small to divide by; use 0 or scale them up")
    return weights


def check_int(value, name, minimum=1):
    if type(value) is int and value >= minimum:  # the common case, without the abstract-class check
        return value
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def check_real(value, name, low=-np.inf, high=np.inf, low_open=False, high_open=False):
    """``value`` as a float, checked to be a finite real number in the interval from ``low`` to
    ``high`` (each end closed unless ``*_open``)."""
    finite = isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)
    if not finite or value < low or value > high or (low_open and value == low) or (high_open and value == high):
        if high == np.inf:
            bounds = f"{'>' if low_open else '>='} {low:g}"
        else:
            bounds = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name}: expected a finite number {bounds}, got {value!r}")
    return float(value)


def check_bool(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


def check_nonnegative(value, name):
    return check_real(value, name, low=0.0)


def check_positive(value, name):
    return check_real(value, name, low=0.0, low_open=True)


def check_dtype(dtype):
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype: not a NumPy dtype: {dtype!r}; choose 'float32' or 'float64'") from None
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype: must be 'float32' or 'float64', got {dtype.name!r}")
    return dtype


def check_outputs(outputs, name="X"):
    """The network's ``outputs`` (n, n_out) once every one is finite; else an error naming ``name``."""
    finite = np.isfinite(outputs)
    if not finite.all():
        rows = np.flatnonzero(~finite.all(axis=1))
        raise ValueError(f"{name}: the network's outputs are not finite for {len(rows)} row(s) (the first: row "
                         f"{rows[0]}); the inputs are too large for its weights, or the weights are not finite")
    return outputs
