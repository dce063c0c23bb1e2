"""Saving and loading models: one ``.npz`` of plain arrays and a JSON header, data only.

The header (the ``header.npy`` member, UTF-8 JSON bytes) names the architecture,
dtype, backend, loss, L2, optimizer with its hyper-parameters, learning-rate
scale and step count, the shuffling generator's position, and the shape and
dtype of every other member. Loading reads exactly the members it expects, by
name, every one checked against the header before anything is allocated or a
byte is decompressed (so a file can only make the loader allocate the model it
declares, and no more than its own bytes can hold), and checks the header
against itself before anything is built; any fault raises :class:`ModelFileError`. Saving
refuses what loading would refuse, so every file written loads. This module
reads and writes the parts of a model (:class:`SavedModel`); the network
builds itself from them (``fastgd.load``).
"""

import contextlib
import errno
import json
import math
import numbers
import os
import re
import secrets
import stat
import warnings
import zipfile
from dataclasses import dataclass

import numpy as np

from ._codes import ACTIVATIONS, CLASSIFYING_LOSSES, LOSS_OUTPUTS, LOSSES, activation_rule
from ._layout import make_layout, n_params
from .errors import ModelFileError
from .kernels import PREFERENCE
from .kernels.buffers import MAX_STEP
from .optimizers import SPECS
from .schedules import Constant, CosineAnnealing, ExponentialDecay, InverseScaling, Schedule, StepDecay
from .targets import typed_labels
from .training import TrainingState

# Versions 1 (no "object_labels"), 2 (no "l2_per_row"), 3 (no "state_slots") and 4 (no "dropout", "dropout_seed")
# load too.
FORMAT, VERSION = "fastgd.MLP", 5
SCHEDULES = {cls.__name__: cls for cls in (Constant, StepDecay, ExponentialDecay, InverseScaling, CosineAnnealing)}
MAX_HEADER_BYTES = 1 << 20
NPY_HEADER_BYTES = 4096  # room for a member's .npy preamble beyond its data
DEFLATE_RATIO = 1032  # the most deflate expands its input; stored members expand not at all
CHUNK_BYTES = 1 << 24
TEMPORARY = re.compile(r"\.fastgd-(\d+)-[0-9a-f]+\.tmp")


@dataclass
class SavedModel:
    """The parts of a saved model, checked: architecture, weights, training state and class labels."""

    sizes: list
    activations: list
    dropout: list
    loss: str
    dtype: str
    backend: str
    params: np.ndarray
    training: TrainingState
    classes: np.ndarray | None


# ---------------------------------------------------------------- what both sides check
def _not_finite(name, array):
    """Why ``array`` (float) cannot be saved, or None: min and max see NaN and infinity without a
    temporary array as large as it."""
    if array.size and not (np.isfinite(array.min()) and np.isfinite(array.max())):
        return f"{name}: contains NaN or infinity"
    return None


def _unsound(arrays, classes_name):
    """Why ``arrays`` cannot be a model's (weights or state not finite, class labels that are not
    sorted and unique), or None; the labels are called ``classes_name``."""
    problem = _not_finite("params", arrays["params"]) or _not_finite("state", arrays["state"])
    classes = arrays.get("classes")
    if problem or classes is None:
        return problem
    if classes.ndim != 1 or not np.all(classes[1:] > classes[:-1]):
        return f"{classes_name}: labels must be sorted and unique"
    return _not_finite(classes_name, classes) if classes.dtype.kind == "f" else None


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


def _saved_arrays(model):
    """``(arrays, object_labels)``: every member but the header, checked as ``load`` checks them."""
    training = model.training
    arrays = {"params": model.params, "state": training.state, "rng_keys": training.rng.get_state(legacy=True)[1]}
    object_labels = False
    if model.classes_ is not None:
        classes = np.asarray(model.classes_)
        object_labels = classes.dtype.kind == "O"
        arrays["classes"] = typed_labels(classes, "classes_")
    problem = _unsound(arrays, "classes_")
    if problem:
        raise ValueError(f"{problem}; a model file holds finite weights and state, and sorted, unique labels")
    return arrays, object_labels


def _sweep(folder):
    """Remove this user's temporary files in ``folder`` left by saves whose process is gone."""
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            match = TEMPORARY.fullmatch(entry.name)
            if not match or entry.stat(follow_symlinks=False).st_uid != getattr(os, "getuid", int)():
                continue
            try:
                os.kill(int(match[1]), 0)
            except ProcessLookupError:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
            except (OSError, OverflowError):  # alive under another user, or not a process id
                pass


def save(path, model) -> None:
    """Write ``model`` (its public parts: ``sizes``, ``activations``, ``loss``, ``dtype``,
    ``backend_``, ``params``, ``training``, ``classes_``) to ``path`` atomically.

    The file goes to a temporary file beside the target (mode from the umask), then
    replaces it; a symbolic link is followed and its target replaced. Temporary files of
    saves killed before they finished are removed on the next save to the same folder.
    """
    given = os.fspath(path)
    path = os.path.realpath(given)
    if os.path.exists(path) and not stat.S_ISREG(os.stat(path).st_mode):
        error = (IsADirectoryError, errno.EISDIR) if os.path.isdir(path) else (FileExistsError, errno.EEXIST)
        raise error[0](error[1], "cannot save a model over something that is not a regular file", given)
    arrays, object_labels = _saved_arrays(model)
    training = model.training
    _, _, pos, has_gauss, cached_gaussian = training.rng.get_state(legacy=True)
    header = {
        "format": FORMAT, "version": VERSION,
        "sizes": model.sizes, "activations": model.activations, "dropout": model.dropout,
        "dropout_seed": training.dropout_seed, "loss": model.loss, "dtype": model.dtype.name,
        "backend": model.backend_, "l2": training.l2, "l2_per_row": training.l2_per_row, "step": training.step,
        "optimizer": _optimizer_config(training), "state_slots": list(training.optimizer.slots),
        "rng": {"pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "arrays": {name: {"shape": list(a.shape), "dtype": a.dtype.str} for name, a in arrays.items()},
        "object_labels": object_labels,
    }
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    folder = os.path.dirname(path)
    _sweep(folder)
    temporary = os.path.join(folder, f".fastgd-{os.getpid()}-{secrets.token_hex(8)}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
    except OSError as error:
        raise type(error)(error.errno, error.strerror, given) from None
    try:
        with os.fdopen(fd, "wb") as file:
            np.savez(file, **arrays)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        os.unlink(temporary)
        if isinstance(error, OSError) and error.filename == temporary:
            raise type(error)(error.errno, error.strerror, given) from None
        raise


# ---------------------------------------------------------------- loading
def _require(condition, reason):
    if not condition:
        raise ModelFileError(reason)


def _is_activation(spelling):
    try:
        return activation_rule(spelling)[0] in ACTIVATIONS
    except ValueError:
        return False


def _is_int(value, minimum=0):
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)


def _check_members(archive, size):
    """Every member of ``archive`` (a file of ``size`` bytes) named once, stored or deflated, and
    within the file, declaring no more data than its compressed bytes can expand to."""
    names = archive.namelist()
    _require(len(names) == len(set(names)), "members: a name appears twice")
    for info in archive.infolist():
        _require(info.compress_type in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED),
                 f"{info.filename}: unsupported compression")
        _require(info.header_offset + info.compress_size <= size, f"{info.filename}: runs past the end of the file")
        ratio = 1 if info.compress_type == zipfile.ZIP_STORED else DEFLATE_RATIO
        _require(info.file_size <= ratio * info.compress_size + NPY_HEADER_BYTES,
                 f"{info.filename}: declares more data than its compressed bytes can hold")


@contextlib.contextmanager
def _open_member(archive, name, dtype, shape=None, max_items=None):
    """``(member, shape)``: member ``name.npy`` opened past its .npy preamble, which must declare
    ``dtype`` and ``shape`` (or, when ``shape`` is None, one dimension of at most ``max_items``), and
    whose size in the archive must match; nothing beyond the preamble is read."""
    info = archive.getinfo(f"{name}.npy")
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        _require(version in ((1, 0), (2, 0)), f"{name}: unsupported .npy version {version}")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
            np.lib.format.read_array_header_2_0
        found_shape, fortran, found_dtype = read_header(member, max_header_size=NPY_HEADER_BYTES)
        if shape is None:
            _require(len(found_shape) == 1 and found_shape[0] <= max_items, f"{name}: larger than allowed")
            shape = found_shape
        _require(found_shape == tuple(shape) and found_dtype == dtype and not (fortran and len(shape) > 1),
                 f"{name}: the file holds shape {list(found_shape)} dtype {found_dtype.str}, "
                 f"the header declares {list(shape)} {dtype.str}")
        nbytes = math.prod(shape) * dtype.itemsize
        _require(nbytes <= info.file_size <= nbytes + NPY_HEADER_BYTES,
                 f"{name}: the archive's size of it, {info.file_size} bytes, does not fit {nbytes} bytes of data")
        yield member, tuple(shape)


def _read_member(archive, name, dtype, shape=None, max_items=None, out=None):
    """The array in member ``name.npy`` (read into ``out`` if given), checked by :func:`_open_member`
    before anything is allocated or decompressed."""
    with _open_member(archive, name, dtype, shape, max_items) as (member, shape):
        nbytes = math.prod(shape) * dtype.itemsize
        array = np.empty(shape, dtype=dtype) if out is None else out
        view = memoryview(array.reshape(-1).view(np.uint8))
        for start in range(0, nbytes, CHUNK_BYTES):
            chunk = member.read(min(CHUNK_BYTES, nbytes - start))
            _require(len(chunk) == min(CHUNK_BYTES, nbytes - start), f"{name}: truncated")
            view[start : start + len(chunk)] = chunk
        _require(member.read(1) == b"", f"{name}: larger than declared")  # and the checksum is verified
    return array


def _read_header(archive):
    _require("header.npy" in archive.NameToInfo, "no header: not a fastgd model file")
    raw = _read_member(archive, "header", np.dtype(np.uint8), max_items=MAX_HEADER_BYTES)
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFileError(f"header: not JSON ({error})") from None
    _require(isinstance(header, dict) and header.get("format") == FORMAT, "header: not a fastgd model file")
    version = header.get("version")
    _require(_is_int(version) and 1 <= version <= VERSION,
             f"header: unsupported format version {version!r} (this fastgd reads versions 1 to {VERSION})")
    expected = {"format", "version", "sizes", "activations", "loss", "dtype", "backend", "l2", "step", "optimizer",
                "rng", "arrays", *(["object_labels"] if version >= 2 else []),
                *(["l2_per_row"] if version >= 3 else []),
                *(["state_slots"] if version >= 4 else []),
                *(["dropout", "dropout_seed"] if version >= 5 else [])}
    _require(set(header) == expected, f"header: expected the fields {sorted(expected)}, got {sorted(header)}")
    sizes, activations = header["sizes"], header["activations"]
    _require(isinstance(sizes, list) and len(sizes) >= 2 and all(_is_int(s, 1) and s < 2**31 for s in sizes),
             "sizes: expected a list of at least 2 positive integers")
    _require(isinstance(activations, list) and len(activations) == len(sizes) - 1
             and all(_is_activation(a) for a in activations),
             "activations: expected one known activation per layer")
    header.setdefault("dropout", [0.0] * (len(sizes) - 2))
    header.setdefault("dropout_seed", 0)
    _require(isinstance(header["dropout"], list) and len(header["dropout"]) == len(sizes) - 2
             and all(_is_real(p) and 0 <= p < 1 for p in header["dropout"]),
             "dropout: expected one rate in [0, 1) per hidden layer")
    _require(_is_int(header["dropout_seed"]) and header["dropout_seed"] < 2**64,
             "dropout_seed: expected an integer in [0, 2**64)")
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
    for flag in ("object_labels", "l2_per_row"):
        header.setdefault(flag, False)
        _require(isinstance(header[flag], bool), f"{flag}: expected true or false")
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
    slots = header.get("state_slots", list(optimizer.slots))
    _require(slots == list(optimizer.slots), f"state_slots: the optimizer keeps {list(optimizer.slots)}, "
                                             f"the file says {slots!r}")
    expected = {"params": ((size,), dtype), "state": ((optimizer.n_slots, size), dtype),
                "rng_keys": ((624,), np.dtype(np.uint32))}
    declared = header["arrays"]
    _require(isinstance(declared, dict) and all(isinstance(d, dict) and set(d) == {"shape", "dtype"}
                                                for d in declared.values()), "arrays: malformed")
    if "classes" in declared:
        _require(header["loss"] in CLASSIFYING_LOSSES, "classes: only a classifier has class labels")
        try:
            label_dtype = np.dtype(declared["classes"]["dtype"])
            typed_labels(np.empty(0, label_dtype), "classes")
        except (TypeError, ValueError) as error:
            raise ModelFileError(f"classes: not a dtype of labels ({error})") from None
        expected["classes"] = ((max(header["sizes"][-1], 2),), label_dtype)
    for name, (shape, dtype) in expected.items():
        _require(name in declared and declared[name] == {"shape": list(shape), "dtype": dtype.str},
                 f"{name}: the header declares {declared.get(name)}, the model needs shape {list(shape)} "
                 f"and dtype {dtype.str}")
    _require(set(declared) == set(expected), f"arrays: unexpected members {sorted(set(declared) - set(expected))}")
    return expected


def _check_arrays(archive, expected):
    """The archive holds exactly the members ``expected`` names, each's preamble and size as declared."""
    names = archive.namelist()
    wanted = sorted(f"{name}.npy" for name in [*expected, "header"])
    _require(sorted(names) == wanted, f"members: expected exactly {wanted}, found {sorted(names)}")
    for name, (shape, dtype) in expected.items():
        with _open_member(archive, name, dtype, shape):
            pass


def _read_arrays(archive, expected, out):
    """The members ``expected`` names (checked by :func:`_check_arrays`), read into the arrays ``out``
    has for some of them."""
    arrays = {name: _read_member(archive, name, dtype, shape, out=out.get(name))
              for name, (shape, dtype) in expected.items()}
    problem = _unsound(arrays, "classes")
    _require(problem is None, problem)
    return arrays


@contextlib.contextmanager
def _regular_file(path):
    """``path`` opened for reading, if it is a regular file (a folder, FIFO or device is refused, a FIFO
    not waited on)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as error:
        raise ModelFileError(f"cannot read {path!r}: {error.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ModelFileError(f"{path!r} is not a regular file")
    with os.fdopen(fd, "rb") as file:
        yield file


def load(path) -> SavedModel:
    """The checked parts of the model saved at ``path`` (``fastgd.load`` builds the model)."""
    path = os.fspath(path)
    with _regular_file(path) as file:
        try:
            with zipfile.ZipFile(file) as archive:
                _check_members(archive, os.fstat(file.fileno()).st_size)
                header = _read_header(archive)
                optimizer = _optimizer(header["optimizer"])
                expected = _expected_arrays(header, optimizer)
                _check_arrays(archive, expected)  # before the optimizer state the header declares is allocated
                rng = np.random.RandomState(0)  # the model's own generator, set to the saved position below
                training = TrainingState(optimizer, expected["params"][0][0], header["dtype"], rng,
                                         step=header["step"], lr_scale=header["optimizer"]["lr_scale"],
                                         l2=header["l2"], l2_per_row=header["l2_per_row"],
                                         dropout_seed=header["dropout_seed"])
                arrays = _read_arrays(archive, expected, out={"state": training.state})
        except zipfile.BadZipFile as error:
            raise ModelFileError(f"{path!r} is not a fastgd model file ({error})") from None
        except ModelFileError as error:
            raise ModelFileError(f"{path!r}: {error}") from None
        except MemoryError:  # the machine's limit, not the file's fault
            raise
        except Exception as error:  # whatever else a damaged archive makes zipfile or NumPy raise
            raise ModelFileError(f"cannot read {path!r}: {type(error).__name__}: {error}") from None
    rng.set_state(("MT19937", arrays["rng_keys"], header["rng"]["pos"], header["rng"]["has_gauss"],
                   header["rng"]["cached_gaussian"]))
    classes = arrays.get("classes")
    if header["object_labels"] and classes is not None:
        classes = classes.astype(object)
    return SavedModel(header["sizes"], header["activations"], [float(p) for p in header["dropout"]], header["loss"],
                      header["dtype"], header["backend"], arrays["params"], training, classes)
