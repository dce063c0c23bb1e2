"""The kernel contract: one table of codes that every backend agrees with, and a checked entry that
refuses every argument the kernels could not trust, on every backend, before anything runs."""

import gc
import importlib
import sys
import threading
import time

import numpy as np
import pytest
import scipy.sparse

import fastgd
from conftest import BACKENDS, COMPILED, CYTHON_BUILDS
from fastgd._codes import ACTIVATIONS, BAD_ROW, LOSSES, NOT_FINITE, OK, OPTIMIZERS
from fastgd._layout import make_layout
from fastgd.kernels import CSR, STEP, kernels_for, step_config
from fastgd.kernels.buffers import SYNC_LINE, check_layout, generator_state

# ---------------------------------------------------------------- one table, every backend
TABLES = {"activations": ACTIVATIONS, "losses": LOSSES,
          "optimizers": {name: rule.code for name, rule in OPTIMIZERS.items()},
          "status": {"OK": OK, "NOT_FINITE": NOT_FINITE, "BAD_ROW": BAD_ROW}}


@pytest.mark.parametrize("module", [m for m in ["_numba", *CYTHON_BUILDS]
                                    if m == "_numba" and "numba" in COMPILED or m.startswith("_cython")])
def test_compiled_codes_agree_with_the_tables(module):
    compiled = importlib.import_module(f"fastgd.kernels.{module}")
    assert compiled.CODES == TABLES
    if module == "_numba":
        assert compiled.SYNC_LINE == SYNC_LINE
    if module.startswith("_cython"):
        assert compiled.STEP_FIELDS == STEP.names


@pytest.mark.skipif("numba" not in COMPILED, reason="the numba backend is not expected here")
def test_numba_blocks_are_views_that_stop_at_their_buffer():
    from fastgd.kernels import _numba

    buffer = np.arange(10.0)
    block = _numba._matrix(buffer, 4, 2, 3)
    block[1, 2] = -1.0  # a view, not a copy
    assert block.shape == (2, 3) and buffer[9] == -1.0
    assert np.array_equal(_numba._row(buffer, 1, 3, 2), [7.0, 8.0, -1.0])
    for offset, m, n in [(5, 2, 3), (-1, 1, 2), (0, -1, 2)]:
        with pytest.raises(IndexError, match="past its buffer"):
            _numba._matrix(buffer, offset, m, n)


def test_the_step_record_names_every_hyper_parameter_of_the_table():
    assert STEP.names[:7] == ("loss", "optimizer", "dropout_seed", "l2", "l2_per_row", "clip_value", "clip_norm")
    assert set(STEP.names[7:]) == {name for rule in OPTIMIZERS.values() for name in rule.hyper}
    record = step_config("mse", "adam", fastgd.AdamW(lr=0.1).hyper(), l2=0.5)[0]
    assert (record["loss"], record["optimizer"], record["l2"]) == (LOSSES["mse"], OPTIMIZERS["adam"].code, 0.5)
    assert (record["beta2"], record["weight_decay"], record["decoupled"]) == (0.999, 0.01, 1.0)


def test_every_spec_names_a_rule_of_the_table_and_its_slots():
    for spec in fastgd.optimizers.SPECS.values():
        assert spec.rule in OPTIMIZERS and set(spec().hyper()) == set(OPTIMIZERS[spec.rule].hyper)
    assert [fastgd.SGD().n_slots, fastgd.SGD(momentum=0.9).n_slots, fastgd.Adam().n_slots,
            fastgd.Adam(amsgrad=True).n_slots, fastgd.RMSprop(centered=True).n_slots,
            fastgd.RMSprop(momentum=0.5).n_slots] == [0, 1, 2, 3, 2, 3]
    assert fastgd.Adam(amsgrad=True).slots == ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    assert fastgd.RMSprop(momentum=0.5).slots == ("square_avg", "grad_avg", "momentum_buffer")
    assert fastgd.SGD().slots == () and fastgd.SGD(momentum=0.9).slots == ("momentum_buffer",)
    net = fastgd.MLP([3, 2], random_state=0)
    net.fit(np.eye(3), [0, 1, 0], optimizer=fastgd.Adam(), epochs=1)
    slots = net.training.slots
    assert list(slots) == ["exp_avg", "exp_avg_sq"] and slots["exp_avg_sq"].base is net.training.state
    assert np.array_equal(slots["exp_avg_sq"], net.training.state[1]) and slots["exp_avg_sq"].min() > 0


# ---------------------------------------------------------------- the checked entry
class Call:
    """Good arguments for every kernel of ``backend``'s entry ([3, 4, 2] softmax, 10 rows,
    batches of 4); ``run(name, **changes)`` calls kernel ``name`` with some of them changed."""

    def __init__(self, backend):
        self.net = fastgd.MLP([3, 4, 2], backend=backend, random_state=0)
        self.kernels = self.net.kernels
        P = self.kernels.n_params
        rng = np.random.RandomState(0)
        X = rng.standard_normal((10, 3))
        self.args = dict(params=self.net.params.copy(), grads=np.zeros(P), state=np.zeros((0, P)), X=X,
                         Y=np.eye(2)[rng.randint(0, 2, 10)], order=np.arange(10), batch_size=4,
                         config=step_config("cross_entropy"), lrs=np.full(3, 0.1), step=0,
                         ws=self.kernels.workspace(4, 4), loss=LOSSES["cross_entropy"], l2=0.1, lr=0.1, weights=None,
                         rng=None, threads=1)

    SIGNATURES = {
        "forward": ("params", "X", "ws"), "data_loss": ("params", "X", "Y", "loss", "ws"),
        "l2_penalty": ("params", "l2"), "backward": ("params", "X", "Y", "config", "ws", "grads"),
        "clip": ("grads", "config"), "update": ("params", "grads", "state", "config", "lr", "step"),
        "train_epoch": ("params", "grads", "state", "X", "Y", "order", "batch_size", "config", "lrs", "step", "ws",
                        "weights", "rng", "threads"),
    }

    def run(self, name, **changes):
        args = {**self.args, **changes}
        if name in ("forward", "data_loss", "backward") and "ws" not in changes:
            args["ws"] = self.kernels.workspace(max(1, len(args["X"])) if isinstance(args["X"], np.ndarray) else 1)
        return getattr(self.kernels, name)(*(args[a] for a in self.SIGNATURES[name]))


def misaligned(array):
    raw = np.zeros(array.nbytes + 1, np.uint8)
    view = np.frombuffer(raw.data, dtype=array.dtype, count=array.size, offset=1).reshape(array.shape)
    assert not view.flags.aligned
    return view


def read_only(array):
    array = array.copy()
    array.flags.writeable = False
    return array


def config(**fields):
    record = step_config("cross_entropy")
    for name, value in fields.items():
        record[name] = value
    return record


P = 4 * 3 + 4 + 2 * 4 + 2  # the parameters of [3, 4, 2]
BAD = [  # (kernel, argument changes, error, message)
    ("forward", dict(params=np.zeros(P - 1)), ValueError, r"params: .* of shape \(26,\), got .*\(25,\)"),
    ("forward", dict(params=np.zeros(P, np.float32)), ValueError, "params: .*float64.*got a float32"),
    ("forward", dict(params=np.zeros(2 * P)[::2]), ValueError, "params: .*got a non-contiguous"),
    ("forward", dict(params=misaligned(np.zeros(P))), ValueError, "params: .*got a misaligned"),
    ("forward", dict(params=list(range(P))), TypeError, "params: expected a NumPy array, got list"),
    ("forward", dict(X=np.zeros((10, 4))), ValueError, r"X: .*shape \(10, 3\), got .*\(10, 4\)"),
    ("forward", dict(X=np.zeros((0, 3))), ValueError, r"X: .*shape \(m, 3\), got .*\(0, 3\)"),
    ("forward", dict(X=np.zeros(3)), ValueError, "X: "),
    ("forward", dict(X=np.zeros((10, 3), ">f8")), ValueError, "X: "),
    ("forward", dict(ws=None), TypeError, "ws: expected a workspace made by this object"),
    ("forward", dict(X=np.zeros((5, 3)), ws="small"), TypeError, "ws: "),
    ("data_loss", dict(Y=np.zeros((9, 2))), ValueError, r"Y: .*shape \(10, 2\)"),
    ("data_loss", dict(loss=7), ValueError, "loss: expected a loss code"),
    ("backward", dict(Y=None), TypeError, "Y: expected a NumPy array, got NoneType"),
    ("data_loss", dict(loss=LOSSES["binary_cross_entropy"]), ValueError, "loss: 'binary_cross_entropy' cannot follow"),
    ("l2_penalty", dict(l2=float("nan")), ValueError, "l2: expected a finite number"),
    ("backward", dict(grads=read_only(np.zeros(P))), ValueError, "grads: .*writable.*got a read-only"),
    ("backward", dict(config=np.zeros(1)), TypeError, "config: expected a .1,. array of dtype fastgd.kernels.STEP"),
    ("backward", dict(config=np.zeros(2, STEP)), TypeError, "config: "),
    ("backward", dict(config=config(loss=9)), ValueError, "loss: expected a loss code"),
    ("backward", dict(config=config(loss=LOSSES["mse"])), ValueError, "loss: 'mse' cannot follow"),
    ("clip", dict(config=config(clip_norm=-1.0)), ValueError, "config: clip_norm must be finite and >= 0"),
    ("update", dict(config=config(optimizer=17)), ValueError, "config: unknown optimizer code 17"),
    ("update", dict(config=config(momentum=np.inf)), ValueError, "config: momentum must be finite"),
    ("update", dict(config=config(momentum=0.9)), ValueError, r"state: .*shape \(1, 26\), got .*\(0, 26\)"),
    ("update", dict(config=config(optimizer=OPTIMIZERS["adam"].code)), ValueError, r"state: .*shape \(2, 26\)"),
    ("update", dict(config=config(optimizer=OPTIMIZERS["line_search"].code, rho=0.5, min_step=1e-3)), ValueError,
     "config: a line search steps inside train_epoch"),
    ("update", dict(lr=float("inf")), ValueError, "lr: expected a finite number"),
    ("update", dict(step=-1), ValueError, r"step: expected an integer in \[0, "),
    ("update", dict(step=2**62), ValueError, "step: "),
    ("train_epoch", dict(config=config(optimizer=OPTIMIZERS["line_search"].code, rho=1.0, min_step=1e-3),
                         state=np.zeros((1, P))), ValueError, "config: a line search needs 0 < rho < 1"),
    ("train_epoch", dict(order=np.arange(10, dtype=np.int32)), ValueError, "order: .*int64"),
    ("train_epoch", dict(order=np.arange(9)), ValueError, r"order: .*shape \(10,\)"),
    ("train_epoch", dict(order=read_only(np.arange(10))), ValueError, "order: .*writable"),
    ("train_epoch", dict(rng=np.random.default_rng(0)), TypeError, "rng: expected a numpy.random.RandomState"),
    ("train_epoch", dict(batch_size=0), ValueError, r"batch_size: expected an integer in \[1, "),
    ("train_epoch", dict(batch_size=2.5), ValueError, "batch_size: "),
    ("train_epoch", dict(batch_size=True), ValueError, "batch_size: "),
    ("train_epoch", dict(lrs=np.full(2, 0.1)), ValueError, r"lrs: .*shape \(3,\)"),
    ("train_epoch", dict(lrs=np.full(3, np.inf), state=np.zeros((1, P)), config=config(
        optimizer=OPTIMIZERS["line_search"].code, rho=0.5, min_step=1e-3)), ValueError,
     "lrs: a line search needs finite learning rates"),
    ("train_epoch", dict(lrs=read_only(np.full(3, 0.1))), ValueError, "lrs: .*writable"),
    ("train_epoch", dict(step="0"), ValueError, "step: "),
    ("train_epoch", dict(batch_size=5, lrs=np.full(2, 0.1)), ValueError,
     "ws: made for 4 rows and 4 gathered rows; this call needs 5 and 5"),
    ("train_epoch", dict(batch_size=10, lrs=np.full(1, 0.1)), ValueError, "ws: made for 4 rows .* needs 10 and 0"),
    ("train_epoch", dict(threads=0), ValueError, r"threads: expected an integer in \[1, "),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kernel, changes, error, message", BAD, ids=[f"{k}-{'-'.join(c)}" for k, c, *_ in BAD])
def test_the_entry_refuses_what_the_kernels_cannot_trust(backend, kernel, changes, error, message):
    call = Call(backend)
    params = call.args["params"].copy()
    with pytest.raises(error, match=message):
        call.run(kernel, **changes)
    np.testing.assert_array_equal(call.args["params"], params)  # refused before anything ran


@pytest.mark.parametrize("backend", BACKENDS)
def test_good_arguments_run_every_kernel(backend):
    call = Call(backend)
    assert call.run("forward").shape == (10, 2)
    value, outputs = call.run("data_loss")
    assert np.isfinite(value) and outputs.shape == (10, 2)
    assert call.run("l2_penalty") > 0 and np.isfinite(call.run("backward"))
    call.run("clip")
    call.run("update")
    assert call.run("train_epoch")[1:] == (3, OK)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_run_of_epochs_is_checked_once_and_cannot_be_changed_after(backend):
    call = Call(backend)
    a = call.args
    trained = a["params"].copy()
    want = call.run("train_epoch", params=trained)
    config, params = a["config"].copy(), a["params"].copy()
    run = call.kernels.epoch_runner(params, a["grads"], a["state"], a["X"], a["Y"], a["order"], 4, config, a["ws"])
    config["optimizer"] = 99  # after the checks: an unknown rule, a buffer reshaped in place
    params.shape = (1, len(params))
    assert run(np.full(3, 0.1), 0) == want
    np.testing.assert_array_equal(params.ravel(), trained)  # the same steps as train_epoch's
    for lrs, step, message in [(np.full(2, 0.1), 0, r"lrs: .*shape \(3,\)"), (np.full(3, 0.1), -1, "step: "),
                               (np.full(3, 0.1).astype(np.float32), 0, "lrs: .*float64")]:
        with pytest.raises(ValueError, match=message):
            run(lrs, step)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n", [1, 2, 5, 700, 1500])
@pytest.mark.parametrize("bits", ["mt19937", "pcg64"])
def test_an_epoch_shuffles_its_order_as_randomstate_shuffle_does(backend, n, bits):
    # Several epochs, so that draws cross the end of an MT19937 key (624 words) at different positions.
    kernels = fastgd.MLP([3, 2], backend=backend, random_state=0).kernels
    assert kernels.backend.SHUFFLES == (backend in COMPILED)  # the reference is handed NumPy's own shuffle
    make = {"mt19937": np.random.RandomState, "pcg64": lambda s: np.random.RandomState(np.random.PCG64(s))}[bits]
    rng, expected_rng = make(7), make(7)
    rng.standard_normal(3), expected_rng.standard_normal(3)
    X, Y = np.zeros((n, 3)), np.tile([1.0, 0.0], (n, 1))
    order, expected = np.arange(n), np.arange(n)
    batch_size = min(n, 4)
    run = kernels.epoch_runner(np.zeros(kernels.n_params), np.zeros(kernels.n_params), np.zeros((0, kernels.n_params)),
                            X, Y, order, batch_size, step_config("cross_entropy"),
                            kernels.workspace(batch_size, batch_size), rng=rng)
    for _ in range(3):
        expected_rng.shuffle(expected)
        assert run(np.zeros(-(-n // batch_size)), 0)[2] == OK
        np.testing.assert_array_equal(order, expected)
    assert rng.randint(2**31) == expected_rng.randint(2**31)  # both generators left in the same state


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_epoch_shuffles_with_the_generator_as_it_is_now(backend):
    # Re-seeding a RandomState replaces (and frees) its bit generator; each epoch draws from the current one.
    kernels = fastgd.MLP([3, 2], backend=backend, random_state=0).kernels
    rng, expected_rng = np.random.RandomState(7), np.random.RandomState(7)
    n = 700
    X, Y = np.zeros((n, 3)), np.tile([1.0, 0.0], (n, 1))
    order, expected = np.arange(n), np.arange(n)
    run = kernels.epoch_runner(np.zeros(kernels.n_params), np.zeros(kernels.n_params), np.zeros((0, kernels.n_params)),
                            X, Y, order, 4, step_config("cross_entropy"), kernels.workspace(4, 4), rng=rng)
    for seed in [None, 11, np.random.PCG64(5), 12]:
        if seed is not None:
            for generator in (rng, expected_rng):
                generator.__init__(seed if isinstance(seed, int) else np.random.PCG64(5))
            gc.collect()
            np.empty((1000, 1000)).fill(1.0)  # memory a freed state may be given to
        expected_rng.shuffle(expected)
        assert run(np.zeros(n // 4), 0)[2] == OK
        np.testing.assert_array_equal(order, expected)
    assert rng.randint(2**31) == expected_rng.randint(2**31)


@pytest.mark.parametrize("backend", COMPILED)
def test_an_epoch_holds_the_generator_lock_for_its_shuffle_only(backend):
    # Another thread's draw from the same generator waits for the shuffle, not for the whole epoch.
    kernels = fastgd.MLP([20, 256, 3], backend=backend, random_state=0).kernels
    rng, n = np.random.RandomState(7), 100_000
    X, Y = np.random.RandomState(0).standard_normal((n, 20)), np.tile([1.0, 0.0, 0.0], (n, 1))
    order = np.arange(n)
    run = kernels.epoch_runner(np.zeros(kernels.n_params), np.zeros(kernels.n_params), np.zeros((0, kernels.n_params)),
                            X, Y, order, 1, step_config("cross_entropy"), kernels.workspace(1, 1), rng=rng)
    run(np.zeros(n), 0)  # compiled and warm
    order[:] = np.arange(n)
    times = {}

    def train():
        run(np.full(n, 1e-3), n)
        times["epoch"] = time.perf_counter()

    thread = threading.Thread(target=train)
    thread.start()
    while np.array_equal(order[-100:], np.arange(n - 100, n)) and thread.is_alive():
        time.sleep(0)
    rng.randint(10)  # takes the generator's lock
    times["draw"] = time.perf_counter()
    thread.join()
    assert times["epoch"] - times["draw"] > 0.05, times  # the draw did not wait for the epoch's end


def test_a_generator_state_is_a_live_view_of_an_mt19937():
    rng = np.random.RandomState(3)
    words = generator_state(rng._bit_generator)
    assert words.dtype == np.uint32 and words.shape == (625,) and words[-1] == 624
    rng.randint(10)
    _, key, position, *_ = rng.get_state()
    assert 0 < words[-1] == position < 624 and np.array_equal(words[:-1], key)
    assert generator_state(np.random.PCG64(3)) is None
    assert generator_state(np.random.default_rng(3)) is None


def test_sparse_rows_are_refused_where_their_pointers_or_columns_are_out_of_range():
    for array, position, value in (("indices", 2, 3), ("indices", 1, -1), ("indptr", 1, 4), ("indptr", 1, -1)):
        matrix = scipy.sparse.csr_array((np.ones(3), [0, 1, 2], [0, 1, 3]), shape=(2, 3))
        getattr(matrix, array)[position] = value
        with pytest.raises(ValueError, match="^X: a sparse matrix"):
            CSR(matrix, np.float64)


def test_sparse_rows_are_checked_after_they_are_copied():
    # Another thread writes a column index out of range and back while rows are taken: what a CSR
    # holds is checked as it holds it.
    matrix = scipy.sparse.random_array((3000, 40), density=0.2, format="csr", random_state=0)
    stop, indices = threading.Event(), matrix.indices

    def corrupt():
        while not stop.is_set():
            indices[0] = 10**9
            time.sleep(0)  # lets the other thread run
            indices[0] = 0
            time.sleep(0)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    thread = threading.Thread(target=corrupt)
    thread.start()
    try:
        refused = 0
        for _ in range(400):
            try:
                rows = CSR(matrix, np.float64)
            except ValueError:
                refused += 1
                continue
            assert rows.indices.max() < 40
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)
    assert refused > 0  # the other thread was seen


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_workspace_serves_only_the_entry_that_made_it(backend):
    call = Call(backend)
    # Another network's, even of the same sizes, backend and dtype; another dtype's; another backend's.
    for name in BACKENDS:
        for dtype in ("float64", "float32"):
            ws = fastgd.MLP([3, 4, 2], backend=name, dtype=dtype).kernels.workspace(10)
            with pytest.raises(TypeError, match="ws: expected a workspace made by this object"):
                call.run("forward", ws=ws)
    with pytest.raises(AttributeError, match="read-only"):
        call.kernels.workspace(10).rows = 10**9


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_workspace_for_training_only_serves_no_forward_pass(backend):
    call = Call(backend)
    ws = call.kernels.workspace(10, keep_outputs=False)
    for kernel in ("forward", "data_loss"):
        with pytest.raises(ValueError, match="ws: made with keep_outputs=False, for training only"):
            call.run(kernel, ws=ws)
    assert np.isfinite(call.run("backward", ws=ws))
    with pytest.raises(ValueError, match="keep_outputs: expected True or False, got 0"):
        call.kernels.workspace(10, keep_outputs=0)


def batches_of(call, batch_size):
    """The arguments of ``call``'s train_epoch that change with the batch size."""
    return dict(batch_size=batch_size, lrs=np.full(-(-10 // batch_size), 0.1),
                ws=call.kernels.workspace(batch_size, batch_size))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("row", [10, -1, 2**40])
@pytest.mark.parametrize("batch_size", [4, 1])
def test_a_row_outside_X_stops_the_epoch_in_every_backend(backend, row, batch_size):
    call = Call(backend)
    order = np.arange(10)
    order[6] = row  # in the second batch of 4, the seventh of 1
    loss, steps, status = call.run("train_epoch", order=order, **batches_of(call, batch_size))
    assert (steps, status) == (6 // batch_size, BAD_ROW) and np.isnan(loss)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch_size", [4, 1])
def test_a_non_finite_loss_stops_the_epoch_before_its_update(backend, batch_size):
    call = Call(backend)
    X = call.args["X"].copy()
    X[5] = np.inf  # the second batch of 4, the sixth of 1
    params = call.args["params"]
    loss, steps, status = call.run("train_epoch", X=X, **batches_of(call, batch_size))
    assert steps == 5 // batch_size and status == NOT_FINITE and not np.isfinite(loss) and np.isfinite(params).all()


@pytest.mark.parametrize("change, message", [
    (lambda t: t[1].__setitem__(0, 5), "layout: layer 1 takes 5 inputs but layer 0 gives 4"),
    (lambda t: t[0].__setitem__(3, 1), "layout: layer 0 places W at 1"),
    (lambda t: t[1].__setitem__(4, 99), "layout: layer 1 places W at 16 and b at 99"),
    (lambda t: t[0].__setitem__(2, ACTIVATIONS["softmax"]), "layout: layer 0 has activation code 4"),
    (lambda t: t[0].__setitem__(2, ACTIVATIONS["exp"]), "layout: layer 0 has activation code 5, not a known hidden"),
    (lambda t: t[1].__setitem__(2, 99), "layout: layer 1 has activation code 99"),
    (lambda t: t[1].__setitem__(2, ACTIVATIONS["gelu"]), "layout: layer 1 has activation code 8, not a known output"),
    (lambda t: t[0].__setitem__(5, np.float64(0.5).view(np.int64)),
     "layout: layer 0 has activation parameter 0.5 for a relu activation"),
    (lambda t: t[0].__setitem__(5, np.float64(np.nan).view(np.int64)), "layout: layer 0 has activation parameter nan"),
    (lambda t: t[0].__setitem__(1, 0), "layout: layer 0 has widths 3 x 0"),
    (lambda t: t[0].__setitem__(0, -3), "layout: layer 0 has widths -3 x 4"),
])
def test_a_layout_that_does_not_place_one_buffer_is_refused(change, message):
    table = fastgd.MLP([3, 4, 2]).layout
    change(table)
    with pytest.raises(ValueError, match=message):
        kernels_for("numpy", table, "float64")
    with pytest.raises(ValueError, match="layout: expected shape"):
        check_layout(np.zeros((2, 4), np.int64))
    with pytest.raises(TypeError, match="layout: expected an integer table"):
        check_layout([["a"] * 5])


@pytest.mark.parametrize("backend", BACKENDS)
def test_widths_stay_below_2_31_and_a_layer_may_hold_more_weights(backend):
    n_in, width = 2**16 + 1, 2**15 + 1
    entry = kernels_for(backend, make_layout([n_in, width, 1], ["relu", "identity"]), "float32")
    assert entry.n_params == n_in * width + 2 * width + 1 > 2**31
    with pytest.raises(ValueError, match=r"layout: layer 0 has widths 1 x 2147483648; .*BLAS takes a width as a C int"):
        kernels_for(backend, make_layout([1, 2**31, 1], ["relu", "identity"]), "float32")


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_network_cannot_be_given_inconsistent_buffers(backend):
    net = fastgd.MLP([3, 4, 2], backend=backend, random_state=0)
    X = np.random.RandomState(0).standard_normal((6, 3))
    net.fit(X, [0, 1] * 3, epochs=1)
    before = net.predict_proba(X)
    edited = net.layout  # a copy: editing it changes nothing
    edited[0, 0] = 99
    np.testing.assert_array_equal(net.predict_proba(X), before)
    with pytest.raises(ValueError, match="read-only"):
        net.kernels.layout[0, 0] = 99
    with pytest.raises(ValueError, match="WRITEABLE"):
        net.kernels.layout.flags.writeable = True
    with pytest.raises(AttributeError):
        net.params = np.zeros(5)
    with pytest.raises(AttributeError, match="Kernels is read-only"):
        net.kernels.n_params = 10**6
    with pytest.raises(TypeError, match="training: expected a TrainingState for 26 float64 parameters"):
        net.training = fastgd.TrainingState(fastgd.SGD(), 25, np.float64, np.random.RandomState(0))
    net.params.resize(10, refcheck=False)  # the one way to change the buffer's size in place
    with pytest.raises(ValueError, match=r"params: .*shape \(26,\), got .*\(10,\)"):
        net.predict_proba(X)


def test_an_optimizer_that_is_not_in_the_table_is_refused():
    class SlotlessAdam(fastgd.Adam):
        n_slots = 0

    net = fastgd.MLP([3, 4, 2], random_state=0)
    X, y = np.zeros((4, 3)), [0, 1, 0, 1]
    with pytest.raises(TypeError, match="optimizer: expected a fastgd optimizer .* SlotlessAdam subclasses one"):
        net.fit(X, y, optimizer=SlotlessAdam())
    with pytest.raises(TypeError, match="optimizer: expected a fastgd optimizer"):
        net.fit(X, y, optimizer=object())
    with pytest.raises(TypeError, match="solver: expected a fastgd optimizer"):
        fastgd.MLPClassifier(solver=SlotlessAdam()).fit(X, y)
    with pytest.raises(TypeError, match="optimizer: expected a fastgd optimizer"):
        fastgd.minimize(np.sum, np.ones_like, [1.0], SlotlessAdam())


def test_optimizer_specs_are_immutable_values():
    optimizer = fastgd.Adam(lr=0.01)
    with pytest.raises(AttributeError):
        optimizer.lr = 1.0
    assert optimizer == fastgd.Adam(lr=0.01) and optimizer != fastgd.Adam(lr=0.02)
    assert not hasattr(optimizer, "lr_scale")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_second_fit_at_the_same_time_is_refused(backend):
    net = fastgd.MLP([3, 4, 2], backend=backend, random_state=0)
    X, y = np.random.RandomState(0).standard_normal((20, 3)), np.arange(20) % 2
    inside, release = threading.Event(), threading.Event()

    class Hold:
        def on_epoch_end(self, epoch, logs):
            inside.set()
            release.wait(30)

    first = threading.Thread(target=net.fit, args=(X, y), kwargs=dict(epochs=2, callbacks=[Hold()]))
    first.start()
    try:
        assert inside.wait(30)
        params = net.params.copy()
        with pytest.raises(RuntimeError, match="fit: this model is already being trained"):
            net.fit(X, y, optimizer=fastgd.Adam(), epochs=1)
        with pytest.raises(RuntimeError, match="already being trained"):
            fastgd.lr_find(net, X, y, steps=5)
        np.testing.assert_array_equal(net.params, params)
        assert isinstance(net.optimizer, fastgd.SGD)
    finally:
        release.set()
        first.join()
    net.fit(X, y, optimizer=fastgd.Adam(), epochs=1)  # free again once the first fit is done


def test_a_ctrl_c_that_surfaces_as_a_system_error_is_raised_as_itself():
    def returns_with_an_interrupt_pending(*args):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as interrupt:
            raise SystemError("<built-in function> returned a result with an exception set") from interrupt

    with pytest.raises(KeyboardInterrupt):
        fastgd.kernels.runner._run(returns_with_an_interrupt_pending)
    with pytest.raises(SystemError):
        fastgd.kernels.runner._run(lambda: (_ for _ in ()).throw(SystemError("another fault")))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_workspace_gathers_the_rows_it_was_made_for(backend):
    kernels = fastgd.MLP([3, 4, 2], backend=backend, random_state=0).kernels
    rng = np.random.RandomState(0)
    dense, Y = rng.standard_normal((10, 3)), np.eye(2)[rng.randint(0, 2, 10)]
    sparse = CSR(scipy.sparse.csr_array(np.where(dense > 0, dense, 0)), np.float64)
    params, grads = rng.standard_normal(kernels.n_params), np.zeros(kernels.n_params)
    for X, made_for in ((sparse, "dense"), (dense, "sparse")):
        ws = kernels.workspace(4, 4, sparse=made_for == "sparse")
        with pytest.raises(ValueError, match=f"ws: made for {made_for} rows to gather"):
            kernels.train_epoch(params, grads, np.zeros((0, kernels.n_params)), X, Y, np.arange(10), 4,
                                step_config("cross_entropy"), np.full(3, 0.1), 0, ws)
    assert kernels.workspace(4, 4, sparse=True).x.size == 0  # sparse rows are read where they are


def test_a_backend_that_lacks_a_function_of_the_protocol_is_not_loaded(monkeypatch):
    from fastgd.kernels import _numpy, protocol

    assert protocol.missing(_numpy) == []
    monkeypatch.delattr(_numpy, "batch_step")
    assert protocol.missing(_numpy) == ["batch_step"]
    monkeypatch.setattr(fastgd.kernels, "_loaded", {})
    reason = fastgd.backends(reasons=True)["numpy"]
    assert reason == "its module fastgd.kernels._numpy lacks batch_step of the kernel contract"
    with pytest.raises(ValueError, match="^backend: 'numpy' is not available here \\(its module"):
        fastgd.MLP([2, 2], backend="numpy")
