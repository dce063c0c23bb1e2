"""Training tools: callbacks, progress, learning-rate finder, diagnosis, plots and demos."""

import os
import re
import subprocess
import sys
import time
import types
import warnings
from pathlib import Path

import matplotlib

import numpy as np
import pytest

import fastgd
from conftest import BACKENDS, make_problem
from fastgd import demos, plots
from fastgd.__main__ import main
from figures import assert_says_what_it_shows, described

matplotlib.use("Agg")


def stub_model(optimizer=fastgd.SGD()):
    training = fastgd.TrainingState(optimizer, 3, np.float64, np.random.RandomState(0))
    return types.SimpleNamespace(params=np.zeros(3), stop_training=False, training=training)


class Record:
    """A callback keeping a copy of the model's weights after every epoch."""

    def __init__(self, net):
        self.net, self.params = net, []

    def on_epoch_end(self, epoch, logs):
        self.params.append(self.net.params.copy())


def drive(callback, model, values, key="val_loss"):
    """Feed a scripted history to a callback as fit would; params record the epoch number."""
    callback.model = model
    callback.on_train_begin()
    for epoch, value in enumerate(values):
        model.params[...] = epoch
        callback.on_epoch_end(epoch, {key: value})
        if model.stop_training:
            break
    callback.on_train_end()
    return epoch


# ---------------------------------------------------------------- callbacks
@pytest.mark.parametrize("patience, min_delta, stop, best", [(2, 0.0, 5, 3), (3, 0.0, 6, 3), (5, 0.0, None, 7),
                                                                (1, 0.05, 2, 1)])
def test_early_stopping_on_a_scripted_history(patience, min_delta, stop, best):
    values = [1.0, 0.8, 0.9, 0.7, 0.75, 0.74, 0.72, 0.69]
    callback = fastgd.EarlyStopping(patience=patience, min_delta=min_delta)
    model = stub_model()
    last = drive(callback, model, values)
    assert callback.stopped_epoch == stop and last == (stop if stop is not None else len(values) - 1)
    assert callback.best_epoch == best
    np.testing.assert_array_equal(model.params, np.full(3, best))  # the best epoch's weights, exactly


def test_early_stopping_watches_accuracy_upwards():
    callback = fastgd.EarlyStopping(monitor="val_accuracy", patience=0)
    model = stub_model()
    assert drive(callback, model, [0.5, 0.7, 0.6], key="val_accuracy") == 2
    np.testing.assert_array_equal(model.params, np.full(3, 1))


def test_early_stopping_in_a_real_fit_restores_the_best_epoch():
    X, y = make_problem("softmax", n=40, seed=0)
    Xv, yv = make_problem("softmax", n=40, seed=1)
    net = fastgd.MLP([5, 64, 3], random_state=0)
    record = Record(net)
    stopper = fastgd.EarlyStopping(patience=3)
    history = net.fit(X, y, epochs=300, batch_size=8, optimizer=fastgd.SGD(lr=0.2), validation_data=(Xv, yv),
                      callbacks=[record, stopper])
    assert len(history.epoch) == stopper.best_epoch + 4 < 300  # overfits a tiny set: stops early
    np.testing.assert_array_equal(net.params, record.params[stopper.best_epoch])


def test_reduce_lr_on_plateau_lowers_the_rate_down_to_its_floor():
    model = stub_model(fastgd.SGD(lr=0.1, momentum=0.9))
    callback = fastgd.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_lr=0.03)
    callback.model = model
    callback.on_train_begin()
    rates = []
    for epoch, value in enumerate([1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]):
        callback.on_epoch_end(epoch, {"loss": value})
        rates.append(model.training.learning_rates(1)[0])
    np.testing.assert_allclose(rates, [0.1, 0.1, 0.05, 0.03, 0.03, 0.03, 0.03, 0.03])


def test_reduce_lr_on_plateau_reaches_the_compiled_loop():
    X, y = make_problem("softmax", n=20)
    net = fastgd.MLP([5, 4, 3], random_state=0)
    optimizer = fastgd.SGD(lr=0.1)
    net.fit(X, y, epochs=1, optimizer=optimizer)
    net.training.lr_scale = 0.0  # as if reduced to nothing: the next epoch must not move the weights
    before = net.params.copy()
    net.fit(X, y, epochs=1)
    np.testing.assert_array_equal(net.params, before)
    # The scale is the model's, not the optimizer's: another model given the same spec starts at full rate.
    other = fastgd.MLP([5, 4, 3], random_state=0)
    start = other.params.copy()
    other.fit(X, y, epochs=1, optimizer=optimizer)
    assert other.training.lr_scale == 1.0 and not np.array_equal(other.params, start)


def test_model_checkpoint_keeps_the_best_model(tmp_path):
    X, y = make_problem("softmax", n=40, seed=0)
    Xv, yv = make_problem("softmax", n=40, seed=1)
    net = fastgd.MLP([5, 64, 3], random_state=0)
    record = Record(net)
    checkpoint = fastgd.ModelCheckpoint(tmp_path / "best.npz")
    net.fit(X, y, epochs=40, batch_size=8, optimizer=fastgd.SGD(lr=0.2), validation_data=(Xv, yv),
            callbacks=[record, checkpoint])
    assert 0 < checkpoint.best_epoch < 39
    np.testing.assert_array_equal(fastgd.load(tmp_path / "best.npz").params, record.params[checkpoint.best_epoch])


def test_a_plain_object_callback_can_stop_training():
    class StopAtThree:
        def on_epoch_end(self, epoch, logs):
            if epoch == 2:
                self.model.stop_training = True

    net = fastgd.MLP([5, 4, 3], random_state=0)
    history = net.fit(*make_problem("softmax"), epochs=10, callbacks=[StopAtThree()])
    assert history.epoch == [0, 1, 2]


def test_progress_display(capsys):
    X, y = make_problem("softmax")
    net = fastgd.MLP([5, 4, 3], random_state=0)
    net.fit(X, y, epochs=3, verbose=2)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[0].startswith("Epoch 1/3 | loss ") and "train_accuracy" in lines[2]
    net.fit(X, y, epochs=300, verbose=1, validation_data=(X, y))
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert last.startswith("300/300 |") and len(last) <= 80, last
    assert re.search(r", loss \d\.\d+ acc \d\.\d{3} val_loss \d\.\d+ val_acc \d\.\d{3}$", last), last
    with pytest.raises(ValueError, match="^verbose:"):
        net.fit(X, y, verbose=3)


# ---------------------------------------------------------------- learning-rate finder
def test_lr_find_leaves_the_model_as_it_was(textbook_data):
    X, _, y, _ = textbook_data
    net = fastgd.MLP([10, 64, 32, 3], random_state=42)
    net.fit(X, y, epochs=1, batch_size=64, optimizer=fastgd.SGD(lr=0.05, momentum=0.9))
    training = net.training
    params, state, rng, optimizer = net.params.copy(), training.state.copy(), training.rng.get_state()[1].copy(), \
        net.optimizer
    result = fastgd.lr_find(net, X, y)
    assert len(result.lrs) > 10
    np.testing.assert_array_equal(net.params, params)
    np.testing.assert_array_equal(training.state, state)
    np.testing.assert_array_equal(training.rng.get_state()[1], rng)
    assert net.optimizer is optimizer and training.lr_scale == 1.0 and training.step == 1500 // 64 + 1


def test_lr_find_suggests_a_rate_where_the_loss_falls(textbook_data):
    X, _, y, _ = textbook_data
    net = fastgd.MLP([10, 64, 32, 3], random_state=42)
    result = fastgd.lr_find(net, X, y, end=100.0)
    assert len(result.lrs) < 100  # the ramp stopped once the loss blew up
    lowest = int(np.argmin(result.losses))
    at = int(np.searchsorted(result.lrs, result.suggestion))
    assert result.lrs[at] == result.suggestion and 0 < at < lowest
    assert result.losses[at] < result.losses[0] and result.losses[at + 1] < result.losses[at - 1]
    # The suggested rate trains better than the ramp's ends.
    losses = {}
    for lr in (result.lrs[0], result.suggestion, result.lrs[-1]):
        trial = fastgd.MLP([10, 64, 32, 3], random_state=42)
        trial.fit(X, y, epochs=3, batch_size=32, optimizer=fastgd.SGD(lr=float(lr)), train_metrics=False)
        losses[lr] = trial.evaluate(X, y)[0]
    assert losses[result.suggestion] < min(losses[result.lrs[0]], losses[result.lrs[-1]])


def test_lr_find_checks_its_arguments():
    net = fastgd.MLP([5, 4, 3], random_state=0)
    X, y = make_problem("softmax")
    with pytest.raises(ValueError, match="^end:"):
        fastgd.lr_find(net, X, y, start=1.0, end=0.1)
    net.fit(X, y, optimizer=fastgd.BacktrackingLineSearch(), epochs=1)
    with pytest.raises(ValueError, match="^net: its optimizer is a line search"):
        fastgd.lr_find(net, X, y)


# ---------------------------------------------------------------- diagnosis
def curves(train, val=None, accuracy=None):
    logs = {"loss": list(train), "train_loss": list(train)}
    if val is not None:
        logs["val_loss"] = list(val)
    if accuracy is not None:
        logs["train_accuracy"] = list(accuracy)
    return logs


EPOCHS = np.arange(30)


@pytest.mark.parametrize("logs, state", [
    (curves(np.r_[np.linspace(1, 0.5, 20), np.linspace(0.6, 3, 10)]), "diverging"),
    (curves(np.r_[1.0, 0.8, np.nan]), "diverging"),
    (curves(1 / (1 + EPOCHS), 0.5 + 0.01 * (EPOCHS - 10) ** 2 / 10), "overfitting"),
    (curves(0.9 + 0.1 * np.exp(-EPOCHS), accuracy=np.full(30, 0.55)), "underfitting"),
    (curves(0.05 + np.exp(-EPOCHS), 0.08 + np.exp(-EPOCHS), accuracy=np.full(30, 0.98)), "converged"),
    (curves(1 / (1 + 0.1 * EPOCHS), 1.1 / (1 + 0.1 * EPOCHS), accuracy=np.linspace(0.5, 0.9, 30)), "improving"),
    (curves(np.r_[np.linspace(3, 1.3, 10), 18.3, 4.1, 1.8, 1.5, 1.2]), "oscillating"),
    (curves(np.r_[np.linspace(2, 1.3, 10), 1.6, 1.25, 1.55, 1.3, 1.5], accuracy=np.full(15, 0.5)), "oscillating"),
    (curves(np.r_[np.geomspace(2, 1e-9, 25), 2e-9, 1e-9, 3e-9, 1e-9, 2e-9]), "converged"),  # noise near 0
])
def test_diagnose_names_each_state(logs, state):
    diagnosis = fastgd.diagnose(logs)
    assert diagnosis.state == state, diagnosis
    if state == "overfitting":
        assert diagnosis.best_epoch == 10 and "after 11 epochs (best_epoch=10)" in diagnosis.message
    if state == "oscillating":
        assert re.search(r"^the loss swings between epochs \(over the last 5 epochs its rises add up to \d+% of its "
                         r"lowest value\): lower the learning rate", diagnosis.message), diagnosis


def test_diagnose_reads_a_real_history():
    history = fastgd.MLP([5, 4, 3], random_state=0).fit(*make_problem("softmax"), epochs=8, optimizer=fastgd.SGD(0.1))
    assert history.history["train_loss"][-1] < 0.95 * history.history["train_loss"][-6]
    assert fastgd.diagnose(history).state == "improving"
    with pytest.raises(ValueError, match="^history: needs a loss for at least 1 epoch"):
        fastgd.diagnose({"loss": []})
    assert fastgd.diagnose({"loss": [1.0]}).message == "one epoch is too few to judge: train more epochs (epochs=...)"


def test_diagnose_says_more_epochs_will_not_help_once_the_validation_loss_stalls():
    logs = curves(1 / (1 + EPOCHS[:16]), np.r_[np.linspace(1, 0.5, 11), 0.51, 0.505, 0.52, 0.51, 0.515])
    diagnosis = fastgd.diagnose(logs)
    assert diagnosis == fastgd.diagnosis.Diagnosis("converged", (
        "the validation loss is lowest after 11 epochs (best_epoch=10) and has not fallen since, while the training "
        "loss falls: more epochs will not help; add data or l2 to go lower"), 10)
    logs["val_loss"][-1] = 0.499  # a new low: still improving
    assert fastgd.diagnose(logs).state == "improving"


def test_diagnose_does_not_say_train_longer_after_early_stopping(textbook_data):
    X_train, X_test, y_train, y_test = textbook_data
    net = fastgd.MLP([10, 64, 32, 3], random_state=0)
    history = net.fit(X_train, y_train, epochs=200, batch_size=32, optimizer=fastgd.SGD(lr=0.05),
                      validation_data=(X_test, y_test), callbacks=[fastgd.EarlyStopping(patience=5)])
    assert len(history.history["loss"]) < 200
    diagnosis = fastgd.diagnose(history)
    assert diagnosis.state in ("overfitting", "converged") and "longer" not in diagnosis.message, diagnosis


@pytest.mark.parametrize("backend", BACKENDS)
def test_diagnose_says_one_full_batch_epoch_is_one_step(backend):
    X, y = make_problem("softmax")
    net = fastgd.MLP([5, 4, 3], backend=backend, random_state=0)
    with pytest.warns(UserWarning, match=r"^fit with its defaults takes a single gradient step \(one epoch of one full "
                                         r"batch\): pass epochs=\.\.\. \(and batch_size=\.\.\.\) to train the model$"):
        diagnosis = fastgd.diagnose(net.fit(X, y))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asked for: no warning
        net.fit(X, y, epochs=1), net.fit(X, y, batch_size=8), net.fit(X[:1], y[:1])
    assert diagnosis.state == "improving" and diagnosis.message == (
        "one epoch of one full batch is one gradient step: train more epochs (epochs=...) or pass batch_size=...")
    history = net.fit(X, y, epochs=6)
    assert history.params == {"epochs": 6, "batch_size": None, "steps": 1}
    assert fastgd.diagnose(history).message.endswith("or pass batch_size=... (each full-batch epoch is one gradient "
                                                     "step)")
    assert fastgd.diagnose(net.fit(X, y, batch_size=8)).message.startswith("one epoch is too few to judge")


@pytest.mark.parametrize("backend", BACKENDS)
def test_diagnose_says_to_lower_a_learning_rate_that_makes_the_loss_swing(backend, textbook_data):
    X, _, y, _ = textbook_data
    net = fastgd.MLP([10, 3], backend=backend, random_state=0)
    diagnosis = fastgd.diagnose(net.fit(X, y, epochs=30, batch_size=64, optimizer=fastgd.SGD(5.0)))
    assert diagnosis.state in ("oscillating", "diverging") and "lower the learning rate" in diagnosis.message


@pytest.mark.parametrize("backend", BACKENDS)
def test_diagnose_says_to_scale_inputs_far_from_unit_scale(backend):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X, y = X[:500] * 100, y[:500]  # pixels of 0..1600: the network stalls at chance
    history = fastgd.MLP([64, 32, 10], backend=backend, random_state=0).fit(
        X, y, epochs=10, batch_size=50, optimizer=fastgd.SGD(0.01))
    assert history.history["train_accuracy"][-1] < 0.2
    assert fastgd.diagnose(history).message.endswith("a larger network, a larger learning rate or less l2")
    diagnosis = fastgd.diagnose(history, X=X)
    assert diagnosis.state == "underfitting" and re.fullmatch(
        r"the loss has stopped falling while still high: scale the inputs \(e.g. sklearn.preprocessing.StandardScaler; "
        r"a column's root mean square is 1.29e\+03, far from 1\)", diagnosis.message), diagnosis
    assert "scale the inputs" in fastgd.diagnose(history, X=X / 1e5).message  # too small, too
    assert "scale the inputs" not in fastgd.diagnose(history, X=X / 1600).message
    import scipy.sparse

    assert fastgd.diagnose(history, X=scipy.sparse.csr_array(X)).message == diagnosis.message


def test_diagnose_calls_an_all_nan_history_diverging():
    diagnosis = fastgd.diagnose({"loss": [np.nan, np.nan, np.nan], "val_loss": [np.nan] * 3})
    assert diagnosis.state == "diverging" and diagnosis.best_epoch == 0


# ---------------------------------------------------------------- plots
def png_ok(path):
    data = path.read_bytes()
    return data.startswith(b"\x89PNG") and len(data) > 2000


def test_every_plot_renders_a_png(tmp_path):
    X, y = make_problem("softmax", n_in=2, n=60)
    net = fastgd.MLP([2, 8, 3], random_state=0)
    history = net.fit(X, y, epochs=5, validation_data=(X, y))
    runs = {"a": history, "b": net.fit(X, y, epochs=5)}
    result = fastgd.lr_find(net, X, y, steps=30, batch_size=8)

    def bowl(p):
        return p[0] ** 2 + 10 * p[1] ** 2

    path = fastgd.minimize(bowl, lambda p: np.array([2 * p[0], 20 * p[1]]), [1.0, 1.0], fastgd.SGD(0.05), 20)
    figures = {
        "history": lambda f: plots.plot_history(history, f),
        "boundary": lambda f: plots.plot_decision_boundary(net, X, y, f),
        "lr_find": lambda f: plots.plot_lr_find(result, f),
        "trajectory": lambda f: plots.plot_trajectories(bowl, {"sgd": path}, f),
        "runs": lambda f: plots.plot_runs(runs, "loss", f),
    }
    for name, draw in figures.items():
        figure = draw(tmp_path / f"{name}.png")
        assert figure.axes and png_ok(tmp_path / f"{name}.png"), name


def test_several_series_differ_in_line_and_marker_and_each_is_drawn_over_the_ones_before():
    """Runs that coincide (batch 8 and 32 on the textbook data; Nesterov's path along SGD's) stay
    visible: no two series share a line style and marker, and thinner ones lie on top."""
    history = {"loss": [1.0, 0.5, 0.25]}

    def bowl(p):
        return p[0] ** 2 + 10 * p[1] ** 2

    path = fastgd.minimize(bowl, lambda p: np.array([2 * p[0], 20 * p[1]]), [1.0, 1.0], fastgd.SGD(0.05), 20)
    for figure, count in ((plots.plot_runs({f"batch {i}": history for i in range(5)}, "loss"), 5),
                          (plots.plot_trajectories(bowl, {name: path for name in ("SGD", "momentum", "Nesterov")}), 3)):
        lines = figure.axes[0].get_lines()[:count]
        assert len({(line.get_linestyle(), line.get_marker()) for line in lines}) == count
        assert all(a.get_zorder() < b.get_zorder() and a.get_linewidth() >= b.get_linewidth()
                   for a, b in zip(lines, lines[1:]))


def test_plots_name_the_missing_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match="fastgd's plots need matplotlib: pip install matplotlib"):
        plots.plot_runs({}, "loss")


# ---------------------------------------------------------------- demos
def drawn(monkeypatch):
    """The figures the plots draw while it runs, by file name, as ``figures.described`` tells them."""
    figures = {}

    def recording(plot):
        def draw(*args, **kwargs):
            figure = plot(*args, **kwargs)
            path = next(a for a in (*args, *kwargs.values()) if isinstance(a, Path))
            figures[path.name] = described(figure)
            return figure
        return draw

    for name in ("plot_history", "plot_runs", "plot_decision_boundary", "plot_trajectories"):
        monkeypatch.setattr(plots, name, recording(getattr(plots, name)))
    return figures


def test_every_demo_figure_says_what_it_shows(tmp_path, capsys, monkeypatch):
    figures = drawn(monkeypatch)
    for name in demos.DEMOS:
        main(["demo", name, "--quick", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert all(png_ok(tmp_path / name) for name in figures) and len(figures) == 7
    assert "accuracy 100%" in out and all(f"\n{size:>6} |" in out for size in (1, 8, 32, 128, "full"))
    for name, axes in figures.items():
        assert_says_what_it_shows(name, axes)
    (loss, accuracy), = [figures["textbook_curves.png"]]
    assert loss[:3] == ("loss: training and validation", "epoch", "loss")
    assert loss[4] == ["training loss", "validation loss"] and accuracy[4] == ["training accuracy",
                                                                             "validation accuracy"]
    for run in ("fixed", "line"):
        assert re.fullmatch(rf"two moons, full batch, {run}.* \(accuracy \d+\.\d%\)",
                            figures[f"moons_{run}_boundary.png"][0][0])
    assert figures["xor_boundary.png"][0][0] == "XOR, a 2-8-1 tanh network (accuracy 100.0%)"
    assert figures["moons_loss.png"][0][4] == ["fixed step 0.1", "line search"]
    momentum, = figures["momentum_trajectories.png"]
    assert momentum[0] == "40 steps on x² + 100 y²"
    assert momentum[4] == ["SGD", "momentum 0.9", "Nesterov 0.9", "start", "minimum"]
    assert [n for label, n in momentum[3] if label.startswith(("SGD", "momentum", "Nesterov"))] == [41, 41, 41]
    batches, = figures["batch_size_val_loss.png"]
    assert batches[2] == "validation loss" and batches[4] == [f"batch {s}" for s in (1, 8, 32, 128, "full")]
    assert {n for _, n in batches[3]} == {5}  # every run drawn over its 5 epochs


def test_demo_without_a_name_lists_them_in_whole_plain_sentences_and_says_how_to_run_one(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    main(["demo"])
    out = capsys.readouterr().out
    listing, how = out.strip().split("\n\n")
    assert how == "Run one: python -m fastgd demo NAME [--out DIR] [--quick]"
    entries = re.split(r"\n(?=\s*[\w-]+  )", listing)
    assert [entry.split()[0] for entry in entries] == list(demos.DEMOS)
    assert all(entry.endswith(".") for entry in entries) and "``" not in out
    assert max(map(len, out.splitlines())) <= 80


# ---------------------------------------------------------------- compiling ahead, and saying so
def test_a_slow_first_call_says_it_is_compiling_and_a_fast_one_says_nothing(capsys, monkeypatch):
    numba_kernels = pytest.importorskip("fastgd.kernels._numba")
    monkeypatch.setattr(numba_kernels, "NOTICE_AFTER", 0.05)
    monkeypatch.setattr(numba_kernels, "_noticed", set())
    slow = numba_kernels._announced(0)(lambda a: time.sleep(0.5))
    slow(np.zeros(1, np.float32))
    assert "compiling the Numba kernels for float32" in capsys.readouterr().err
    slow(np.zeros(1, np.float32))  # compiled now: no timer, no word
    fast = numba_kernels._announced(0)(lambda a: None)
    fast(np.zeros(1))
    time.sleep(0.2)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("backend", BACKENDS)
def test_warmup_runs_every_kernel_of_a_backend_for_both_dtypes(backend, capsys):
    main(["warmup", "--backend", backend])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [f"{backend} float64", f"{backend} float32"]
    assert all(re.fullmatch(r".*: ready in \d+\.\d s", line) for line in lines)


def test_a_demo_without_matplotlib_says_no_figures_were_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # as if matplotlib were not installed
    main(["demo", "xor", "--quick", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "(figure skipped: fastgd's plots need matplotlib: pip install matplotlib)" in out
    assert out.rstrip().endswith("no figures written: they need matplotlib (pip install matplotlib)")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("unusable", ["a file", "under a file", "unwritable"])
def test_a_demo_given_an_unusable_folder_is_a_usage_error_before_it_runs(tmp_path, unusable):
    file = tmp_path / "notes.txt"
    file.write_text("")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    out = {"a file": file, "under a file": file / "figures",
           "unwritable": "/sys" if os.geteuid() == 0 else locked}[unusable]  # root writes anywhere but sysfs
    done = subprocess.run([sys.executable, "-m", "fastgd", "demo", "textbook", "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == "", done.stdout
    assert f"python -m fastgd demo: error: argument --out: cannot write figures into '{out}'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (file / "figures").exists()


def test_a_demo_names_the_figures_it_wrote(tmp_path, capsys):
    main(["demo", "xor", "--quick", "--out", str(tmp_path)])
    assert capsys.readouterr().out.rstrip().endswith(f"figures in {tmp_path.resolve()}: xor_boundary.png")
