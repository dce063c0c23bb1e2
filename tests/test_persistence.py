"""Saving and loading: exact round trips, atomic writes, and hostile files refused."""

import json
import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastgd
import fastgd.persistence
from conftest import BACKENDS, make_problem
from fastgd import ModelFileError


def trained(backend="auto", dtype="float64", optimizer=None, output="softmax", **fit):
    X, y = make_problem(output, n=60, seed=1, dtype=dtype)
    net = fastgd.MLP([5, 8, 3], output=output, backend=backend, dtype=dtype, random_state=0)
    net.fit(X, y, epochs=3, batch_size=16, optimizer=optimizer or fastgd.Adam(lr=0.01, amsgrad=True), l2=1e-3, **fit)
    return net, X, y


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("optimizer", [
    fastgd.Adam(lr=0.01, amsgrad=True),
    fastgd.SGD(lr=fastgd.schedules.CosineAnnealing(0.1, total_steps=50, warmup_steps=5), momentum=0.9),
    fastgd.RMSprop(lr=0.01, momentum=0.5, centered=True),
    fastgd.BacktrackingLineSearch(alpha0=2.0),
], ids=["adam", "sgd-cosine", "rmsprop", "line-search"])
def test_round_trip_predicts_and_resumes_exactly(tmp_path, backend, dtype, optimizer):
    net, X, y = trained(backend, dtype, optimizer)
    path = tmp_path / "model.npz"
    net.save(path)
    loaded = fastgd.load(path)
    assert loaded.backend_ == net.backend_ and loaded.dtype == net.dtype and repr(loaded.optimizer) == repr(optimizer)
    np.testing.assert_array_equal(loaded.predict_proba(X), net.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), net.predict(X))
    assert loaded.evaluate(X, y) == net.evaluate(X, y)
    # Training on continues as if never saved: same optimizer state, step count and shuffling.
    histories = [model.fit(X, y, epochs=2, batch_size=16, l2=1e-3).history for model in (net, loaded)]
    np.testing.assert_array_equal(loaded.params, net.params)
    assert histories[0]["loss"] == histories[1]["loss"]


@pytest.mark.parametrize("output, labels", [("identity", None), ("softmax", np.array(["ant", "bee", "cat"])),
                                            ("sigmoid", None)])
def test_round_trip_regression_and_label_kinds(tmp_path, output, labels):
    X, y = make_problem(output, n=30, seed=2)
    if labels is not None:
        y = labels[y]
    net = fastgd.MLP([5, 4, 3], output=output, random_state=0)
    net.fit(X, y, epochs=2)
    net.save(tmp_path / "m.npz")
    loaded = fastgd.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.predict(X), net.predict(X))


def test_an_unfitted_model_round_trips(tmp_path):
    net = fastgd.MLP([3, 2], output="sigmoid", random_state=0)
    net.save(tmp_path / "m.npz")
    loaded = fastgd.load(tmp_path / "m.npz")
    assert loaded.classes_ is None
    np.testing.assert_array_equal(loaded.params, net.params)


def test_a_callable_learning_rate_is_saved_as_its_current_rate(tmp_path):
    net, X, y = trained(optimizer=fastgd.SGD(lr=lambda step: 0.1 / (1 + step)))
    with pytest.warns(UserWarning, match="lr: a Python callable"):
        net.save(tmp_path / "m.npz")
    loaded = fastgd.load(tmp_path / "m.npz")
    assert loaded.optimizer.lr == pytest.approx(0.1 / (1 + net.training.step))


def test_an_unavailable_backend_falls_back_with_a_warning(tmp_path, monkeypatch):
    net, X, _ = trained("numpy")
    net.save(tmp_path / "m.npz")
    header, arrays = members(tmp_path / "m.npz")
    write(tmp_path / "m.npz", {**header, "backend": "numba"}, arrays)  # as if saved where numba was installed
    for name in ("numba", "cython"):
        monkeypatch.setitem(fastgd.kernels._loaded, name, "ImportError: not installed here")
    with pytest.warns(UserWarning, match="backend: the model was saved with 'numba'"):
        loaded = fastgd.load(tmp_path / "m.npz")
    assert loaded.backend_ == "numpy"
    np.testing.assert_array_equal(loaded.predict_proba(X), net.predict_proba(X))


# ---------------------------------------------------------------- damaged and hostile files
def members(path):
    with np.load(path) as npz:
        arrays = {name: npz[name] for name in npz.files}
    return json.loads(arrays.pop("header").tobytes()), arrays


def write(path, header, arrays):
    with open(path, "wb") as file:
        np.savez(file, header=np.frombuffer(json.dumps(header).encode(), np.uint8), **arrays)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "m.npz"
    trained()[0].save(path)
    return path


def edited(tmp_path, saved, edit):
    header, arrays = members(saved)
    edit(header, arrays)
    path = tmp_path / "edited.npz"
    write(path, header, arrays)
    return path


@pytest.mark.parametrize("edit, reason", [
    (lambda h, a: h.update(version=6), "unsupported format version 6"),
    (lambda h, a: h.update(dropout=[1.0]), "dropout: expected one rate in"),
    (lambda h, a: h.update(dropout=[0.1, 0.1]), "dropout: expected one rate in"),
    (lambda h, a: h.update(dropout_seed=-1), "dropout_seed: expected an integer"),
    (lambda h, a: h.update(dropout_seed=2**64), "dropout_seed: expected an integer"),
    (lambda h, a: h.update(l2_per_row="yes"), "l2_per_row: expected true or false"),
    (lambda h, a: h.update(version=True), "unsupported format version True"),
    (lambda h, a: h.update(format="something else"), "not a fastgd model"),
    (lambda h, a: h.update(sizes=[5, 9, 3]), "params: the header declares"),
    (lambda h, a: h.update(activations=["relu", "swish"]), "activations:"),
    (lambda h, a: h.update(activations=["elu(alpha=nan)", "softmax"]), "activations:"),
    (lambda h, a: h.update(activations=["leaky_relu(alpha=1)", "softmax"]), "activations:"),
    (lambda h, a: h.update(activations=["relu", "gelu"]), "loss: 'cross_entropy' cannot follow a gelu output"),
    (lambda h, a: h.update(loss="hinge"), "loss: unknown loss"),
    (lambda h, a: h.update(loss="mse"), "loss: 'mse' cannot follow a softmax output"),
    (lambda h, a: h.update(dtype="float16"), "dtype:"),
    (lambda h, a: h.update(backend="cuda"), "backend: unknown backend"),
    (lambda h, a: h.update(l2=-1), "l2:"),
    (lambda h, a: h.update(step="7"), "step:"),
    (lambda h, a: h["optimizer"].update(name="os.system"), "optimizer: not a known"),
    (lambda h, a: h["optimizer"]["params"].update(beta1=1.5), "optimizer: beta1:"),
    (lambda h, a: h["optimizer"]["params"].update(lr={"schedule": "Evil", "params": {}}), "not a known schedule"),
    (lambda h, a: h["optimizer"]["params"].update(amsgrad=False), "state_slots: the optimizer keeps"),
    (lambda h, a: (h["optimizer"]["params"].update(amsgrad=False), h.pop("state_slots"), h.pop("dropout"),
                   h.pop("dropout_seed"), h.update(version=3)), "state: the header declares"),
    (lambda h, a: h.update(state_slots=["m", "v", "v_max"]), "state_slots: the optimizer keeps"),
    (lambda h, a: h.pop("rng"), "expected the fields"),
    (lambda h, a: a.update(params=a["params"][:-1]), "params: the file holds"),
    (lambda h, a: a.update(params=a["params"].astype(np.float32)), "params: the file holds"),
    (lambda h, a: a.update(params=a["rng_keys"], rng_keys=a["params"]), "the file holds"),
    (lambda h, a: a["params"].__setitem__(0, np.nan), "params: contains NaN"),
    (lambda h, a: a.update(extra=np.zeros(3)), "members:"),
    (lambda h, a: a.update(classes=np.array([1, "a", None], dtype=object)), "classes: the file holds"),
])
def test_a_bad_file_is_refused_with_its_reason(tmp_path, saved, edit, reason):
    with pytest.raises(ModelFileError, match=reason):
        fastgd.load(edited(tmp_path, saved, edit))


def test_a_version_3_file_loads_with_the_slots_its_optimizer_keeps(tmp_path, saved):
    def version_3(header, arrays):
        del header["state_slots"], header["dropout"], header["dropout_seed"]
        header["version"] = 3

    model, original = fastgd.load(edited(tmp_path, saved, version_3)), fastgd.load(saved)
    assert list(model.training.slots) == list(original.training.slots) == ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]
    assert np.array_equal(model.training.state, original.training.state)


def test_a_version_2_file_loads_with_l2_over_the_whole_batch(tmp_path, saved):
    def version_2(header, arrays):
        del header["l2_per_row"], header["state_slots"], header["dropout"], header["dropout_seed"]
        header["version"] = 2

    model = fastgd.load(edited(tmp_path, saved, version_2))
    assert model.training.l2_per_row is False and model.training.l2 == fastgd.load(saved).training.l2


def test_non_models_are_refused(tmp_path, saved):
    (tmp_path / "text.npz").write_text("hello")
    np.save(tmp_path / "array.npy", np.zeros(3))
    (tmp_path / "pickle.npz").write_bytes(pickle.dumps({"params": np.zeros(3)}))
    (tmp_path / "cut.npz").write_bytes(saved.read_bytes()[:200])
    for name in ("text.npz", "array.npy", "pickle.npz", "cut.npz", "missing.npz"):
        with pytest.raises(ModelFileError):
            fastgd.load(tmp_path / name)


MUTATIONS = st.one_of(
    st.tuples(st.just("flip"), st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=8)),
    st.tuples(st.just("cut"), st.integers(0, 10**6)),
    st.tuples(st.just("header"), st.sampled_from(["sizes", "activations", "loss", "dtype", "backend", "l2", "step",
                                                  "optimizer", "rng", "arrays", "version", "l2_per_row",
                                                  "state_slots"]),
              st.recursive(st.none() | st.booleans() | st.integers(-3, 10**12) | st.floats() | st.text(max_size=8),
                           lambda children: st.lists(children, max_size=4)
                           | st.dictionaries(st.text(max_size=8), children, max_size=4), max_leaves=10)),
    st.tuples(st.just("swap"), st.permutations(["params", "state", "rng_keys", "classes"])),
    st.tuples(st.just("reshape"), st.sampled_from(["params", "state", "rng_keys", "classes"])),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutation=MUTATIONS)
def test_mutated_files_load_or_raise_model_file_error(tmp_path, saved, mutation):
    kind = mutation[0]
    path = tmp_path / "mutated.npz"
    if kind in ("flip", "cut"):
        data = bytearray(saved.read_bytes())
        if kind == "flip":
            for position, mask in mutation[1]:
                data[position % len(data)] ^= mask
        else:
            data = data[: mutation[1] % len(data)]
        path.write_bytes(bytes(data))
    else:
        header, arrays = members(saved)
        if kind == "header":
            header[mutation[1]] = mutation[2]
        elif kind == "swap":
            arrays = dict(zip(mutation[1], (arrays[name] for name in ["params", "state", "rng_keys", "classes"])))
        else:
            arrays[mutation[1]] = arrays[mutation[1]].reshape(-1, 1)
        write(path, header, arrays)
    try:
        loaded = fastgd.load(path)
    except ModelFileError:
        return
    # Loaded: then it is a whole model, finite, with a consistent layout.
    assert np.all(np.isfinite(loaded.params)) and len(loaded.params) == len(trained()[0].params)


def test_a_model_whose_learning_rate_scale_is_zero_saves_and_loads(tmp_path):
    net, X, y = trained()
    net.training.lr_scale = 0.0  # as a training state allows: the next epochs leave the weights alone
    net.save(tmp_path / "m.npz")
    loaded = fastgd.load(tmp_path / "m.npz")
    assert loaded.training.lr_scale == 0.0
    loaded.fit(X, y, epochs=1, batch_size=16, l2=1e-3)
    np.testing.assert_array_equal(loaded.params, net.params)
