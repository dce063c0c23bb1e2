"""Backend registry: each backend is one kernel module with the functions of
:class:`~fastgd.kernels.protocol.Backend`; :func:`kernels_for` gives the checked entry into one of them.
"""

import importlib
import importlib.util
import time
import warnings

import numpy as np

from .._codes import LOSSES, OPTIMIZERS
from .._layout import make_layout
from .buffers import CSR, STEP, step_config
from .entry import Kernels
from .protocol import missing

__all__ = ["CSR", "PREFERENCE", "STEP", "Kernels", "backends", "cython_build", "cython_builds", "kernels_for",
           "resolve",
           "resolve_saved", "step_config", "warmup"]

#: Preference order of ``backend="auto"``: compiled ahead of time (no warm-up),
#: then JIT-compiled, then the reference.
PREFERENCE = ("cython", "numba", "numpy")
_MODULES = {"numpy": "._numpy", "numba": "._numba", "cython": "._cython"}
_loaded = {}


# Each build of the Cython extension beyond the baseline, widest first, and the CPU
# features (NumPy's names) it needs.
CYTHON_FEATURES = {"_cython_avx512": ("AVX2", "FMA3", "AVX512F", "AVX512VL", "AVX512BW", "AVX512DQ"),
                   "_cython_avx2": ("AVX2", "FMA3")}


def cython_builds():
    """Module names of the Cython builds present (x86-64: three) whose instructions this
    CPU has, widest first, the baseline last; none are imported."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as cpu
    except ImportError:
        cpu = {}
    runs = [name for name, features in CYTHON_FEATURES.items() if all(cpu.get(f, False) for f in features)]
    return [f".{name}" for name in [*runs, "_cython"] if importlib.util.find_spec(f"{__name__}.{name}") is not None]


def cython_build():
    """Module name of the Cython build for this CPU: the widest it runs."""
    return (cython_builds() or ["._cython"])[0]


def _load(name):
    """The kernel module of backend ``name``, or the reason it cannot be used (a str)."""
    if name not in _loaded:
        module = cython_build() if name == "cython" else _MODULES[name]
        try:
            loaded = importlib.import_module(module, __name__)
        except ImportError as error:
            loaded = f"{type(error).__name__}: {error}"
        else:
            if absent := missing(loaded):
                loaded = f"its module {loaded.__name__} lacks {', '.join(absent)} of the kernel contract"
        _loaded[name] = loaded
    return _loaded[name]


def backends(reasons=False):
    """Names of the backends that can be used here, fastest first.

    With ``reasons=True``, a dict of every backend's name to ``None`` when it
    is available, else the reason it is not.
    """
    status = {name: _load(name) for name in PREFERENCE}
    if reasons:
        return {name: (None if not isinstance(m, str) else m) for name, m in status.items()}
    return [name for name, m in status.items() if not isinstance(m, str)]


def resolve(name):
    """``(name, kernel module)`` for a backend name or ``"auto"`` (the first in ``PREFERENCE``
    that loads; the ones after it are not even imported)."""
    if name == "auto":
        name = next(name for name in PREFERENCE if not isinstance(_load(name), str))
    if not isinstance(name, str) or name not in _MODULES:
        choices = ", ".join(repr(n) for n in ("auto",) + PREFERENCE)
        raise ValueError(f"backend: unknown backend {name!r}; choose one of {choices}")
    module = _load(name)
    if isinstance(module, str):
        raise ValueError(f"backend: {name!r} is not available here ({module}); available: {backends()}")
    return name, module


def kernels_for(backend, layout, dtype) -> Kernels:
    """The checked entry into backend ``backend``'s kernels (a name or ``"auto"``) for ``layout`` and ``dtype``."""
    return Kernels(*resolve(backend), layout, dtype)


def resolve_saved(name):
    """The backend to use for a model saved or pickled with backend ``name``: that one,
    or where it is not available here, the fastest one that is, with a warning."""
    if name not in PREFERENCE or isinstance(_load(name), str):
        fallback = resolve("auto")[0]
        warnings.warn(f"backend: the model was saved with {name!r}, which is not available here; "
                      f"using {fallback!r}", UserWarning, stacklevel=3)
        return fallback
    return name


def warmup(backend: str = "numba", dtypes=("float64", "float32")) -> dict:
    """Call every kernel of ``backend`` for each dtype, with each kind of update (an optimizer's rule,
    plain SGD, a line search), batch (one row, a few rows, many rows; on two threads where the backend
    splits them) and shuffle, so that a JIT-compiled backend compiles (or loads its cache) now what first
    fits of dense rows would. Returns the seconds each dtype took."""
    layout = make_layout([3, 4, 2], ["relu", "softmax"])
    adam = dict(beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=1.0, decoupled=0.0, eps_hat=0.0)
    hyper = {"adam": adam, "sgd": dict.fromkeys(OPTIMIZERS["sgd"].hyper, 0.0),  # plain SGD: a step fused into backward
             "line_search": dict(rho=0.5, c=1e-4, min_step=1e-10, fallback_step=1e-6)}
    configs = {name: step_config("cross_entropy", name, hyper[name]) for name in hyper}
    configs["adam"] = step_config("cross_entropy", "adam", adam, l2=1e-4, clip_value=1.0, clip_norm=1.0)
    seconds = {}
    for dtype in dtypes:
        start = time.perf_counter()
        entry = kernels_for(backend, layout, dtype)
        rng = np.random.RandomState(0)
        params = rng.standard_normal(entry.n_params).astype(dtype)
        grads = np.zeros_like(params)
        X, Y = rng.standard_normal((40, 3)).astype(dtype), np.eye(2, dtype=dtype)[np.arange(40) % 2]
        for name, config in configs.items():
            state = np.zeros((len(OPTIMIZERS[name].slots(hyper[name])), entry.n_params), dtype)
            # one row, below and above the row count where steps turn to BLAS, one batch; each on two threads
            # where the backend splits it
            for rows in (1, 4, 20, 40):
                ws = entry.workspace(rows, rows)
                split = (rows == 40 or (rows == 1 and entry.splits_units)
                         or (rows == 20 and entry.splits_batches and name != "line_search"))
                for threads in (1, 2) if split else (1,):
                    entry.train_epoch(params, grads, state, X, Y, np.arange(40), rows, config,
                                      np.full(-(-40 // rows), 1e-3), 1, ws, rng=rng, threads=threads)
        for rows in (4, 40):
            ws = entry.workspace(rows, rows)
            entry.forward(params, X[:rows], ws)
            entry.data_loss(params, X[:rows], Y[:rows], LOSSES["cross_entropy"], ws)
            entry.backward(params, X[:rows], Y[:rows], configs["adam"], ws, grads)
        state = np.zeros((len(OPTIMIZERS["adam"].slots(adam)), entry.n_params), dtype)
        entry.l2_penalty(params, 1e-4)
        entry.clip(grads, configs["adam"])
        entry.update(params, grads, state, configs["adam"], 1e-3, 1)
        seconds[np.dtype(dtype).name] = time.perf_counter() - start
    return seconds
