"""The course's demonstrations, one command each: ``python -m fastgd demo NAME``.

Each demo prints what it found and writes its figures (PNG) into ``out``;
``quick=True`` runs a shortened version (for tests).
"""

import errno
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.datasets import make_moons

from . import plots
from .datasets import textbook as textbook_data
from .functions import minimize
from .network import MLP
from .optimizers import SGD, BacktrackingLineSearch


def _draw(plot, *args):
    """Make and save a figure; without matplotlib, say so and go on."""
    try:
        plot(*args)
    except ImportError as error:
        print(f"(figure skipped: {error})")


def textbook(out: Path, quick: bool = False):
    """The textbook run: [10, 64, 32, 3] ReLU/softmax, SGD(0.05), batch 64, l2 1e-4, 80 epochs."""
    epochs = 8 if quick else 80
    X_train, X_test, y_train, y_test = textbook_data()
    net = MLP([10, 64, 32, 3], hidden="relu", output="softmax", random_state=42)
    logs = net.fit(X_train, y_train, epochs=epochs, batch_size=64, optimizer=SGD(lr=0.05), l2=1e-4,
                   validation_data=(X_test, y_test)).history
    print(f"backend: {net.backend_}")
    for epoch in sorted({1, *range(8, epochs + 1, 8)}):
        i = epoch - 1
        print(f"Epoch {epoch}/{epochs} | loss {logs['train_loss'][i]:.4f} acc {logs['train_accuracy'][i]:.3f} "
              f"val_loss {logs['val_loss'][i]:.4f} val_acc {logs['val_accuracy'][i]:.3f}")
    _draw(plots.plot_history, logs, out / "textbook_curves.png")


def xor(out: Path, quick: bool = False):
    """A 2-8-1 tanh/sigmoid network learns XOR; its decision boundary is saved."""
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
    y = np.array([0, 1, 1, 0])
    net = MLP([2, 8, 1], hidden="tanh", output="sigmoid", random_state=0)
    logs = net.fit(X, y, epochs=500 if quick else 2000, optimizer=SGD(lr=0.5, momentum=0.9)).history
    print(f"XOR: accuracy {logs['train_accuracy'][-1]:.0%} after {len(logs['loss'])} epochs, "
          f"loss {logs['train_loss'][-1]:.4f}; predictions {net.predict(X).tolist()}")
    _draw(plots.plot_decision_boundary, net, X, y, out / "xor_boundary.png", 200, "XOR, a 2-8-1 tanh network")


def moons(out: Path, quick: bool = False):
    """Full-batch training on two moons: a fixed step of 0.1 against a backtracking line search."""
    X, y = make_moons(300, noise=0.2, random_state=0)
    epochs = 60 if quick else 300
    runs = {}
    for name, optimizer in [("fixed step 0.1", SGD(lr=0.1)), ("line search", BacktrackingLineSearch(alpha0=10.0))]:
        net = MLP([2, 16, 1], hidden="sigmoid", output="sigmoid", random_state=0)
        runs[name] = net.fit(X, y, epochs=epochs, optimizer=optimizer)
        logs = runs[name].history
        steps = f", mean step {np.mean(logs['step_size']):.3g}" if "step_size" in logs else ""
        print(f"{name}: accuracy {logs['train_accuracy'][-1]:.3f}, loss {logs['train_loss'][-1]:.4f}{steps}")
        _draw(plots.plot_decision_boundary, net, X, y, out / f"moons_{name.split()[0]}_boundary.png", 200,
              f"two moons, full batch, {name}")
    _draw(plots.plot_runs, runs, "train_loss", out / "moons_loss.png", "two moons: fixed step against line search")


def momentum(out: Path, quick: bool = False):
    """SGD, momentum and Nesterov on the elongated bowl ``x**2 + 100 y**2``."""

    def bowl(p):
        return p[0] ** 2 + 100 * p[1] ** 2

    def gradient(p):
        return np.array([2 * p[0], 200 * p[1]])

    steps = 40 if quick else 100
    runs = {name: minimize(bowl, gradient, [-1.0, 0.5], optimizer, steps) for name, optimizer in [
        ("SGD", SGD(lr=0.009)), ("momentum 0.9", SGD(lr=0.005, momentum=0.9)),
        ("Nesterov 0.9", SGD(lr=0.005, momentum=0.9, nesterov=True))]}
    for name, run in runs.items():
        print(f"{name:>13}: f after {steps} steps {run.values[-1]:.3e}")
    _draw(plots.plot_trajectories, bowl, runs, out / "momentum_trajectories.png", None, 200, (0.0, 0.0),
          f"{steps} steps on x² + 100 y²")


def batch_size(out: Path, quick: bool = False):
    """Batch sizes 1, 8, 32, 128 and full batch on the textbook data, each with SGD(0.05) for the
    same epochs: validation loss curves in the figure, time per epoch and final validation
    accuracy printed."""
    X_train, X_test, y_train, y_test = textbook_data()
    epochs = 5 if quick else 40
    runs = {}
    print(f"{'batch':>6} | {'ms/epoch':>9} | {'val acc':>7} | {'loss':>7}")
    for size in (1, 8, 32, 128, None):
        net = MLP([10, 64, 32, 3], random_state=42)
        start = time.perf_counter()
        runs[size or "full"] = history = net.fit(X_train, y_train, epochs=epochs, batch_size=size,
                                                 optimizer=SGD(lr=0.05), validation_data=(X_test, y_test))
        logs = history.history
        print(f"{size or 'full':>6} | {np.median(logs['epoch_time']) * 1e3:9.2f} | {logs['val_accuracy'][-1]:7.3f} "
              f"| {logs['train_loss'][-1]:7.4f}   ({time.perf_counter() - start:.1f} s in all)")
    _draw(plots.plot_runs, {f"batch {k}": v for k, v in runs.items()}, "val_loss", out / "batch_size_val_loss.png",
          f"validation loss by batch size, SGD(0.05), {epochs} epochs")


DEMOS = {"textbook": textbook, "xor": xor, "moons": moons, "momentum": momentum, "batch-size": batch_size}


def figure_folder(out) -> Path:
    """The folder ``out``, made (with its parents) if missing, once a file can be written in it;
    else the ``OSError`` that says why not."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(out))
    out.mkdir(parents=True, exist_ok=True)
    tempfile.TemporaryFile(dir=out).close()
    return out


def run(name: str, out="fastgd-demo", quick: bool = False):
    """Run demo ``name``, writing its figures into the folder ``out``."""
    if name not in DEMOS:
        raise ValueError(f"name: unknown demo {name!r}; choose one of {', '.join(DEMOS)}")
    out = figure_folder(out)
    before = {path: path.stat().st_mtime_ns for path in out.glob("*.png")}
    DEMOS[name](out, quick)
    written = sorted(path.name for path in out.glob("*.png") if before.get(path) != path.stat().st_mtime_ns)
    if written:
        print(f"figures in {out.resolve()}: {', '.join(written)}")
    else:
        print("no figures written: they need matplotlib (pip install matplotlib)")
