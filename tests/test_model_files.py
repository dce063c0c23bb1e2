"""Model files and training faults: every file ``save`` writes loads, what loads is exactly what was
checked, the user's process (NumPy's global generator, the folder, the history) is left as it should be."""

import os
import signal
import subprocess
import sys
import threading
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastgd
from archives import header_npy, npy, preamble, read, write, zeros
from conftest import BACKENDS, make_problem
from fastgd import ModelFileError


def fitted(backend="auto", dtype="float64", optimizer=None, y=None):
    X, labels = make_problem("softmax", n=40, seed=3, dtype=dtype)
    net = fastgd.MLP([5, 6, 3], backend=backend, dtype=dtype, random_state=0)
    net.fit(X, labels if y is None else y, epochs=2, batch_size=8, optimizer=optimizer or fastgd.Adam(lr=0.01))
    return net, X


@pytest.fixture
def saved(tmp_path):
    net, X = fitted()
    net.save(tmp_path / "m.npz")
    return tmp_path / "m.npz", net, X


def rewritten(path, edit, compression=zipfile.ZIP_STORED):
    """The saved model at ``path`` with ``edit(header, members)`` applied to its parts."""
    header, members = read(path)
    edit(header, members)
    write(path, [("header.npy", header_npy(header)), *members.items()], compression)
    return path


# ---------------------------------------------------------------- only the checked members load
@pytest.mark.parametrize("alias", ["params", "header", "state"])
def test_a_member_named_without_npy_is_refused_not_read(saved, alias):
    path, net, _ = saved
    other = npy(np.zeros_like(net.params)) if alias != "header" else header_npy({"format": "fastgd.MLP"})
    rewritten(path, lambda h, m: m.update({alias: other}))
    with pytest.raises(ModelFileError, match="members: expected exactly"):
        fastgd.load(path)


def test_a_member_named_twice_is_refused(saved):
    path, net, _ = saved
    header, members = read(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile's own "Duplicate name" warning
        write(path, [("header.npy", header_npy(header)), *members.items(),
                     ("params.npy", npy(np.zeros_like(net.params)))])
    with pytest.raises(ModelFileError, match="appears twice"):
        fastgd.load(path)


@pytest.mark.parametrize("edit, reason", [
    (lambda h, m: h["arrays"].update(classes={"shape": [3], "dtype": "<U100000000"}), "longer than 1024"),
    (lambda h, m: m.update({"classes.npy": npy(np.array([2, 0, 1]))}), "sorted and unique"),
    (lambda h, m: m.update({"classes.npy": npy(np.array([0, 0, 1]))}), "sorted and unique"),
    (lambda h, m: h.update(step=2**70), "step: expected an integer"),
    (lambda h, m: h.update(object_labels="yes"), "object_labels"),
    (lambda h, m: m.update({"params.npy": zeros((10**6,), "<f8")}), "params: the file holds shape"),
    (lambda h, m: m.update({"state.npy": npy(np.asfortranarray(np.zeros((2, 2))))}), "state: the file holds"),
])
def test_a_lying_or_unsound_file_is_refused_with_its_reason(saved, edit, reason):
    path, _, _ = saved
    rewritten(path, edit)
    with pytest.raises(ModelFileError, match=reason):
        fastgd.load(path)


def test_a_member_declaring_more_than_its_bytes_can_hold_is_refused_unread(saved):
    path, net, _ = saved
    header, members = read(path)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("header.npy", header_npy(header))
        for name, data in members.items():
            archive.writestr(name, data)
        # A central directory that claims a huge uncompressed size for a tiny stored member.
        for info in archive.filelist:
            if info.filename == "params.npy":
                info.file_size = 10**12
    with pytest.raises(ModelFileError):
        fastgd.load(path)


@pytest.mark.parametrize("members", ["as saved", "with preambles agreeing"])
def test_a_header_declaring_a_huge_model_is_refused_before_anything_is_allocated(saved, members):
    """2**40 + 2**20 parameters (16 TiB of Adam state) declared by a file of a few KB."""
    path, _, _ = saved

    def edit(header, arrays):
        n = 2**40 + 2**20
        header.update(sizes=[2**20, 2**20], activations=["identity"], dropout=[], loss="mse", object_labels=False)
        header["arrays"].update(params={"shape": [n], "dtype": "<f8"}, state={"shape": [2, n], "dtype": "<f8"})
        del header["arrays"]["classes"], arrays["classes.npy"]
        if members != "as saved":
            for name, declared in header["arrays"].items():
                arrays[f"{name}.npy"] = preamble(declared["shape"], declared["dtype"]) + bytes(64)

    rewritten(path, edit)
    assert path.stat().st_size < 8192
    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError, match="params: the (file holds shape|archive's size of it)"):
            fastgd.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


# ---------------------------------------------------------------- one rule for non-finite optimizer state
OVERFLOWING = [fastgd.Adam(lr=0.01), fastgd.Adam(lr=0.01, amsgrad=True), fastgd.AdamW(lr=0.01),
               fastgd.RMSprop(lr=0.01, centered=True), fastgd.Adagrad(lr=0.01), fastgd.SGD(lr=1e-3, momentum=0.9)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_optimizer_state_that_stops_being_finite_is_divergence(backend):
    X, y = make_problem("identity", n=40, n_out=1, seed=4, dtype=np.float32)
    net = fastgd.MLP([5, 4, 1], output="identity", backend=backend, dtype="float32", random_state=0)
    net.fit(X, y, epochs=1, optimizer=fastgd.Adagrad(lr=0.01))
    before, state = net.params.copy(), net.training.state.copy()
    net.training.state[0, 3] = np.inf  # an accumulator that overflowed: its weight would silently stop moving
    with pytest.raises(fastgd.TrainingDiverged, match="optimizer state"):
        net.fit(X, y, epochs=2)
    np.testing.assert_array_equal(net.params, before)
    assert np.isinf(net.training.state[0, 3]) and np.isfinite(np.delete(net.training.state, 3)).all()
    net.training.state[...] = state


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(backend=st.sampled_from(BACKENDS), optimizer=st.sampled_from(OVERFLOWING),
       dtype=st.sampled_from(["float32", "float64"]), exponent=st.integers(0, 300), epochs=st.integers(1, 3))
def test_every_file_save_writes_loads(tmp_path, backend, optimizer, dtype, exponent, epochs):
    """Targets up to the dtype's largest, forcing gradients, moments and accumulators to overflow."""
    X, y = make_problem("identity", n=24, n_out=1, seed=exponent, dtype=dtype)
    y = (y * 10.0 ** min(exponent, np.log10(np.finfo(dtype).max) - 1)).astype(dtype)
    net = fastgd.MLP([5, 3, 1], output="identity", backend=backend, dtype=dtype, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net.fit(X, y, epochs=epochs, batch_size=8, optimizer=optimizer, on_divergence="warn", train_metrics=False)
    net.save(tmp_path / "m.npz")
    loaded = fastgd.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.params, net.params)
    np.testing.assert_array_equal(loaded.training.state, net.training.state)


def test_save_refuses_what_load_would_refuse(tmp_path):
    net, _ = fitted()
    net.training.state[1, 0] = np.nan
    with pytest.raises(ValueError, match="state: contains NaN or infinity"):
        net.save(tmp_path / "m.npz")
    net.classes_ = np.array([2, 0, 1])
    net.training.state[1, 0] = 0
    with pytest.raises(ValueError, match="classes_: labels must be sorted and unique"):
        net.save(tmp_path / "m.npz")
    assert not os.listdir(tmp_path)


# ---------------------------------------------------------------- each model owns its generator
def test_load_leaves_numpy_global_generator_alone(saved):
    path, _, _ = saved
    np.random.seed(5)
    before = np.random.get_state()[1].copy(), np.random.get_state()[2]
    fastgd.load(path)
    after = np.random.get_state()
    np.testing.assert_array_equal(after[1], before[0])
    assert after[2] == before[1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_loaded_copies_resume_identically_whatever_else_runs(tmp_path, backend):
    net, X = fitted(backend)
    path = tmp_path / "m.npz"
    net.save(path)
    y = net.predict(X)
    first = fastgd.load(path)
    np.random.rand(1000)  # the user's own random numbers in between
    other, _ = fitted(optimizer=fastgd.SGD(lr=0.1))
    other.save(tmp_path / "other.npz")
    fastgd.load(tmp_path / "other.npz").fit(X, y, epochs=2, batch_size=4)
    second = fastgd.load(path)
    for model in (first, second, net):
        model.fit(X, y, epochs=3, batch_size=4)
    np.testing.assert_array_equal(first.params, net.params)
    np.testing.assert_array_equal(second.params, net.params)


def test_a_model_without_a_seed_owns_a_generator_that_numpy_seed_reproduces():
    X, y = make_problem("softmax", n=40, seed=3)
    models = []
    for _ in range(2):
        np.random.seed(11)
        models.append(fastgd.MLP([5, 6, 3]))
    state = np.random.get_state()[1].copy()
    for model in models:
        assert model.training.rng is not np.random.mtrand._rand
        model.fit(X, y, epochs=2, batch_size=4)
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # training drew nothing from np.random
    np.testing.assert_array_equal(models[0].params, models[1].params)


# ---------------------------------------------------------------- labels and hyper-parameters
@pytest.mark.parametrize("labels", [[10, 20, 30], ["ant", "bee", "cat"], [1.5, 2.5, 3.5], [b"a", b"b", b"c"]])
def test_object_and_bytes_labels_round_trip_faithfully(tmp_path, labels):
    X, index = make_problem("softmax", n=40, seed=3)
    y = np.array(labels, dtype=object if not isinstance(labels[0], bytes) else None)[index]
    net = fastgd.MLP([5, 6, 3], random_state=0)
    net.fit(X, y, epochs=2)
    net.save(tmp_path / "m.npz")
    loaded = fastgd.load(tmp_path / "m.npz")
    assert loaded.classes_.dtype == net.classes_.dtype
    assert [type(v) for v in loaded.classes_] == [type(v) for v in net.classes_]
    np.testing.assert_array_equal(loaded.predict(X), net.predict(X))
    assert loaded.evaluate(X, y) == net.evaluate(X, y)


@pytest.mark.parametrize("labels, message", [([1, 2.5, 3], "all numbers of one type; got float, int"),
                                             ([False, 2, 3], "one type"),
                                             ([(1,), (2,), (3,)], "labels")])
def test_labels_a_file_cannot_hold_are_refused_at_fit(labels, message):
    X, index = make_problem("softmax", n=40, seed=3)
    y = np.empty(3, dtype=object)
    y[:] = labels
    net = fastgd.MLP([5, 6, 3], random_state=0)
    with pytest.raises((TypeError, ValueError), match=message):
        net.fit(X, y[index], epochs=1)
    assert net.classes_ is None


def test_numpy_numbers_as_hyper_parameters_save(tmp_path):
    optimizer = fastgd.SGD(lr=np.float32(0.1), momentum=np.float64(0.5))
    net, _ = fitted(optimizer=optimizer)
    net.save(tmp_path / "m.npz")
    assert fastgd.load(tmp_path / "m.npz").optimizer == optimizer


# ---------------------------------------------------------------- files on disk
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_saved_files_take_their_mode_from_the_umask(tmp_path, umask):
    net, _ = fitted()
    old = os.umask(umask)
    try:
        net.save(tmp_path / "m.npz")
    finally:
        os.umask(old)
    assert (tmp_path / "m.npz").stat().st_mode & 0o777 == 0o666 & ~umask


def test_saving_through_a_symlink_replaces_its_target(saved, tmp_path):
    path, net, X = saved
    link = tmp_path / "link.npz"
    link.symlink_to(path)
    other, _ = fitted(optimizer=fastgd.SGD(lr=0.5))
    other.save(link)
    assert link.is_symlink()
    np.testing.assert_array_equal(fastgd.load(path).params, other.params)


@pytest.mark.parametrize("fault", [OSError("disk full"), KeyboardInterrupt()])
def test_a_save_that_fails_leaves_the_old_file_whole_and_no_temporary_file(saved, monkeypatch, fault):
    path, net, X = saved
    before = path.read_bytes()

    def fail(file, **arrays):
        file.write(b"PK\x03\x04 half an archive")
        raise fault

    monkeypatch.setattr(fastgd.persistence.np, "savez", fail)
    with pytest.raises(type(fault)):
        fitted(optimizer=fastgd.SGD(lr=0.5))[0].save(path)
    assert os.listdir(path.parent) == ["m.npz"]
    assert path.read_bytes() == before
    monkeypatch.undo()
    np.testing.assert_array_equal(fastgd.load(path).predict_proba(X), net.predict_proba(X))


KILLED_SAVE = """
import os, signal, sys
import numpy as np
import fastgd, fastgd.persistence

def killed(file, **arrays):
    file.write(b"PK\\x03\\x04 half an archive")
    file.flush()
    os.kill(os.getpid(), signal.SIGKILL)

fastgd.persistence.np.savez = killed
fastgd.MLP([3, 2], output="sigmoid", random_state=0).save(sys.argv[1])
"""


def test_temporary_files_of_a_killed_save_are_swept_by_the_next_save(saved):
    path, net, _ = saved
    done = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(path)], capture_output=True)
    assert done.returncode == -signal.SIGKILL
    left = [name for name in os.listdir(path.parent) if name != "m.npz"]
    assert len(left) == 1 and left[0].startswith(".fastgd-"), left
    in_progress = path.parent / f".fastgd-{os.getpid()}-0123abcd.tmp"  # this process's own: alive, kept
    in_progress.write_bytes(b"")
    net.save(path.parent / "n.npz")
    assert sorted(os.listdir(path.parent)) == sorted(["m.npz", "n.npz", in_progress.name])


def test_a_fifo_or_device_is_refused_without_waiting(tmp_path):
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    errors = []
    reader = threading.Thread(target=lambda: errors.append(pytest.raises(ModelFileError, fastgd.load, fifo)),
                              daemon=True)
    reader.start()
    reader.join(timeout=20)
    assert not reader.is_alive(), "load waited on a FIFO"
    assert "not a regular file" in str(errors[0].value)
    with pytest.raises(ModelFileError, match="not a regular file"):
        fastgd.load(os.devnull)
    net, _ = fitted()
    with pytest.raises(FileExistsError, match="not a regular file"):
        net.save(fifo)
    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        net.save(tmp_path)


def test_a_folder_is_refused_by_its_path(tmp_path):
    with pytest.raises(ModelFileError, match="is not a regular file") as error:
        fastgd.load(tmp_path)
    assert str(tmp_path) in str(error.value)


def test_errors_name_the_path_given_and_never_suggest_pickle(tmp_path):
    net, _ = fitted()
    missing = tmp_path / "missing" / "m.npz"
    with pytest.raises(FileNotFoundError) as error:
        net.save(missing)
    assert error.value.filename == str(missing) and ".fastgd" not in str(error.value)
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    np.save(tmp_path / "array.npy", np.zeros(3))
    for path in (text, tmp_path / "array.npy", missing):
        with pytest.raises(ModelFileError) as error:
            fastgd.load(path)
        assert str(path) in str(error.value) and "pickle" not in str(error.value)


# ---------------------------------------------------------------- the history after faults
@pytest.mark.parametrize("fault", [KeyboardInterrupt, MemoryError])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_fault_in_the_metrics_leaves_model_and_history_at_the_same_epoch(backend, fault, monkeypatch):
    X, y = make_problem("softmax", n=40, seed=3)
    reference = fastgd.MLP([5, 6, 3], backend=backend, random_state=0)
    reference.fit(X, y, epochs=1, batch_size=8)
    net = fastgd.MLP([5, 6, 3], backend=backend, random_state=0)
    calls = []
    evaluate = fastgd.training.loss_and_accuracy

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the metrics of the second epoch
            raise fault
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(fastgd.training, "loss_and_accuracy", interrupted)
    with pytest.raises(fault):
        net.fit(X, y, epochs=3, batch_size=8)
    assert net.history_.epoch == [0]
    assert net.training.step == reference.training.step
    np.testing.assert_array_equal(net.params, reference.params)


def test_a_first_epoch_that_diverges_leaves_a_history_with_its_keys():
    X, y = make_problem("softmax", n=40, seed=3)
    net = fastgd.MLP([5, 6, 3], random_state=0)
    with pytest.raises(fastgd.TrainingDiverged) as error:
        net.fit(X * 1e200, y, epochs=2, validation_data=(X, y))
    assert error.value.history.history == {key: [] for key in ("loss", "train_loss", "train_accuracy", "val_loss",
                                                               "val_accuracy", "epoch_time")}


def test_a_diverging_estimator_raises_scikit_learns_error_and_keeps_its_weights():
    X, y = make_problem("identity", n=40, n_out=1, seed=3)
    est = fastgd.MLPRegressor(hidden_layer_sizes=(4,), solver="sgd", random_state=0)
    est.partial_fit(X, y.ravel())
    est.model_.params[0] = 1e300
    before = est.model_.params.copy()
    with pytest.raises(ValueError, match=r"^Solver produced non-finite parameter weights\. .* \(Iteration 1 diverged; "
                                         "the model keeps the weights of iteration 0") as raised:
        est.partial_fit(X, y.ravel())
    assert isinstance(raised.value, fastgd.TrainingDiverged)
    np.testing.assert_array_equal(est.model_.params, before)
