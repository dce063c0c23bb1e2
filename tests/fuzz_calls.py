"""Hostile calls into fastgd's public API and kernel entry points, on one backend.

Run by ``test_fuzz.py`` in a child process (``python fuzz_calls.py BACKEND EXAMPLES``), so that a
crash shows as the child's death by a signal rather than the end of the test run. Each case is
written to stderr before it runs. A call must raise a named error or return results of the
right shape, finite where the public API returns them.
"""

import faulthandler
import gc
import sys
import warnings

import numpy as np
import scipy.sparse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastgd
from fastgd._codes import ACTIVATIONS, LOSSES
from fastgd.kernels import CSR, STEP, kernels_for, step_config

faulthandler.enable()
BACKEND, EXAMPLES = sys.argv[1], int(sys.argv[2])
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))
ERRORS = (TypeError, ValueError, RuntimeError, KeyError, fastgd.TrainingDiverged)
warnings.simplefilter("ignore")  # convergence and float32 advice are beside the point here

# ---------------------------------------------------------------- hostile values
DTYPES = [np.float64, np.float32, np.float16, np.int64, np.int32, np.uint8, np.bool_, np.complex128, ">f8", "<U3",
          object]
JUNK = st.sampled_from([None, "x", 3.5, -1, 2**70, float("nan"), float("inf"), True, [], {}, object(), (1, 2)])


@st.composite
def hostile(draw, good):
    """``good`` (an array) as it is, or changed in dtype, shape, memory layout or values, or replaced."""
    change = draw(st.sampled_from(["none", "dtype", "shape", "strided", "fortran", "misaligned", "read-only",
                                   "values", "list", "junk", "sparse"]))
    a = np.array(good, copy=True)
    if change == "sparse" and a.ndim == 2:  # as SciPy gives it, or as the kernels' sparse rows, any dtype
        matrix = scipy.sparse.csr_array(np.where(a > 0.5, a, 0))
        return draw(st.sampled_from([matrix, CSR(matrix, draw(st.sampled_from([np.float32, np.float64]))),
                                     CSR(matrix[:, :1], np.float64), CSR(matrix[:0], np.float64)]))
    if change == "dtype":
        return a.astype(draw(st.sampled_from(DTYPES)))
    if change == "shape":
        return draw(st.sampled_from([a.ravel(), a[None], a[:0], a[..., :1], np.concatenate([a, a]), a[:1],
                                     np.zeros((2, 7)), np.zeros(())]))
    if change == "strided":
        return np.repeat(a, 2, axis=-1)[..., ::2] if a.ndim else a
    if change == "fortran":
        return np.asfortranarray(a)
    if change == "misaligned":
        raw = np.zeros(a.nbytes + 1, np.uint8)
        return np.frombuffer(raw.data, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
    if change == "read-only":
        a.flags.writeable = False
        return a
    if change == "values" and a.size and a.dtype.kind == "f":
        a.flat[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf, 1e300, 1e-300]))
        return a
    if change == "list":
        return a.tolist()
    if change == "junk":
        return draw(JUNK)
    return a


SCALARS = st.one_of(st.integers(-3, 6), st.floats(allow_nan=True, allow_infinity=True), JUNK)
# Layer widths from 2**31 on: BLAS takes a width as a C int, so every one is refused.
PAST_INT = st.sampled_from([2**31, 2**32 + 1, 2**62, 2**63, 2**64])


OUTCOMES = {"refused": 0, "returned": 0}


def run(description, call, check):
    """Call; a named error is an answer, anything returned must pass ``check``."""
    print(description, file=sys.stderr, flush=True)
    try:
        result = call()
    except ERRORS:
        OUTCOMES["refused"] += 1
        return
    OUTCOMES["returned"] += 1
    check(result)


def finite(values):
    assert np.all(np.isfinite(np.asarray(values, dtype=np.float64))), values
    return values


# ---------------------------------------------------------------- the kernel entry
NET = fastgd.MLP([3, 4, 2], backend=BACKEND, random_state=0)
KERNELS = NET.kernels
P = KERNELS.n_params
RNG = np.random.RandomState(0)
GOOD = dict(params=NET.params, grads=np.zeros(P), state=np.zeros((0, P)), X=RNG.standard_normal((10, 3)),
            Y=np.eye(2)[RNG.randint(0, 2, 10)], order=np.arange(10), batch_size=4, config=step_config("cross_entropy"),
            lrs=np.full(3, 0.1), step=0, loss=LOSSES["cross_entropy"], l2=0.1, lr=0.1, rows=10, batch_rows=4,
            weights=RNG.uniform(0, 2, 10), rng=np.random.RandomState(1), threads=1)
SIGNATURES = {
    "workspace": ("rows", "batch_rows"), "forward": ("params", "X", "ws"),
    "data_loss": ("params", "X", "Y", "loss", "ws", "weights"), "l2_penalty": ("params", "l2"),
    "backward": ("params", "X", "Y", "config", "ws", "grads", "weights"), "clip": ("grads", "config"),
    "update": ("params", "grads", "state", "config", "lr", "step"),
    "train_epoch": ("params", "grads", "state", "X", "Y", "order", "batch_size", "config", "lrs", "step", "ws",
                    "weights", "rng", "threads"),
}
# Generators to shuffle with: MT19937 (shuffled in the kernel), another bit generator, and things that are not one.
GENERATORS = st.sampled_from([None, np.random.RandomState(2), np.random.RandomState(np.random.PCG64(2)),
                              np.random.default_rng(2), 3, "rng"])
WORKSPACES = st.sampled_from(["good", "small", "other", "junk"])


@st.composite
def configs(draw):
    config = step_config("cross_entropy")
    for name in draw(st.lists(st.sampled_from(STEP.names), max_size=4)):
        if STEP[name].kind == "i":  # the loss and optimizer codes
            config[name] = draw(st.one_of(st.integers(-2, 20), st.integers(-2**63, 2**63 - 1)))
        else:
            config[name] = draw(st.one_of(st.integers(-2, 20), st.floats(allow_nan=True, allow_infinity=True)))
    return draw(st.sampled_from([config, config.astype([(n, "f8") for n in STEP.names]), config[:0],
                                 np.concatenate([config, config])])) if draw(st.booleans()) else config


def shapes_of(name, args, result):
    m = len(args["X"])
    if name == "forward":
        assert result.shape == (m, 2), result.shape
    elif name == "data_loss":
        assert isinstance(result[0], float) and result[1].shape == (m, 2)
    elif name == "train_epoch":
        loss, steps, status = result
        assert isinstance(loss, float) and 0 <= steps <= len(args["lrs"]) and status in (0, 1, 2)
    elif name in ("backward", "l2_penalty"):
        assert isinstance(result, float)
    elif name == "workspace":
        assert result.rows == args["rows"]
    else:
        assert result is None


@SETTINGS
@given(data=st.data())
def test_kernel_entry(data):
    name = data.draw(st.sampled_from(sorted(SIGNATURES)))
    args = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in GOOD.items()}
    if name == "train_epoch" and data.draw(st.booleans()):  # one batch, its rows in shares on threads
        args.update(batch_size=10, lrs=np.full(1, 0.1), threads=data.draw(st.integers(2, 11)))
    ws = data.draw(WORKSPACES)
    for key in data.draw(st.lists(st.sampled_from(SIGNATURES[name]), max_size=3, unique=True)):
        if key == "config":
            args[key] = data.draw(configs())
        elif key == "rng":
            args[key] = data.draw(GENERATORS)
        elif isinstance(args.get(key), np.ndarray):
            args[key] = data.draw(hostile(args[key]))
        elif key != "ws":
            args[key] = data.draw(SCALARS)
    rows = len(args["X"]) if isinstance(args["X"], np.ndarray) and args["X"].ndim else 1
    args["ws"] = {"good": lambda: KERNELS.workspace(max(rows, 4), 4), "small": lambda: KERNELS.workspace(1),
                  "other": lambda: fastgd.MLP([3, 4, 2], backend=BACKEND).kernels.workspace(10, 4),
                  "junk": lambda: object()}[ws]()
    run(f"kernels.{name} {ws} {[(k, type(args[k]).__name__) for k in SIGNATURES[name]]}",
        lambda: getattr(KERNELS, name)(*(args[k] for k in SIGNATURES[name])),
        lambda result: shapes_of(name, args, result))


# Layouts with layers of more than 2**31 weights (widths below 2**31: accepted) and widths from
# 2**31 on (refused): an entry is made, nothing allocated for its parameters; and models with a
# width from 2**31 on, refused before anything is allocated.
WIDTHS = st.sampled_from([1, 3, 2**15 + 1, 2**16 + 1, 2**31 - 1, 2**31, 2**32 + 1, 2**62, 2**63])


@st.composite
def large_layouts(draw):
    sizes = draw(st.lists(WIDTHS, min_size=2, max_size=4))
    rows, offset = [], 0
    for l, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        activation = ACTIVATIONS["identity" if l == len(sizes) - 2 else draw(st.sampled_from(["relu", "tanh"]))]
        rows.append([n_in, n_out, activation, offset, offset + n_in * n_out])
        offset += n_in * n_out + n_out
    if draw(st.booleans()):  # one offset moved
        row = draw(st.sampled_from(rows))
        row[draw(st.sampled_from([3, 4]))] += draw(st.sampled_from([-1, 1, 2**31, -(2**32)]))
    return rows


def places_every_weight(entry, rows):
    assert all(row[0] < 2**31 and row[1] < 2**31 for row in rows)
    assert entry.n_params == rows[-1][4] + rows[-1][1] < 2**62
    assert entry.layout.tolist() == rows


def accepted(result):
    raise AssertionError(f"accepted: {result!r}")


@SETTINGS
@given(rows=large_layouts(), dtype=st.sampled_from([np.float32, np.float64]), data=st.data())
def test_layers_past_2_31(rows, dtype, data):
    run(f"kernels_for({rows})", lambda: kernels_for(BACKEND, rows, dtype), lambda entry: places_every_weight(entry, rows))
    sizes = data.draw(st.lists(st.one_of(st.integers(1, 5), WIDTHS), min_size=1, max_size=3))
    sizes.insert(data.draw(st.integers(0, len(sizes))), data.draw(PAST_INT))
    output, loss = data.draw(st.sampled_from(TASKS))
    run(f"MLP({sizes})", lambda: fastgd.MLP(sizes, output=output, loss=loss, backend=BACKEND, dtype=dtype), accepted)


# ---------------------------------------------------------------- the public API
ARCHITECTURES = st.one_of(
    st.lists(st.one_of(st.integers(-1, 5), JUNK, PAST_INT), max_size=4),
    st.lists(st.sampled_from([fastgd.Dense(3, 4), fastgd.Dense(4, 2), fastgd.Dense(2, 2), fastgd.Dense(4, 2**31),
                              fastgd.Dense(2**31, 2), fastgd.ReLU(), fastgd.Softmax(), fastgd.Sigmoid(),
                              fastgd.Identity(), fastgd.Tanh()]), max_size=5),
)
NAMES = st.one_of(st.sampled_from(["relu", "tanh", "sigmoid", "identity", "softmax", "cross_entropy",
                                   "binary_cross_entropy", "mse", "gelu", None]), JUNK)


def optimizers():
    make = st.sampled_from([fastgd.SGD, fastgd.Momentum, fastgd.Adam, fastgd.AdamW, fastgd.RMSprop, fastgd.Adagrad,
                            fastgd.BacktrackingLineSearch])
    return st.one_of(st.none(), JUNK, st.builds(lambda cls, value: _spec(cls, value), make, SCALARS),
                     st.sampled_from([fastgd.SGD(0.1, momentum=0.9), fastgd.Adam(0.01, amsgrad=True),
                                      fastgd.RMSprop(0.01, momentum=0.5, centered=True),
                                      fastgd.BacktrackingLineSearch(alpha0=2.0)]))


def _spec(cls, value):
    """A spec with its first hyper-parameter set to ``value`` (a named error when it is bad)."""
    try:
        return cls(0.05, value) if cls is not fastgd.Adagrad else cls(value)
    except (TypeError, ValueError):
        return None


class Reseed(fastgd.Callback):
    """After each epoch, re-seeds the model's shuffling generator in place, or gives it another bit
    generator: the memory of the state it shuffled with is freed (and reused) mid-fit."""

    def __init__(self, seed):
        self.seed = seed

    def on_epoch_end(self, epoch, logs):
        self.model.training.rng.__init__(np.random.PCG64(self.seed) if self.seed % 2 else self.seed + epoch)
        gc.collect()
        np.full(10**5, 7, np.uint32)


def model(output, loss):
    return fastgd.MLP([3, 4, 2], output=output, loss=loss, backend=BACKEND, random_state=0)


TASKS = [("softmax", "cross_entropy"), ("sigmoid", "binary_cross_entropy"), ("sigmoid", "mse"),
         ("identity", "mse")]


@SETTINGS
@given(data=st.data())
def test_public_api(data):
    target = data.draw(st.sampled_from(["construct", "fit", "predict", "set_weights", "estimator", "tools"]))
    rng = np.random.RandomState(data.draw(st.integers(0, 3)))
    X = rng.standard_normal((12, 3))
    y = rng.randint(0, 2, 12)
    if target == "construct":
        args = dict(sizes=data.draw(ARCHITECTURES), hidden=data.draw(NAMES), output=data.draw(NAMES),
                    loss=data.draw(NAMES), backend=data.draw(st.sampled_from([BACKEND, "auto", "gpu", None])),
                    dtype=data.draw(st.sampled_from(["float32", "float64", "int8", None, "x"])))
        run(f"MLP({args})", lambda: fastgd.MLP(**args), lambda net: finite(net.params))
        return
    output, loss = data.draw(st.sampled_from(TASKS))
    net = model(output, loss)
    y_good = np.eye(2)[y] if loss == "binary_cross_entropy" else (rng.rand(12, 2) if loss == "mse" else y)
    Xh, yh = data.draw(hostile(X)), data.draw(hostile(y_good))
    if target == "fit":
        options = dict(epochs=data.draw(st.one_of(st.integers(-1, 3), JUNK)),
                       batch_size=data.draw(st.one_of(st.none(), st.integers(-1, 14), JUNK)),
                       optimizer=data.draw(optimizers()), l2=data.draw(st.one_of(st.just(0.0), SCALARS)),
                       clip_value=data.draw(st.one_of(st.none(), SCALARS)),
                       clip_norm=data.draw(st.one_of(st.none(), SCALARS)),
                       shuffle=data.draw(st.one_of(st.booleans(), JUNK)),
                       validation_data=data.draw(st.one_of(st.none(), st.just((X, y_good)), st.tuples(
                           hostile(X), hostile(y_good)), JUNK)),
                       callbacks=data.draw(st.one_of(st.just(()), st.just([fastgd.EarlyStopping(patience=1)]),
                                                     st.builds(lambda seed: [Reseed(seed)], st.integers(0, 3)),
                                                     st.just([object()]), JUNK)),
                       verbose=data.draw(st.one_of(st.just(0), st.integers(-1, 3), JUNK)),
                       on_divergence=data.draw(st.sampled_from(["raise", "warn", "ignore", None])),
                       sample_weight=data.draw(st.one_of(st.none(), hostile(rng.uniform(0, 2, 12)))))
        print(f"fit options {options}", file=sys.stderr, flush=True)
        run(f"fit({type(Xh).__name__}, {type(yh).__name__})", lambda: net.fit(Xh, yh, **options),
            lambda history: (finite(history.history["loss"]), finite(net.params)))
    elif target == "predict":
        net.fit(X, y_good, epochs=2)
        rows = Xh.shape[0] if scipy.sparse.issparse(Xh) else None
        for method in ("predict", "predict_proba"):
            run(f"{method}({type(Xh).__name__})", lambda: getattr(net, method)(Xh),
                lambda result: (finite(result) if result.dtype.kind == "f" else None,
                                np.testing.assert_equal(len(result), rows or len(Xh))))
        run(f"evaluate({type(Xh).__name__}, {type(yh).__name__})", lambda: net.evaluate(Xh, yh), finite)
    elif target == "set_weights":
        weights = [data.draw(hostile(w)) for w in net.get_weights()]
        run("set_weights", lambda: net.set_weights(weights), lambda _: finite(net.params))
    elif target == "estimator":
        Estimator = fastgd.MLPRegressor if loss == "mse" else fastgd.MLPClassifier
        params = dict(hidden_layer_sizes=data.draw(st.one_of(st.just((4,)), st.lists(st.integers(-1, 4), max_size=2),
                                                             JUNK)),
                      batch_size=data.draw(st.one_of(st.just("auto"), st.integers(-1, 20), JUNK)),
                      max_iter=data.draw(st.one_of(st.integers(-1, 5), JUNK)), backend=BACKEND,
                      solver=data.draw(st.one_of(st.sampled_from(["sgd", "adam", "lbfgs"]), optimizers())))
        estimator = Estimator(**params)
        run(f"{Estimator.__name__}({params}).fit", lambda: estimator.fit(Xh, yh),
            lambda fitted: finite(fitted.predict(X)) if Estimator is fastgd.MLPRegressor else fitted.predict(X))
    else:
        tool = data.draw(st.sampled_from(["lr_find", "check_gradients", "minimize"]))
        value = data.draw(SCALARS)
        if tool == "lr_find":
            run(f"lr_find(steps={value!r})", lambda: fastgd.lr_find(net, Xh, yh, steps=value, batch_size=4),
                lambda result: finite(result.losses))
        elif tool == "check_gradients":
            run(f"check_gradients(eps={value!r})", lambda: fastgd.check_gradients(net, Xh, yh, eps=value),
                lambda errors: finite(list(errors.values())))
        else:
            run(f"minimize(x0={type(Xh).__name__}, steps={value!r})",
                lambda: fastgd.minimize(lambda x: float(x @ x), lambda x: 2 * x, Xh, data.draw(optimizers()), value),
                lambda trajectory: np.testing.assert_equal(len(trajectory.values), len(trajectory.points)))


if __name__ == "__main__":
    test_kernel_entry()
    test_layers_past_2_31()
    test_public_api()
    print(f"done: {OUTCOMES['refused']} calls refused, {OUTCOMES['returned']} returned", file=sys.stderr)
