"""Saving and loading models: one ``.npz`` of plain arrays and a JSON header, data only.

The header (the ``header`` member, UTF-8 JSON bytes) names the architecture,
dtype, backend, loss, L2, optimizer with its hyper-parameters, learning-rate
scale and step count, the shuffling generator's position, and the shape and
dtype of every other member. Loading reads with ``allow_pickle=False`` and
checks everything against the header and the header against itself before
anything is built; any fault raises :class:`ModelFileError`. This module
reads and writes the parts of a model (:class:`SavedModel`); the network
builds itself from them (``fastgd.load``).
"""

import json
import numbers
import os
import tempfile
import warnings
from dataclasses import dataclass

import numpy as np

from ._codes import ACTIVATIONS, CLASSIFYING_LOSSES, LOSS_OUTPUTS, LOSSES
from ._layout import make_layout, n_params
from .errors import ModelFileError
from .kernels import PREFERENCE
from .kernels.contract import MAX_STEP
from .optimizers import SPECS
from .schedules import Constant, CosineAnnealing, ExponentialDecay, InverseScaling, Schedule, StepDecay
from .training import TrainingState

FORMAT, VERSION = "fastgd.MLP", 1
SCHEDULES = {cls.__name__: cls for cls in (Constant, StepDecay, ExponentialDecay, InverseScaling, CosineAnnealing)}
MAX_HEADER_BYTES = 1 << 20
LABEL_KINDS = "biufU"  # class labels: numbers or strings, never objects


@dataclass
class SavedModel:
    """The parts of a saved model, checked: architecture, weights, training state and class labels."""

    sizes: list
    activations: list
    loss: str
    dtype: str
    backend: str
    params: np.ndarray
    training: TrainingState
    classes: np.ndarray | None


# ---------------------------------------------------------------- saving
def _optimizer_config(training):
    """``{"name", "params", "lr_scale"}`` of the training state's optimizer; a callable learning
    rate becomes its current rate."""
    optimizer = training.optimizer
    params = optimizer.get_params()
    for key, value in params.items():
        if isinstance(value, Schedule):
            params[key] = {"schedule": type(value).__name__, "params": value.get_params()}
        elif callable(value):
            rate = float(optimizer.learning_rates(training.step, 1)[0])
            warnings.warn(f"{key}: a Python callable cannot be saved as data; the file keeps its current rate "
                          f"{rate!r} as a constant (use a fastgd.schedules schedule to save the schedule)",
                          UserWarning, stacklevel=4)
            params[key] = rate
    return {"name": type(optimizer).__name__, "params": params, "lr_scale": training.lr_scale}


def save(path, model) -> None:
    """Write ``model`` (its public parts: ``sizes``, ``activations``, ``loss``, ``dtype``,
    ``backend_``, ``params``, ``training``, ``classes_``) to ``path`` atomically: a temporary
    file in the same folder, then a rename."""
    training = model.training
    arrays = {"params": model.params, "state": training.state}
    _, keys, pos, has_gauss, cached_gaussian = training.rng.get_state(legacy=True)
    arrays["rng_keys"] = keys
    if model.classes_ is not None:
        classes = np.asarray(model.classes_)
        arrays["classes"] = classes if classes.dtype.kind in LABEL_KINDS else classes.astype(str)
    header = {
        "format": FORMAT, "version": VERSION,
        "sizes": model.sizes, "activations": model.activations, "loss": model.loss, "dtype": model.dtype.name,
        "backend": model.backend_, "l2": training.l2, "step": training.step,
        "optimizer": _optimizer_config(training),
        "rng": {"pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "arrays": {name: {"shape": list(a.shape), "dtype": a.dtype.str} for name, a in arrays.items()},
    }
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    path = os.fspath(path)
    fd, temporary = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".fastgd-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            np.savez(file, **arrays)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


# ---------------------------------------------------------------- loading
def _require(condition, reason):
    if not condition:
        raise ModelFileError(reason)


def _is_int(value, minimum=0):
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)


def _read_header(npz):
    _require("header" in npz.files, "no header: not a fastgd model file")
    info = npz.zip.getinfo("header.npy")
    _require(info.file_size <= MAX_HEADER_BYTES, "header: too large")
    raw = npz["header"]
    _require(raw.dtype == np.uint8 and raw.ndim == 1, "header: not a byte string")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFileError(f"header: not JSON ({error})") from None
    _require(isinstance(header, dict) and header.get("format") == FORMAT, "header: not a fastgd model file")
    _require(header.get("version") == VERSION, f"header: unsupported format version {header.get('version')!r} "
                                               f"(this fastgd reads version {VERSION})")
    expected = {"format", "version", "sizes", "activations", "loss", "dtype", "backend", "l2", "step", "optimizer",
                "rng", "arrays"}
    _require(set(header) == expected, f"header: expected the fields {sorted(expected)}, got {sorted(header)}")
    sizes, activations = header["sizes"], header["activations"]
    _require(isinstance(sizes, list) and len(sizes) >= 2 and all(_is_int(s, 1) and s < 2**31 for s in sizes),
             "sizes: expected a list of at least 2 positive integers")
    _require(isinstance(activations, list) and len(activations) == len(sizes) - 1
             and all(isinstance(a, str) and a in ACTIVATIONS for a in activations),
             "activations: expected one known activation name per layer")
    _require(header["loss"] in LOSSES, f"loss: unknown loss {header['loss']!r}")
    _require(activations[-1] in LOSS_OUTPUTS[header["loss"]],
             f"loss: {header['loss']!r} cannot follow a {activations[-1]} output")
    _require(header["dtype"] in ("float32", "float64"), f"dtype: expected float32 or float64, got {header['dtype']!r}")
    _require(header["backend"] in PREFERENCE, f"backend: unknown backend {header['backend']!r}")
    _require(_is_real(header["l2"]) and header["l2"] >= 0, "l2: expected a finite number >= 0")
    _require(_is_int(header["step"]) and header["step"] < MAX_STEP, f"step: expected an integer in [0, {MAX_STEP})")
    rng = header["rng"]
    _require(isinstance(rng, dict) and set(rng) == {"pos", "has_gauss", "cached_gaussian"}
             and _is_int(rng["pos"]) and rng["pos"] <= 624 and rng["has_gauss"] in (0, 1)
             and _is_real(rng["cached_gaussian"]), "rng: not a generator state")
    return header


def _optimizer(config):
    """The optimizer a header's config describes; any fault is a ModelFileError."""
    _require(isinstance(config, dict) and set(config) == {"name", "params", "lr_scale"}
             and config["name"] in SPECS and isinstance(config["params"], dict)
             and _is_real(config["lr_scale"]) and config["lr_scale"] >= 0,
             "optimizer: not a known optimizer's configuration")
    params = dict(config["params"])
    for key, value in params.items():
        if isinstance(value, dict):
            _require(set(value) == {"schedule", "params"} and value["schedule"] in SCHEDULES
                     and isinstance(value["params"], dict), f"optimizer: {key} is not a known schedule")
            try:
                params[key] = SCHEDULES[value["schedule"]](**value["params"])
            except (TypeError, ValueError) as error:
                raise ModelFileError(f"optimizer: bad schedule ({error})") from None
        else:
            _require(value is None or isinstance(value, (bool, int, float)), f"optimizer: {key} is not a number")
    try:
        return SPECS[config["name"]](**params)
    except (TypeError, ValueError) as error:
        raise ModelFileError(f"optimizer: {error}") from None


def _expected_arrays(header, optimizer):
    """``{name: (shape, dtype)}`` of the members the header's model needs."""
    dtype = np.dtype(header["dtype"])
    size = n_params(make_layout(header["sizes"], header["activations"]))
    expected = {"params": ((size,), dtype), "state": ((optimizer.n_slots, size), dtype),
                "rng_keys": ((624,), np.dtype(np.uint32))}
    declared = header["arrays"]
    _require(isinstance(declared, dict) and all(isinstance(d, dict) and set(d) == {"shape", "dtype"}
                                                for d in declared.values()), "arrays: malformed")
    if "classes" in declared:
        spec = declared["classes"]
        n_classes = max(header["sizes"][-1], 2)
        try:
            label_dtype = np.dtype(spec["dtype"])
        except TypeError:
            raise ModelFileError("classes: not a dtype") from None
        _require(label_dtype.kind in LABEL_KINDS and header["loss"] in CLASSIFYING_LOSSES,
                 "classes: labels must be numbers or strings, and only a classifier has them")
        expected["classes"] = ((n_classes,), label_dtype)
    for name, (shape, dtype) in expected.items():
        _require(name in declared and declared[name] == {"shape": list(shape), "dtype": dtype.str},
                 f"{name}: the header declares {declared.get(name)}, the model needs shape {list(shape)} "
                 f"and dtype {dtype.str}")
    _require(set(declared) == set(expected), f"arrays: unexpected members {sorted(set(declared) - set(expected))}")
    return expected


def _read_arrays(npz, expected):
    _require(set(npz.files) == set(expected) | {"header"}, f"members: expected {sorted(expected)} and a header, "
                                                           f"found {sorted(npz.files)}")
    arrays = {}
    for name, (shape, dtype) in expected.items():
        # Never read more than the declared array (plus its .npy header) from a hostile file.
        info = npz.zip.getinfo(f"{name}.npy")
        _require(info.file_size <= int(np.prod(shape)) * dtype.itemsize + 4096, f"{name}: larger than declared")
        array = npz[name]
        _require(array.shape == shape and array.dtype == dtype,
                 f"{name}: the file holds shape {list(array.shape)} dtype {array.dtype.str}, "
                 f"the header declares {list(shape)} {dtype.str}")
        _require(array.dtype.kind != "f" or np.all(np.isfinite(array)), f"{name}: contains NaN or infinity")
        arrays[name] = array
    return arrays


def load(path) -> SavedModel:
    """The checked parts of the model saved at ``path`` (``fastgd.load`` builds the model)."""
    path = os.fspath(path)
    try:
        npz = np.load(path, allow_pickle=False)
        _require(isinstance(npz, np.lib.npyio.NpzFile), "not an .npz archive")
        with npz:
            header = _read_header(npz)
            optimizer = _optimizer(header["optimizer"])
            arrays = _read_arrays(npz, _expected_arrays(header, optimizer))
    except ModelFileError:
        raise
    except Exception as error:  # whatever a damaged archive makes zipfile or NumPy raise
        raise ModelFileError(f"cannot read {path!r}: {type(error).__name__}: {error}") from None
    rng = np.random.RandomState()
    rng.set_state(("MT19937", arrays["rng_keys"], header["rng"]["pos"], header["rng"]["has_gauss"],
                   header["rng"]["cached_gaussian"]))
    training = TrainingState(optimizer, len(arrays["params"]), header["dtype"], rng, state=arrays["state"],
                             step=header["step"], lr_scale=header["optimizer"]["lr_scale"], l2=header["l2"])
    return SavedModel(header["sizes"], header["activations"], header["loss"], header["dtype"], header["backend"],
                      arrays["params"], training, arrays.get("classes"))
